"""check_sampler: does an integrator sample exp(-U) on M? Tested against an exact law."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch

from geodyn.manifolds import Manifold

from .chains import ChainDesign, IntegratorFactory, run_chains
from .problems import DT, Potential, Reference

if TYPE_CHECKING:
    from typing_extensions import Unpack  # typing.Unpack from Python 3.11

__all__ = ["SamplerLawViolation", "check_sampler"]


class SamplerLawViolation(AssertionError):
    """The sampled law differs from the reference beyond the family's significance level."""


def check_sampler(
    integrator_factory: IntegratorFactory,
    manifold: Manifold,
    potential: Potential | None,
    reference: Reference,
    *,
    h: float,
    alpha: float = 1e-3,
    raise_on_failure: bool = True,
    **design: Unpack[ChainDesign],
) -> dict[str, Any]:
    r"""Run many chains in parallel and test their law against ``reference``.

    The chains start from exact draws of the reference (or ``random_point``), run
    ``burn`` discarded steps and ``steps`` recorded ones. The observables' means over
    chains x time are compared with their exact values by Hotelling's T^2 with the
    chains' own covariance (each chain's time average is one independent draw, so
    the autocorrelation inside a chain is accounted for exactly); the null is
    rejected when the p-value is below ``alpha``. Nothing else sets the tolerance:
    with more chains or steps the test sees smaller biases. A step size h > 0 has an
    O(h^p) bias of its own, which the test detects once the sample is large enough
    (that is :func:`geodyn.testing.weak_order`'s measurement).

    Args:
        integrator_factory: (params, h) -> a torch optimizer sampling exp(-U) at tau = 1.
        manifold: the constraint set.
        potential: U (``None``: U = 0).
        reference: the exact law (observables and their expectations).
        h: step size.
        design: the sample, as in :func:`run_chains` (its defaults): ``chains`` C,
            ``steps``, ``burn``, ``thin`` and ``seed`` of the starting points.
        alpha: significance level of this one test (divide a family's level by the
            number of tests, Bonferroni, to control its family-wise error).
        raise_on_failure: raise :class:`SamplerLawViolation` when rejected.

    Returns:
        A report: ``law``, ``chains``, ``samples``, per observable ``observables``
        (name, exact, mean, se, z, tau_int in steps, ess), ``statistic`` (T^2),
        ``dof``, ``p_value``, ``alpha``, ``max_abs_z``, ``passed``.

    Raises:
        SamplerLawViolation: the p-value is below ``alpha`` (with the report's numbers).
    """
    if not 0 < alpha < 1:
        raise ValueError(f"alpha must be in (0, 1), got {alpha!r}")
    run = run_chains(integrator_factory, manifold, potential, reference, h=h, **design)
    chains, steps, burn = run.series.shape[0], run.steps, run.burn
    est = run.estimate()
    exact = torch.tensor(reference.expected, dtype=DT)
    t2, p_value, dof = est.hotelling(exact)
    z = est.z(exact)
    rows = [
        {
            "name": name,
            "exact": float(exact[j]),
            "mean": float(est.mean[j]),
            "se": float(est.se[j]),
            "z": float(z[j]),
            "tau_int": float(est.tau[j]),
            "ess": float(est.ess[j]),
        }
        for j, name in enumerate(reference.names)
    ]
    report: dict[str, Any] = {
        "law": reference.law,
        "manifold": repr(manifold),
        "h": h,
        "chains": chains,
        "steps": steps,
        "burn": burn,
        "samples": est.samples,
        "observables": rows,
        "statistic": t2,
        "dof": dof,
        "p_value": p_value,
        "alpha": alpha,
        "max_abs_z": float(z.abs().max()),
        "burn_over_tau": burn / float(est.tau.max()),
        "passed": p_value >= alpha,
    }
    if raise_on_failure and not report["passed"]:
        worst = max(rows, key=lambda r: abs(float(r["z"])))  # type: ignore[arg-type]
        raise SamplerLawViolation(
            f"the sampled law on {manifold!r} is not {reference.law!r}: p-value {p_value:.2e} < "
            f"alpha {alpha:.1e} (T^2 {t2:.1f} on {dof} observables, {chains} chains x {steps} "
            f"steps at h={h:g}); worst observable {worst['name']}: {worst['mean']:.5f} +- "
            f"{worst['se']:.5f} vs exact {worst['exact']:.5f} (z {worst['z']:.1f}, tau_int "
            f"{worst['tau_int']:.1f} steps)"
        )
    return report
