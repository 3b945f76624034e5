r"""weak_order: the bias of a sampler's configurational averages against h, and its order.

At each step size h, C chains (one batched parameter) started from exact draws run
``burn_time / h`` discarded and ``time / h`` recorded steps; the bias of an
observable's average is b(h) = mean - exact with the standard error of the chains'
time averages (independent chains: the autocorrelation inside a chain is accounted
for). The model b(h) = c h^p is fitted by weighted least squares (errors absolute);
where the fit is worse than its errors (chi^2 / dof > 1) the covariance is inflated
by that ratio (Birge ratio), so a model that does not hold widens the interval
instead of hiding. The interval on p is p_hat +- z se(p), z the normal quantile at
``level``.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from scipy import optimize, stats

from .chains import IntegratorFactory, run_chains
from .problems import Problem

__all__ = ["excludes", "fit_order", "weak_order"]


def fit_order(
    step_sizes: np.ndarray, bias: np.ndarray, se: np.ndarray, level: float = 0.99
) -> dict[str, Any]:
    """Fit b = c h^p to biases with standard errors; the order p with its interval."""
    h, b, s = (np.asarray(a, dtype=float) for a in (step_sizes, bias, se))
    if len(h) < 3:
        raise ValueError("step_sizes needs at least 3 values to fit an order and check the fit")
    sign = 1.0 if b[np.argmax(np.abs(b))] >= 0 else -1.0
    y = np.log(np.clip(sign * b, 1e-300, None))
    with np.errstate(all="ignore"):
        start = np.polyfit(np.log(h), y, 1, w=np.abs(b) / s)

    def model(hh: np.ndarray, log_c: float, p: float) -> np.ndarray:
        return sign * np.exp(log_c + p * np.log(hh))

    try:
        if not np.all(np.isfinite(start)):
            raise ValueError("no finite starting fit")
        p0 = (float(np.clip(start[1], -699, 699)), float(np.clip(start[0], 0.1, 7.9)))
        popt, pcov = optimize.curve_fit(
            model, h, b,
            p0=p0,
            sigma=s,
            absolute_sigma=True, bounds=([-700.0, 0.0], [700.0, 8.0]), maxfev=10_000,
        )
    except (RuntimeError, ValueError):  # no fit (a bias of zero): an unbounded interval
        return {"order": math.nan, "order_se": math.inf, "interval": (-math.inf, math.inf),
                "constant": math.nan, "chi2": math.nan, "dof": len(h) - 2,
                "fit_p_value": math.nan, "level": level}
    stuck = abs(popt[1] - p0[1]) < 1e-9  # the optimiser never moved: a flat objective
    if stuck or not np.all(np.isfinite(pcov)) or not 1e-6 < popt[1] < 8.0 - 1e-6:
        pcov = np.full((2, 2), np.inf)  # no curvature information, or the fit sits on a bound
    resid = (b - model(h, *popt)) / s
    chi2, dof = float(resid @ resid), len(h) - 2
    birge = max(1.0, chi2 / dof)
    se_p = math.sqrt(max(float(pcov[1, 1]), 0.0) * birge)
    z = float(stats.norm.ppf(0.5 + level / 2))
    return {
        "order": float(popt[1]),
        "order_se": se_p,
        "interval": (float(popt[1] - z * se_p), float(popt[1] + z * se_p)),
        "constant": float(sign * math.exp(popt[0])),
        "chi2": chi2,
        "dof": dof,
        "fit_p_value": float(stats.chi2.sf(chi2, dof)),
        "level": level,
    }


def weak_order(
    integrator_factory: IntegratorFactory,
    problem: Problem,
    step_sizes: tuple[float, ...] | list[float],
    *,
    observable: int | str = 0,
    chains: int = 10000,
    time: float = 8.0,
    burn_time: float = 2.0,
    level: float = 0.99,
    seed: int = 0,
) -> dict[str, Any]:
    r"""Measure the bias of a configurational average at each h and fit its order.

    Args:
        integrator_factory: (params, h) -> a torch optimizer sampling exp(-U) (tau = 1).
        problem: the reference problem (its reference must have an exact sampler or
            ``burn_time`` must cover the relaxation).
        step_sizes: at least three h values.
        observable: index or name of the reference's observable whose bias is measured.
        chains: C chains per step size.
        time, burn_time: recorded and discarded time (steps = time / h).
        level: confidence level of the order's interval.
        seed: seed of the starting points.

    Returns:
        ``problem``, ``observable``, ``exact``, ``step_sizes``, ``bias``, ``se``,
        ``resolved`` (|bias| > 3 se at every h), and the fit of :func:`fit_order`:
        ``order``, ``order_se``, ``interval``, ``constant``, ``chi2``, ``dof``,
        ``fit_p_value``, ``level``.
    """
    hs = sorted(float(h) for h in step_sizes)
    if len(hs) < 3 or hs[0] <= 0:
        raise ValueError(f"step_sizes must be at least 3 positive values, got {step_sizes!r}")
    ref = problem.reference
    if isinstance(observable, str):
        if observable not in ref.names:
            raise ValueError(f"observable must be one of {ref.names}, got {observable!r}")
        observable = ref.names.index(observable)
    if not 0 <= observable < len(ref.expected):
        raise ValueError(f"observable must index one of {ref.names}, got {observable!r}")
    exact = ref.expected[observable]
    bias, se, tau = [], [], []
    for i, h in enumerate(hs):  # independent starts per h: independent errors for the fit
        run = run_chains(
            integrator_factory, problem.manifold, problem.potential, ref,
            h=h, chains=chains, steps=max(1, round(time / h)), burn=round(burn_time / h),
            seed=seed + i,
        )
        est = run.estimate()
        bias.append(float(est.mean[observable]) - exact)
        se.append(float(est.se[observable]))
        tau.append(float(est.tau[observable]))
    fit = fit_order(np.array(hs), np.array(bias), np.array(se), level)
    return {
        "problem": problem.name,
        "observable": ref.names[observable],
        "exact": exact,
        "step_sizes": hs,
        "bias": bias,
        "se": se,
        "tau_int": tau,
        "resolved": all(abs(b) > 3 * s for b, s in zip(bias, se, strict=True)),
        **fit,
    }


def excludes(report: dict[str, Any], order: float) -> bool:
    """Whether the fitted interval excludes ``order``."""
    lo, hi = report["interval"]
    return not lo <= order <= hi

