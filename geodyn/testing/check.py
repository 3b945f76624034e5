"""check_manifold: every law, run with hypothesis on one manifold, shape and dtype."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from geodyn.manifolds import Manifold, default_atol

from .geometry import Tolerance, flat_points, inequality_rows, point_norms, point_size
from .laws import (
    LawViolation,
    law_equivariance,
    law_project,
    law_rattle,
    law_retraction,
    law_shake,
    law_tangent_projection,
)
from .strategies import (
    ambient_vectors,
    generators,
    perturbed,
    points,
    step_sizes,
    tangent_vectors,
)
from .symmetry import SYMMETRIES, random_action, symmetries_of

__all__ = ["LAWS", "check_manifold"]

LAWS: tuple[str, ...] = (
    "project",
    "proj_tangent",
    "retract",
    "shake",
    "rattle",
    "equivariance",
)
"""The law names, in the order :func:`check_manifold` runs them."""

PROJECT_RIVALS = 4
"""Random points of M that ``project(y)`` must be no farther from y than."""


def _example_strategies(
    manifold: Manifold,
    shape: tuple[int, ...],
    dtype: torch.dtype,
    symmetries: tuple[str, ...],
) -> dict[str, st.SearchStrategy[tuple[Any, ...]]]:
    """For each law, a strategy drawing the arguments of its check (after ``manifold``)."""
    kinds = ("random", "interior", "boundary") if manifold.is_inequality else ("random",)
    on_m = st.sampled_from(kinds).flatmap(lambda w: points(manifold, shape, dtype, where=w))
    ambient = ambient_vectors(shape, dtype)

    @st.composite
    def project_args(draw: st.DrawFn) -> tuple[Any, ...]:
        x = draw(on_m)
        y = draw(perturbed(manifold, x, 0.5))
        gen = draw(generators())
        others = manifold.random_point(PROJECT_RIVALS, *shape, dtype=dtype, generator=gen)
        return y, x, others

    @st.composite
    def shake_args(draw: st.DrawFn) -> tuple[Any, ...]:
        x = draw(on_m)
        v = draw(tangent_vectors(manifold, x, relative_norm=1.0))
        t = draw(step_sizes(-8, -3))
        rms = point_norms(manifold, x) / math.sqrt(max(point_size(manifold, shape), 1))
        g = draw(ambient) * (t / 4) * rms.reshape(*x.shape[: x.dim() - manifold.ndim],
                                                  *([1] * manifold.ndim))
        return x, x + t * v + g

    @st.composite
    def retract_args(draw: st.DrawFn) -> tuple[Any, ...]:
        x = draw(on_m)
        return x, draw(tangent_vectors(manifold, x, relative_norm=1.0)), draw(step_sizes(-5, -1))

    @st.composite
    def equivariance_args(draw: st.DrawFn) -> tuple[Any, ...]:
        x, y = draw(shake_args())
        v = draw(tangent_vectors(manifold, x, relative_norm=0.25))
        gen = draw(generators())
        actions = [(n, random_action(n, shape, dtype, gen)) for n in symmetries]
        return x, y, v, actions

    return {
        "project": project_args(),
        "proj_tangent": st.tuples(on_m, ambient, ambient),
        "retract": retract_args(),
        "shake": shake_args(),
        "rattle": st.tuples(on_m, ambient),
        "equivariance": equivariance_args(),
    }


_CHECKS: dict[str, Callable[..., dict[str, float]]] = {
    "project": law_project,
    "proj_tangent": law_tangent_projection,
    "retract": law_retraction,
    "shake": law_shake,
    "rattle": law_rattle,
    "equivariance": law_equivariance,
}


def _law_runner(
    law: str, manifold: Manifold, tol: Tolerance, report: dict[str, Any]
) -> Callable[[tuple[Any, ...]], None]:
    """The hypothesis test body of one law: run it, count the example, keep the worst numbers."""
    check = _CHECKS[law]
    worst: dict[str, float] = report["worst"]
    report["examples"][law] = 0

    def run(args: tuple[Any, ...]) -> None:
        report["examples"][law] += 1
        x = args[0]
        try:
            measured = check(manifold, *args, tol)
        except LawViolation:
            raise
        except Exception as exc:
            raise LawViolation(
                f"law '{law}' fails for {manifold!r} on shape {tuple(x.shape)} {x.dtype}: "
                f"{type(exc).__name__}: {exc}"
            ) from exc
        for key, value in measured.items():
            better = min if key.endswith("(min)") else max
            worst[key] = better(worst.get(key, value), value)
        if manifold.is_inequality and law == "proj_tangent":
            c = manifold.constraint(x).reshape(flat_points(manifold, x).shape[0], -1)
            active = inequality_rows(manifold, x) & (c >= -default_atol(x.dtype))
            on_boundary = active.any(dim=-1)
            report["points"]["boundary"] += int(on_boundary.sum())
            report["points"]["interior"] += int((~on_boundary).sum())

    return run


def check_manifold(
    manifold: Manifold,
    shape: tuple[int, ...],
    dtype: torch.dtype = torch.float64,
    *,
    max_examples: int | None = None,
    symmetries: tuple[str, ...] | None = None,
) -> dict[str, Any]:
    """Check every law on ``manifold`` for tensors of ``shape`` with hypothesis.

    Laws: ``project`` lands on M and is idempotent; ``proj_tangent`` is the
    orthogonal projector onto ker J(x), with J the autograd Jacobian of
    ``constraint`` (the tangent-cone projection for inequality sets);
    ``retract`` fixes x at 0, lands on M and is first-order (error rate
    measured over halving steps); ``shake`` lands on M along the normal space
    at x; ``rattle`` is tangent; the verbs commute with each declared symmetry.

    Args:
        manifold: a geodyn manifold.
        shape: the tensor shape to test, batch dimensions included.
        dtype: floating dtype (float64 is the reference).
        max_examples: examples per law; the active hypothesis profile's if ``None``.
        symmetries: names from :data:`geodyn.testing.SYMMETRIES` to check; the
            manifold's own ``symmetries`` attribute if ``None``.

    Returns:
        A report: ``examples`` (per law), ``worst`` (largest value of each measured
        quantity; for ``retract rate (min)`` the smallest), ``tolerance``, and,
        for inequality sets, ``points`` (how many interior and boundary points were seen).

    Raises:
        AssertionError: a law fails; the message names the law, the manifold, the
            shape, the dtype and the numbers.
    """
    shape = tuple(shape)
    manifold.check_shape(shape, "shape")
    names = symmetries_of(manifold) if symmetries is None else tuple(symmetries)
    unknown = [n for n in names if n not in SYMMETRIES]
    if unknown:
        raise ValueError(f"symmetries {unknown} are unknown; choose from {SYMMETRIES}")
    tol = Tolerance.of(dtype, point_size(manifold, shape))
    report: dict[str, Any] = {
        "manifold": repr(manifold),
        "shape": shape,
        "dtype": str(dtype),
        "tolerance": {"residual": tol.residual, "identity": tol.identity},
        "examples": {},
        "worst": {},
    }
    if manifold.is_inequality:
        report["points"] = {"interior": 0, "boundary": 0}
    config = settings(
        max_examples=max_examples if max_examples is not None else settings().max_examples,
        deadline=None,
        database=None,
        report_multiple_bugs=False,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )
    for law, strategy in _example_strategies(manifold, shape, dtype, names).items():
        if law == "equivariance" and not names:
            continue
        run = _law_runner(law, manifold, tol, report)
        config(given(args=strategy)(run))()
    return report
