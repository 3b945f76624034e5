r"""Orthogonalisation by matrix products only: the polar factor and the matrix sign of an update.

Two different tools share the Newton-Schulz family of odd matrix polynomials
$X \leftarrow a X + b (X X^H) X + c (X X^H)^2 X$, which act on each singular value
as the scalar map $s \mapsto a s + b s^3 + c s^5$ and leave the singular vectors alone:

* :func:`polar_newton_schulz` runs the cubic $X \leftarrow X (3I - X^H X)/2$ to a residual
  tolerance on $|X^H X - I|$. Its fixed point is the polar factor $U V^H$ of $Y = U S V^H$,
  reached quadratically from near-orthogonal starts ($E' = -\tfrac34 E^2 + \tfrac14 E^3$
  for $E = X^H X - I$), so it is a retraction: ``Stiefel("newton-schulz")``.
* :func:`msign` applies a fixed number of steps of a chosen polynomial to $G / |G|_F$:
  the approximate orthogonalisation of an update used by Muon. Muon's quintic
  (3.4445, -4.7750, 2.0315) maps singular values of G / |G|_F in [0.01, 1] into
  [0.68, 1.14] after 5 steps (smaller ones above 2e-3 up to 1.20, and those below
  about 1.5e-3 stay under 0.68): fast, and good enough for a search direction, but
  its result is not orthonormal and it is never a retraction.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from ._tol import solver_tol
from ._trace import traced
from .base import ConvergenceError, Scratch, _out, fresh

__all__ = ["COEFFICIENTS", "msign", "polar_newton_schulz"]

COEFFICIENTS: dict[str, tuple[float, float, float]] = {
    "cubic": (1.5, -0.5, 0.0),
    "quintic": (3.4445, -4.7750, 2.0315),
}
"""Named coefficients (a, b, c) of s -> a s + b s^3 + c s^5: the classic cubic Newton-Schulz
step (fixed point 1, quadratic convergence) and Muon's quintic (slope 3.4445 at 0)."""

_HALF = (torch.bfloat16, torch.float16)


def _coefficients(coefficients: str | tuple[float, float, float]) -> tuple[float, float, float]:
    if isinstance(coefficients, str):
        if coefficients not in COEFFICIENTS:
            raise ValueError(
                f"coefficients must be one of {tuple(COEFFICIENTS)} or a tuple (a, b, c), "
                f"got {coefficients!r}"
            )
        return COEFFICIENTS[coefficients]
    a, b, c = (float(v) for v in coefficients)
    return a, b, c


def _check_matrix(x: Tensor, name: str) -> None:
    if x.dim() < 2 or x.shape[-1] < 1 or x.shape[-2] < 1:
        raise ValueError(f"{name} has shape {tuple(x.shape)}; it needs (..., n, p) with n, p >= 1")


def msign(
    g: Tensor,
    coefficients: str | tuple[float, float, float] = "quintic",
    steps: int = 5,
    *,
    eps: float = 1e-7,
    dtype: torch.dtype | None = torch.bfloat16,
) -> Tensor:
    r"""Approximate orthogonalisation of an update: ``steps`` polynomial steps on G / |G|_F.

    $X_0 = G / \max(|G|_F, \varepsilon)$ (all singular values in [0, 1]), then
    $X \leftarrow a X + (b A + c A^2) X$ with $A = X X^H$, on the short side of G (a
    tall G is transposed first). The conventions, products included, are those of
    :class:`torch.optim.Muon`, so the quintic in bfloat16 reproduces its update.

    Args:
        g: the update, shape (..., n, p); leading dimensions are a batch.
        coefficients: ``"quintic"`` (Muon's), ``"cubic"`` (1.5, -0.5, 0) or a tuple (a, b, c).
        steps: number of polynomial steps (>= 1).
        eps: floor of the Frobenius norm in the pre-normalisation.
        dtype: the working dtype, bfloat16 by default as in Muon; ``None`` keeps g's.

    Returns:
        A tensor of g's shape and dtype, with G's singular vectors and each singular
        value s of G / |G|_F mapped by the polynomial ``steps`` times. Those values are
        only near 1 (quintic, 5 steps: in [0.68, 1.14] for s >= 0.01); use
        :func:`polar_newton_schulz` for an orthonormal frame.
    """
    _check_matrix(g, "g")
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise ValueError(f"steps must be a positive int, got {steps!r}")
    a, b, c = _coefficients(coefficients)
    tall = g.shape[-2] > g.shape[-1]
    x = g if dtype is None else g.to(dtype)
    x = x.mH if tall else x
    shape = x.shape
    x = x.reshape(-1, *shape[-2:])
    x = x / x.norm(dim=(-2, -1), keepdim=True).clamp(min=eps)
    for _ in range(steps):
        gram = torch.bmm(x, x.mH)
        update = torch.baddbmm(gram, gram, gram, beta=b, alpha=c) if c else gram * b
        x = torch.baddbmm(x, update, x, beta=a)
    x = x.reshape(shape)
    return (x.mH if tall else x).to(g.dtype)


