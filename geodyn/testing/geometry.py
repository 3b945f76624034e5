r"""Reference geometry computed from ``manifold.constraint`` alone, by autograd.

For a point x with constraint c(x) in R^m the Jacobian J(x) in R^{m x n} spans
the normal space N_x M (its row space); the tangent space is its kernel, so

$$ P_x = I - J^\top (J J^\top)^{+} J. $$

The kit compares a manifold's own formulas against these references. Every
function is batched over the leading (batch) dimensions of ``x``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from geodyn.manifolds import Manifold, default_atol

__all__ = [
    "Tolerance",
    "constraint_jacobian",
    "flat_points",
    "normal_part",
    "point_norms",
    "point_residuals",
    "point_size",
]


@dataclass(frozen=True)
class Tolerance:
    """Bounds a law may not exceed, scaled with the dtype and the point size n.

    Attributes:
        residual: bound on |c| of a point that should lie on M, and on relative
            differences between results of constraint solves:
            ``default_atol(dtype) * sqrt(n)``.
        identity: relative bound on exact linear-algebra identities (idempotence,
            self-adjointness, J P v = 0): ``64 * eps(dtype) * sqrt(n)``.
    """

    residual: float
    identity: float

    @classmethod
    def of(cls, dtype: torch.dtype, size: int) -> Tolerance:
        """The tolerance for points of ``size`` entries stored in ``dtype``."""
        root = math.sqrt(max(size, 1))
        eps = torch.finfo(dtype).eps
        return cls(residual=default_atol(dtype) * root, identity=64 * eps * root)


def point_size(manifold: Manifold, shape: tuple[int, ...]) -> int:
    """Number of entries of one point (the trailing ``manifold.ndim`` dimensions)."""
    return math.prod(shape[len(shape) - manifold.ndim :])


def flat_points(manifold: Manifold, x: Tensor) -> Tensor:
    """``x`` reshaped to (B, n): one row per point (a complex point as its 2n real coordinates)."""
    n = point_size(manifold, tuple(x.shape))
    if x.is_complex():
        return torch.stack((x.real, x.imag), dim=-1).reshape(-1, 2 * n)
    return x.reshape(-1, n)


def point_norms(manifold: Manifold, x: Tensor) -> Tensor:
    """Euclidean norm of every point of ``x``, shape (B,)."""
    return flat_points(manifold, x).norm(dim=-1)


def point_residuals(manifold: Manifold, x: Tensor) -> Tensor:
    """max |c| over each point's constraints (violations only for inequality sets), shape (B,)."""
    c = manifold.constraint(x.detach())
    batch = math.prod(x.shape[: x.dim() - manifold.ndim])
    c = c.reshape(batch, -1)
    if manifold.is_inequality:
        c = torch.where(inequality_rows(manifold, x), c.clamp(min=0), c)
    if c.shape[-1] == 0:
        return c.new_zeros(batch)
    return c.abs().amax(dim=-1)


def inequality_rows(manifold: Manifold, x: Tensor) -> Tensor:
    """``manifold.inequality_mask(x)`` as (B, m): which constraints of each point are
    inequalities."""
    batch = math.prod(x.shape[: x.dim() - manifold.ndim])
    return manifold.inequality_mask(x.detach()).reshape(batch, -1)


def constraint_jacobian(
    manifold: Manifold, x: Tensor, active_atol: float | None = None
) -> Tensor:
    """J(x) of shape (B, m, n) by autograd.

    With ``active_atol`` given, rows of inactive inequality constraints are zero:
    c_i(x) <= 0 is active where c_i(x) >= -``active_atol``. Equality
    constraints are always active.
    """
    pt = x.shape[x.dim() - manifold.ndim :]
    n = math.prod(pt)
    xf = x.detach().reshape(-1, *pt).clone().requires_grad_(True)
    batch = xf.shape[0]
    with torch.enable_grad():
        c = manifold.constraint(xf).reshape(batch, -1)
        m = c.shape[-1]
        if m == 0:
            return x.new_zeros(batch, 0, n)
        seeds = torch.eye(m, dtype=c.dtype, device=c.device).unsqueeze(1).expand(m, batch, m)
        (rows,) = torch.autograd.grad(c, xf, seeds, is_grads_batched=True)
    if rows.is_complex():  # torch's gradient of a real c: dc/d(Re z) + i dc/d(Im z)
        rows, n = torch.stack((rows.real, rows.imag), dim=-1), 2 * n
    jac = rows.reshape(m, batch, n).transpose(0, 1)
    if manifold.is_inequality and active_atol is not None:
        equality = ~inequality_rows(manifold, x).reshape(c.shape)
        active = (c.detach() >= -active_atol) | equality
        jac = jac * active.unsqueeze(-1).to(jac.dtype)
    return jac


def normal_part(jac: Tensor, w: Tensor) -> Tensor:
    """Orthogonal projection of the rows of ``w`` (B, n) onto the row space of ``jac`` (B, m, n).

    The row space is taken from the SVD of J with the usual numerical-rank cut,
    so repeated or dependent constraints (X^T X - I has symmetric duplicates)
    are handled.
    """
    if jac.shape[-2] == 0:
        return torch.zeros_like(w)
    _, s, vh = torch.linalg.svd(jac, full_matrices=False)
    cut = s.amax(dim=-1, keepdim=True) * max(jac.shape[-2:]) * torch.finfo(jac.dtype).eps
    basis = vh * (s > cut).unsqueeze(-1).to(vh.dtype)
    coeff = (basis @ w.unsqueeze(-1)).squeeze(-1)
    return (basis.transpose(-1, -2) @ coeff.unsqueeze(-1)).squeeze(-1)
