r"""The laws every manifold obeys, each checked on one concrete (batched) example.

Each law takes tensors, raises :class:`LawViolation` (an ``AssertionError``)
naming the law, the manifold, the shape, the dtype and the numbers when it is
broken, and otherwise returns the worst measured value of each quantity it
checked (for the report of :func:`geodyn.testing.check_manifold`). Relative
errors are per point: |error| / |reference|.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor

from geodyn.manifolds import Manifold, default_atol

from .geometry import (
    Tolerance,
    constraint_jacobian,
    flat_points,
    inequality_rows,
    normal_part,
    point_norms,
    point_residuals,
)
from .symmetry import Action

__all__ = [
    "LawViolation",
    "law_equivariance",
    "law_project",
    "law_rattle",
    "law_retraction",
    "law_shake",
    "law_tangent_projection",
]

RATE_HALVINGS = 30
"""Number of times the retraction law halves the step while looking for the O(t^2) rate."""

RATE_FLOOR = 1024.0
"""Errors below RATE_FLOOR * eps * sqrt(n) * (|x| + t|v|) count as rounding in the rate law."""

MIN_RATE = 3.0
"""Smallest accepted error ratio e(t) / e(t/2): 4 for an O(t^2) error, 2 for an O(t) one."""


class LawViolation(AssertionError):
    """A manifold broke one of the laws."""


def _fail_if(bad: bool, law: str, manifold: Manifold, x: Tensor, detail: str) -> None:
    if bad:
        raise LawViolation(
            f"law '{law}' fails for {manifold!r} on shape {tuple(x.shape)} {x.dtype}: {detail}"
        )


def _relative(manifold: Manifold, error: Tensor, reference: Tensor) -> Tensor:
    """Per-point |error| / |reference| (0 where both vanish), shape (B,)."""
    den = point_norms(manifold, reference).clamp_min(torch.finfo(error.dtype).tiny)
    return point_norms(manifold, error) / den


def _check_normal(
    manifold: Manifold, x: Tensor, jac: Tensor, w: Tensor, scale: Tensor, tol: float,
    law: str, what: str,
) -> float:
    """The worst |w - N w| / scale, N the projection onto the row space of the constraint
    Jacobian J(x) (the normal space at x); ``law`` fails above ``tol``."""
    off = _worst((w - normal_part(jac, w)).norm(dim=-1) / scale)
    _fail_if(
        off > tol, law, manifold, x,
        f"{what} has a component {off:.3e} outside the row space of the constraint "
        f"Jacobian J(x) > {tol:.1e}",
    )
    return off


def _worst(values: Tensor) -> float:
    return float(values.max()) if values.numel() else 0.0


def law_project(
    manifold: Manifold, y: Tensor, x: Tensor, others: Tensor, tol: Tolerance
) -> dict[str, float]:
    r"""project lands on M, is idempotent, fixes M, and returns a point near y.

    ``y`` lies near the point ``x`` of M, and ``others`` holds K further points of M
    (shape ``(K, *y.shape)``). Every manifold: project(y) on M, project(project(y)) =
    project(y), project(x) = x, and |project(y) - y| <= min_k |w_k - y| (a projection
    is no farther than random points of M). Where ``manifold.project_is_nearest``:
    also |project(y) - y| <= |x - y| (x is a point of M) and the first-order
    condition at p = project(y): y - p lies in the row space of the constraint
    Jacobian at p (its active rows for an inequality set), the normal space.
    """
    p = manifold.project(y)
    res = _worst(point_residuals(manifold, p))
    _fail_if(
        res > tol.residual, "project lands on M", manifold, y,
        f"residual |c(project(y))| = {res:.3e} > {tol.residual:.1e}",
    )
    again = _worst(_relative(manifold, manifold.project(p) - p, p))
    _fail_if(
        again > tol.residual, "project is idempotent", manifold, y,
        f"|project(project(y)) - project(y)| / |project(y)| = {again:.3e} > {tol.residual:.1e}",
    )
    fixed = _worst(_relative(manifold, manifold.project(x) - x, x))
    _fail_if(
        fixed > tol.residual, "project fixes the points of M", manifold, x,
        f"|project(x) - x| / |x| = {fixed:.3e} > {tol.residual:.1e} for x on M",
    )
    # distances may exceed the reference by rounding and by the residual of a solve
    slack = tol.residual * (point_norms(manifold, y) + point_norms(manifold, p)).clamp_min(
        torch.finfo(y.dtype).tiny
    )
    dist = point_norms(manifold, p - y)
    nearest_other = point_norms(manifold, others - y.unsqueeze(0)).reshape(
        others.shape[0], -1
    ).amin(0)
    farther = _worst((dist - nearest_other - slack) / nearest_other.clamp_min(1e-300))
    _fail_if(
        farther > 0, "project is no farther than other points of M", manifold, y,
        f"|project(y) - y| exceeds the distance to one of {others.shape[0]} random points "
        f"of M by {farther:.3e} (relative)",
    )
    out = {"residual": res, "project idempotence": again, "project fixes M": fixed}
    if not manifold.project_is_nearest:
        return out
    beyond = _worst((dist - point_norms(manifold, x - y) - slack) / dist.clamp_min(1e-300))
    _fail_if(
        beyond > 0, "project is the nearest point", manifold, y,
        f"|project(y) - y| exceeds |x - y| for a point x of M by {beyond:.3e} (relative)",
    )
    # y - p in the row space of the (active) constraint Jacobian at p; the rounding of
    # p, a few eps |p|, shows up in the tangent part at that size
    jac = constraint_jacobian(manifold, p, default_atol(p.dtype))
    w = flat_points(manifold, y - p)
    scale = point_norms(manifold, y) + point_norms(manifold, p)
    tangential = _worst((w - normal_part(jac, w)).norm(dim=-1) / scale.clamp_min(1e-300))
    _fail_if(
        tangential > tol.residual, "project is the nearest point", manifold, y,
        f"y - project(y) has a tangent component {tangential:.3e} (relative to |y| + "
        f"|project(y)|) > {tol.residual:.1e}: not a stationary point of |. - y| on M",
    )
    return out | {"project first-order condition": tangential}


def law_tangent_projection(
    manifold: Manifold, x: Tensor, u: Tensor, v: Tensor, tol: Tolerance
) -> dict[str, float]:
    r"""proj_tangent is the orthogonal projector onto ker J(x) (the tangent cone for inequalities).

    Equality sets: P P u = P u, <P u, v> = <u, P v>, J P u = 0 and u - P u in the
    row space of J. Inequality sets (J holds the active constraints only): P P u = P u,
    J P u <= 0, u - P u in the row space of J with J (u - P u) >= 0, and the Moreau
    identity <u - P u, P u> = 0.
    """
    law = "proj_tangent"
    pu = manifold.proj_tangent(x, u)
    idem = _worst(_relative(manifold, manifold.proj_tangent(x, pu) - pu, u))
    _fail_if(
        idem > tol.identity, f"{law} is idempotent", manifold, x,
        f"|P(P u) - P u| / |u| = {idem:.3e} > {tol.identity:.1e}",
    )
    jac = constraint_jacobian(manifold, x, default_atol(x.dtype))
    uf, puf = flat_points(manifold, u), flat_points(manifold, pu)
    jscale = jac.flatten(-2).norm(dim=-1).clamp_min(torch.finfo(x.dtype).tiny) * uf.norm(dim=-1)
    jpu = (jac @ puf.unsqueeze(-1)).squeeze(-1)
    removed = uf - puf
    normal = _check_normal(
        manifold, x, jac, removed, uf.norm(dim=-1).clamp_min(torch.finfo(x.dtype).tiny),
        tol.identity, f"{law} removes only normal directions", "u - P u (relative to |u|)",
    )
    out = {"proj_tangent idempotence": idem, "proj_tangent normal space": normal}
    if manifold.is_inequality:
        # per constraint: an inequality row bounds J P u above by 0, an equality row kills it
        ineq = inequality_rows(manifold, x)
        outward = _worst(torch.where(ineq, jpu.clamp(min=0), jpu.abs()).norm(dim=-1) / jscale)
        _fail_if(
            outward > tol.identity, f"{law} lands in the tangent cone", manifold, x,
            f"active outward normal component J P u = {outward:.3e} (relative) > 0",
        )
        pushed = (-(jac @ removed.unsqueeze(-1)).squeeze(-1)).clamp(min=0)
        inward = _worst(torch.where(ineq, pushed, 0.0).norm(dim=-1) / jscale)
        moreau = _worst((removed * puf).sum(-1).abs() / uf.square().sum(-1).clamp_min(
            torch.finfo(x.dtype).tiny))
        _fail_if(
            max(inward, moreau) > tol.identity, f"{law} is the cone projection", manifold, x,
            f"removed part points inward by {inward:.3e} or <u - P u, P u> / |u|^2 = "
            f"{moreau:.3e} > {tol.identity:.1e}",
        )
        return out | {"proj_tangent cone": max(outward, inward, moreau)}
    kills = _worst(jpu.norm(dim=-1) / jscale)
    _fail_if(
        kills > tol.identity, f"{law} kills the constraint Jacobian", manifold, x,
        f"|J(x) P u| / (|J| |u|) = {kills:.3e} > {tol.identity:.1e}",
    )
    pv = flat_points(manifold, manifold.proj_tangent(x, v))
    vf = flat_points(manifold, v)
    gap = ((puf * vf).sum(-1) - (uf * pv).sum(-1)).abs()
    adj = _worst(gap / (uf.norm(dim=-1) * vf.norm(dim=-1)).clamp_min(torch.finfo(x.dtype).tiny))
    _fail_if(
        adj > tol.identity, f"{law} is self-adjoint", manifold, x,
        f"|<P u, v> - <u, P v>| / (|u| |v|) = {adj:.3e} > {tol.identity:.1e}",
    )
    return out | {"proj_tangent Jacobian": kills, "proj_tangent self-adjoint": adj}


def law_retraction(
    manifold: Manifold, x: Tensor, v: Tensor, step: float, tol: Tolerance
) -> dict[str, float]:
    r"""R_x(0) = x, R_x(t v) lies on M, and |R_x(t v) - (x + t v)| = O(t^2).

    The rate is read from the ladder t_k = step / 2^k, k = 0..``RATE_HALVINGS``,
    computed in float64 (the rate is a property of the formula, which float32
    rounding would hide at small t; a lower-precision x is first projected in
    float64 and v made tangent there): at the smallest pair of steps whose
    errors both stand above the rounding floor ``RATE_FLOOR`` eps sqrt(n)
    (|x| + t|v|), e(t_k) / e(t_{k+1}) must be at least ``MIN_RATE`` (an O(t^2)
    error shrinks to a quarter, an O(t) one to a half). Going down to the
    floor reaches the asymptotic regime even where the curvature is large
    (an Lp sphere with p < 2 near a coordinate plane). A point whose errors
    all sit below the floor has a locally affine retraction. For inequality
    sets, a point whose error falls below the floor at the smallest step is
    inside the set for small steps (R_x(tv) = x + tv there); larger steps may
    cross the boundary, where the error has a kink, so no rate is read.
    """
    law = "retract"
    zero = _worst(_relative(manifold, manifold.retract(x, torch.zeros_like(x)) - x, x))
    _fail_if(
        zero > tol.residual, f"{law}(x, 0) = x", manifold, x,
        f"|R_x(0) - x| / |x| = {zero:.3e} > {tol.residual:.1e}",
    )
    rx = manifold.retract(x, step * v)
    res = _worst(point_residuals(manifold, rx))
    _fail_if(
        res > tol.residual, f"{law} lands on M", manifold, x,
        f"residual |c(R_x(t v))| = {res:.3e} > {tol.residual:.1e} (t = {step:.3g})",
    )
    wide = torch.complex128 if x.is_complex() else torch.float64
    x64, v64 = x.to(wide), v.to(wide)
    if x.dtype != wide:
        x64 = manifold.project(x64)
        v64 = manifold.proj_tangent(x64, v64)
    k = RATE_HALVINGS + 1
    ts = step * 0.5 ** torch.arange(k, dtype=torch.float64)
    ts_b = ts.reshape(k, *([1] * x.dim()))
    xs = x64.unsqueeze(0).expand(k, *x.shape)
    err = point_norms(manifold, manifold.retract(xs, ts_b * v64) - (xs + ts_b * v64)).reshape(k, -1)
    eps = torch.finfo(torch.float64).eps * math.sqrt(flat_points(manifold, x).shape[-1])
    scale = point_norms(manifold, x64) + ts.unsqueeze(-1) * point_norms(manifold, v64)
    above = err > RATE_FLOOR * eps * scale
    if manifold.is_inequality:
        # a point whose error vanishes at small t is inside the set for those steps
        above = above & above[-1:]
    pairs = above[:-1] & above[1:]
    ratio = err[:-1] / err[1:].clamp_min(torch.finfo(torch.float64).tiny)
    last = (torch.arange(1, k, device=x.device).unsqueeze(-1) * pairs).argmax(dim=0, keepdim=True)
    rate = ratio.gather(0, last).squeeze(0)
    measured = pairs.any(dim=0)
    worst_rate = float(rate[measured].min()) if bool(measured.any()) else float("inf")
    if worst_rate < MIN_RATE:
        point = int(rate.masked_fill(~measured, float("inf")).argmin())
        errors = ", ".join(f"{e:.2e}" for e in err[:, point].tolist())
        _fail_if(
            True, f"{law} is first-order", manifold, x,
            f"the error |R_x(t v) - (x + t v)| shrinks only by {worst_rate:.3f} when t halves "
            f"(4 for O(t^2), 2 for O(t)); errors at t = {step:.3g} / 2^k: {errors}",
        )
    return {"residual": res, "retract(x, 0)": zero, "retract rate (min)": worst_rate}


def law_shake(manifold: Manifold, x: Tensor, y: Tensor, tol: Tolerance) -> dict[str, float]:
    """shake(x, y) lies on M and shake(x, y) - y lies in the normal space at x.

    The normal space is the row space of the full J(x). For inequality sets the
    correction must also point inward, J(x) (shake(x, y) - y) <= 0, and vanish
    where y already lies strictly inside.
    """
    law = "shake"
    s = manifold.shake(x, y)
    res = _worst(point_residuals(manifold, s))
    _fail_if(
        res > tol.residual, f"{law} lands on M", manifold, x,
        f"residual |c(shake(x, y))| = {res:.3e} > {tol.residual:.1e}",
    )
    jac = constraint_jacobian(manifold, x)
    w = flat_points(manifold, s - y)
    ynorm = point_norms(manifold, y).clamp_min(torch.finfo(x.dtype).tiny)
    off = _check_normal(
        manifold, x, jac, w, ynorm, tol.residual, f"{law} moves along the normal space at x",
        "shake(x, y) - y (relative to |y|)",
    )
    out = {"residual": res, "shake normal space": off}
    if manifold.is_inequality:
        jscale = jac.flatten(-2).norm(dim=-1).clamp_min(torch.finfo(x.dtype).tiny) * ynorm
        ineq = inequality_rows(manifold, x)
        jw = (jac @ w.unsqueeze(-1)).squeeze(-1)
        outward = _worst(torch.where(ineq, jw.clamp(min=0), 0.0).norm(dim=-1) / jscale)
        # a point all of whose constraints are inequalities, strictly inside: no correction
        cy = manifold.constraint(y).reshape(w.shape[0], -1)
        inside = (ineq & (cy < -default_atol(x.dtype))).all(-1)
        moved = _worst((w.norm(dim=-1) / ynorm)[inside])
        _fail_if(
            max(outward, moved) > tol.residual, f"{law} corrects inward only when needed",
            manifold, x,
            f"correction points outward by {outward:.3e} or moves a y inside the set by "
            f"{moved:.3e} (relative) > {tol.residual:.1e}",
        )
        out["shake inward"] = max(outward, moved)
    return out


def law_rattle(manifold: Manifold, x: Tensor, p: Tensor, tol: Tolerance) -> dict[str, float]:
    """rattle(x, p) is tangent: proj_tangent(x, rattle(x, p)) = rattle(x, p)."""
    r = manifold.rattle(x, p)
    err = _worst(_relative(manifold, manifold.proj_tangent(x, r) - r, p))
    _fail_if(
        err > tol.identity, "rattle is tangent", manifold, x,
        f"|P(rattle(x, p)) - rattle(x, p)| / |p| = {err:.3e} > {tol.identity:.1e}",
    )
    return {"rattle tangency": err}


def law_equivariance(
    manifold: Manifold,
    x: Tensor,
    y: Tensor,
    v: Tensor,
    actions: Sequence[tuple[str, Action]],
    tol: Tolerance,
) -> dict[str, float]:
    """project, proj_tangent, retract and shake commute with every declared symmetry g."""
    worst = 0.0
    for name, g in actions:
        checks = {
            "project": (manifold.project(g(y)), g(manifold.project(y)), y),
            "proj_tangent": (manifold.proj_tangent(g(x), g(v)), g(manifold.proj_tangent(x, v)), v),
            "retract": (manifold.retract(g(x), g(v)), g(manifold.retract(x, v)), x),
            "shake": (manifold.shake(g(x), g(y)), g(manifold.shake(x, y)), y),
        }
        for verb, (moved, expected, ref) in checks.items():
            err = _worst(_relative(manifold, moved - expected, ref))
            _fail_if(
                err > tol.residual, f"{verb} is equivariant under {name}", manifold, x,
                f"|{verb}(g .) - g {verb}(.)| / |.| = {err:.3e} > {tol.residual:.1e}",
            )
            worst = max(worst, err)
    return {"equivariance": worst}