def polar_newton_schulz(
    y: Tensor, *, tol: float | None = None, maxiter: int = 40, scratch: Scratch = fresh
) -> Tensor:
    r"""The polar factor U V^H of Y = U S V^H by Newton-Schulz iterations run to a tolerance.

    Iterates $X \leftarrow X - \tfrac12 X E$, $E = X^H X - I$ (that is
    $X (3I - X^H X)/2$) on the short side of Y, matrix products only, until
    $\max |E| \le$ ``tol``. The iteration converges for singular values in
    (0, sqrt 3); Y is first divided by sqrt(r), r >= |Y^H Y|_2 the largest absolute row
    sum of Y^H Y, when r > 2.5 (a start that is not near-orthogonal), which leaves the
    polar factor unchanged; that Gram matrix, rescaled, is the first E. bfloat16 and
    float16 inputs are computed in float32 and rounded once.

    The residual after a step is bounded without forming it: $E$ is a polynomial in
    $X^H X$, so $E' = (E^3 - 3E^2)/4$ exactly and $|E'|_\infty \le (3e^2 + e^3)/4$ with
    $e = |E|_\infty$, the largest absolute row sum, which bounds every entry. When that
    bound is at most ``tol / 4`` the iteration stops after the step, leaving the rest of
    ``tol`` to the step's rounding, and skips the product $X^H X$ that would only confirm
    it. A small retraction step from an orthonormal X (E = V^H V) takes two products:
    the Gram matrix of X + V and one step (float32, 64 x 16: |V|_F = 0.01).

    Under ``torch.compile`` or ``torch.func.vmap`` (no host sync) all ``maxiter``
    iterations run (an orthonormal frame is a fixed point) and the residual check is
    left to the caller (``Stiefel().residual``).

    Args:
        y: shape (..., n, p) with full rank min(n, p).
        tol: residual max |X^H X - I| at which to stop; by default a few units of
            rounding in the dtype (:func:`geodyn.manifolds._tol.solver_tol`).
        maxiter: iterations after which :class:`ConvergenceError` is raised.
        scratch: memory for the iterate, its products and the Gram matrix
            (:data:`geodyn.manifolds.base.Scratch`). With a kept one the result is its
            ``"iterate"`` tensor, which the next call with that scratch overwrites (copy
            it out first), and for a wide Y, whose fresh iterate keeps the transposed
            layout of Y^H, the products may round differently in the last bit. Unused
            where autograd records the call (``y.requires_grad``). By default each op
            allocates.

    Raises:
        ConvergenceError: the residual missed ``tol`` after ``maxiter`` iterations or
            became non-finite (Y rank-deficient, or not finite).
    """
    _check_matrix(y, "y")
    if isinstance(maxiter, bool) or not isinstance(maxiter, int) or maxiter < 1:
        raise ValueError(f"maxiter must be a positive int, got {maxiter!r}")
    work = torch.float32 if y.dtype in _HALF else y.dtype
    wide = y.shape[-2] < y.shape[-1]
    x = (y.mH if wide else y).to(work)
    size = x.shape[-2]
    if tol is None:
        tol = solver_tol(work, size)
    shape, square = tuple(x.shape), (*x.shape[:-2], x.shape[-1], x.shape[-1])
    # where autograd records the iteration, nothing it saved may be overwritten
    differentiable = torch.is_grad_enabled() and y.requires_grad
    if differentiable:
        scratch = fresh
    # E overwrites the Gram matrix where the scratch keeps them (E = X^H X - I: the
    # diagonal minus 1); fresh memory otherwise, as vmap takes no out= arguments
    kept_gram, kept_abs = scratch("gram", square, x), scratch("|gram|", square, x.real)
    err = torch.matmul(x.mH, x, **_out(kept_gram))
    magnitude = torch.abs(err, **_out(kept_abs))
    bound = magnitude.sum(-1).amax(-1, keepdim=True).unsqueeze(-1)
    scale = torch.where(bound > 2.5, bound.rsqrt(), torch.ones_like(bound))
    x = torch.mul(x, scale, **_out(scratch("iterate", shape, x)))  # ours: updated in place
    err = err * scale.square() if differentiable else err.mul_(scale.square())
    err.diagonal(dim1=-2, dim2=-1).sub_(1)
    eager = not traced(x)
    for iteration in range(maxiter + 1):
        if eager:
            # max |E| and |E|_inf (the bound's e) from one |E| and one host sync
            magnitude = torch.abs(err, **_out(kept_abs))
            residual, e = (
                torch.stack((magnitude.amax(), magnitude.sum(-1).amax())).tolist()
                if err.numel() else (0.0, 0.0)
            )
            if residual <= tol:
                break
            if not math.isfinite(residual) or iteration == maxiter:
                raise ConvergenceError(
                    "polar_newton_schulz: the Newton-Schulz iteration missed its tolerance "
                    f"{tol:.1e} (y is rank-deficient or not finite, or maxiter is too small "
                    "for a start this far from orthonormal); reduce the step, or raise maxiter",
                    residual=residual,
                    iterations=iteration,
                )
        elif iteration == maxiter:
            break
        product = torch.matmul(x, err, **_out(scratch("X E", shape, x)))
        x = torch.add(x, product, alpha=-0.5) if differentiable else x.add_(product, alpha=-0.5)
        if eager and (3 * e * e + e**3) / 4 <= tol / 4:
            break
        err = torch.matmul(x.mH, x, **_out(kept_gram))
        err.diagonal(dim1=-2, dim2=-1).sub_(1)
    x = x.to(y.dtype)
    return x.mH if wide else x
