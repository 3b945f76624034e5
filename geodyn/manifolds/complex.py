r"""Complex manifolds: unitary frames X^H X = I and the complex sphere |z| = r.

Both are real submanifolds of C^n = R^{2n} with the real metric
<u, v> = Re tr(u^H v), so the Riemannian gradient of a real loss is the tangent
projection of torch's complex gradient (which is dL/d(Re z) + i dL/d(Im z)).
With herm(A) = (A + A^H)/2, for a tall unitary frame X:

* constraint   the real parts of the upper triangle (with the diagonal) of X^H X - I and
               the imaginary parts of its strict upper triangle: p^2 real residuals
* tangent      T_X M = {V : herm(X^H V) = 0},  P_X V = V - X herm(X^H V)
* projection   the polar factor U W^H of X = U S W^H (the nearest frame)
* SHAKE        X' = Y + X Lambda with Lambda Hermitian and X'^H X' = I

The complex sphere is the real sphere S^{2n-1}: P_x v = v - x Re(x^H v)/|x|^2.
"""

from __future__ import annotations

import math
from dataclasses import replace

import torch
from torch import Tensor

from ._tol import solver_tol
from ._trace import traced
from .base import ConvergenceError, Draw, Manifold
from .orthogonalize import polar_newton_schulz
from .sphere import Sphere
from .stiefel import Frames

__all__ = ["ComplexSphere", "ComplexStiefel"]


def _herm(a: Tensor) -> Tensor:
    return 0.5 * (a + a.mH)


def _complex_dtype(dtype: torch.dtype | None) -> torch.dtype:
    dtype = torch.complex64 if dtype is None else dtype
    if not dtype.is_complex:
        raise ValueError(f"dtype must be complex (torch.complex64 or complex128), got {dtype}")
    return dtype


class _ComplexPoints(Manifold):
    """A real manifold's verbs on complex points: the real metric of C^N = R^{2N}, and
    the real manifold's random law drawn from a complex Gaussian (complex64 by default)."""

    def inner(
        self, x: Tensor, u: Tensor, v: Tensor | None = None, *, keepdim: bool = False
    ) -> Tensor:
        """Re tr(u^H v) summed over the point's dimensions."""
        prod = (u.conj() * (u if v is None else v)).real
        dims = tuple(range(-self.ndim, 0))
        return prod.sum(dim=dims, keepdim=keepdim)

    def _sample_point(self, shape: tuple[int, ...], draw: Draw) -> Tensor:
        return super()._sample_point(shape, replace(draw, dtype=_complex_dtype(draw.dtype)))

    def check_point(self, x: Tensor, atol: float | None = None) -> tuple[bool, str | None]:
        if not x.is_complex():
            return False, f"x has dtype {x.dtype}; {self.name} needs a complex tensor"
        return super().check_point(x, atol)


class ComplexStiefel(_ComplexPoints, Frames):
    r"""Unitary frames: X^H X = I for tall complex (..., n, p), X X^H = I for wide (n < p).

    Args:
        retraction: ``"qr"`` (the Q factor of X + V with a real positive diagonal of R,
            by Householder QR) or ``"newton-schulz"`` (the polar factor of X + V by
            Newton-Schulz iterations to a tolerance).
        shake_tol: residual max |X'^H X' - I| at which SHAKE stops; by default a few
            units of rounding in the dtype.
        shake_maxiter: iterations after which SHAKE raises :class:`ConvergenceError`.

    SHAKE is the real Stiefel Newton iteration with Hermitian multipliers: with
    S = herm(X^H X') = Q D Q^H, each step solves S dLambda + dLambda S = -F.
    """

    name = "ComplexStiefel"
    retractions = ("qr", "newton-schulz")

    def constraint(self, x: Tensor) -> Tensor:
        xt = self._tall(x, self._wide(x))
        k = xt.shape[-1]
        gram = xt.mH @ xt - torch.eye(k, dtype=xt.dtype, device=x.device)
        rows, cols = torch.triu_indices(k, k, device=x.device)
        strict_rows, strict_cols = torch.triu_indices(k, k, offset=1, device=x.device)
        return torch.cat(
            [gram[..., rows, cols].real, gram[..., strict_rows, strict_cols].imag], dim=-1
        )

    def proj_tangent(self, x: Tensor, v: Tensor) -> Tensor:
        wide = self._wide(x)
        xt, vt = self._tall(x, wide), self._tall(v, wide)
        return self._tall(vt - xt @ _herm(xt.mH @ vt), wide)

    def retract(self, x: Tensor, v: Tensor) -> Tensor:
        wide = self._wide(x)
        y = self._tall(x, wide) + self._tall(v, wide)
        if self.retraction == "newton-schulz":
            return self._tall(polar_newton_schulz(y), wide)
        q, r = torch.linalg.qr(y)
        d = torch.diagonal(r, dim1=-2, dim2=-1)
        phase = torch.where(d.abs() > 0, d / d.abs().clamp_min(torch.finfo(d.real.dtype).tiny), 1)
        return self._tall(q * phase.unsqueeze(-2), wide)

    def shake(self, x: Tensor, y: Tensor) -> Tensor:
        """Y + X Lambda on M with Lambda Hermitian (wide: Y + Lambda X), by Newton's method."""
        wide = self._wide(x)
        xt, yt = self._tall(x, wide), self._tall(y, wide)
        tol = self.shake_tol if self.shake_tol is not None else solver_tol(x.dtype, xt.shape[-2])
        eye = torch.eye(xt.shape[-1], dtype=x.dtype, device=x.device)
        eager = not traced(x)
        z, lam = yt, torch.zeros_like(eye).expand(*xt.shape[:-2], -1, -1)
        res = math.inf
        for iteration in range(self.shake_maxiter + 1):
            f = z.mH @ z - eye
            if eager:
                res = float(f.abs().max()) if f.numel() else 0.0
                if res <= tol:
                    return self._tall(z, wide)
                if not math.isfinite(res) or iteration == self.shake_maxiter:
                    break
            elif iteration == self.shake_maxiter:
                return self._tall(z, wide)
            d, q = torch.linalg.eigh(_herm(xt.mH @ z))
            denom = d.unsqueeze(-1) + d.unsqueeze(-2)
            if eager and bool((denom <= 0).any()):
                break
            denom = denom.to(x.dtype)
            lam = lam - q @ ((q.mH @ f @ q) / denom) @ q.mH
            z = yt + xt @ lam
        raise ConvergenceError(
            f"{self.name}.shake: no Hermitian multiplier puts Y back on the manifold along "
            "the normal space at X (the step is too large); reduce the step size lr",
            residual=res,
            iterations=iteration,
        )


class ComplexSphere(_ComplexPoints, Sphere):
    """The sphere |z| = radius in C^n over the last dimension; leading dimensions are a batch.

    It is the real sphere S^{2n-1} of radius r, with the real inner product
    Re(x^H v): projection, retraction, SHAKE and the geodesic are the real sphere's.
    """

    name = "ComplexSphere"

    def __init__(self, radius: float = 1.0) -> None:
        super().__init__(radius)
        self.symmetries = ()

    def _dot(self, x: Tensor, v: Tensor) -> Tensor:
        return (x.conj() * v).real.sum(dim=self.dim, keepdim=True)
