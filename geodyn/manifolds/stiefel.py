r"""The Stiefel manifold of orthonormal frames, X^T X = I.

A tall point X has shape (..., n, p) with n >= p and orthonormal columns; a
wide one (n < p) has orthonormal rows, X X^T = I, and every verb works on its
transpose. With sym(A) = (A + A^T)/2, for a tall X:

* constraint   the upper triangle (with the diagonal) of X^T X - I
* tangent      T_X M = {V : sym(X^T V) = 0},  P_X V = V - X sym(X^T V)
* projection   the polar factor U W^T of X = U S W^T (the nearest point)
* SHAKE        X' = Y + X Lambda with Lambda symmetric and X'^T X' = I
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from ._roots import newton
from ._tol import check_solver_args, solver_tol
from .base import (
    ConvergenceError,
    FusedStep,
    Manifold,
    Scratch,
    _out,
    all_finite,
    fresh,
    momentum_sum,
)
from .orthogonalize import polar_newton_schulz

__all__ = ["Stiefel"]

# Half precisions are factorised in float32: CPU torch has no half Cholesky, LU or eigh,
# and a half-precision matrix_exp is off by orders of magnitude.
_HALF = (torch.float16, torch.bfloat16)


def _sym(a: Tensor, out: Tensor | None = None) -> Tensor:
    """(A + A^T) / 2, into ``out`` where given."""
    return torch.add(a, a.mT, out=out).mul_(0.5)


def _eye_like(a: Tensor) -> Tensor:
    return torch.eye(a.shape[-1], dtype=a.dtype, device=a.device)


# A second orthonormalisation pass runs when the Gram matrix's estimated condition
# number kappa^2 exceeds this. One pass leaves |Q^T Q - I| ~ eps kappa^2: measured in
# float32 on 1024 x 784 and 256 x 64 frames, at most 7.2e-7 up to kappa^2 = 16 (where
# the estimate below reads 2.0-2.3) and 1.3e-6 at kappa^2 = 100; two passes, 4.8e-7.
_KAPPA2_ONE_PASS = 2.0


def _gram_cholesky(y: Tensor, scratch: Scratch = fresh) -> tuple[Tensor, Tensor, Tensor]:
    """L with L L^T = Y^T Y (L = R^T), whether the factorisation failed, and kappa^2(Y)
    estimated from diag(L) (a lower bound, max/min of diag(L)^2), per matrix. With a
    kept ``scratch("gram", ...)`` L overwrites the Gram matrix there (the same bits)."""
    p = y.shape[-1]
    gram = scratch("gram", (*y.shape[:-2], p, p), y)
    if gram is None:
        factor, info = torch.linalg.cholesky_ex(y.mT @ y)
    else:
        info = torch.empty(y.shape[:-2], dtype=torch.int32, device=y.device)
        factor, info = torch.linalg.cholesky_ex(
            torch.matmul(y.mT, y, out=gram), out=(gram, info)
        )
    d = torch.diagonal(factor, dim1=-2, dim2=-1)
    return factor, info != 0, (d.amax(-1) / d.amin(-1)).square()


def _orthonormal_factor(factor: Tensor, y: Tensor, out: Tensor | None = None) -> Tensor:
    """Q = Y L^{-T}: the triangular solve of CholeskyQR (into ``out`` when given)."""
    return torch.linalg.solve_triangular(factor.mT, y, upper=True, left=False, **_out(out))


def _cholesky_qr(y: Tensor) -> Tensor | None:
    r"""Q of Y = Q R (diag R > 0) from R^T R = Y^T Y: one Gram matrix, a Cholesky
    factorisation and a triangular solve (CholeskyQR).

    A second pass orthonormalises Q again when kappa^2(Y) estimated from diag(R)
    (a lower bound, max/min of diag(R)^2) exceeds ``_KAPPA2_ONE_PASS`` (CholeskyQR2).
    Returns ``None`` when Y^T Y is numerically singular (Cholesky fails).
    """
    for attempt in range(2):
        factor, failed, kappa2 = _gram_cholesky(y)
        if bool(failed.any()):
            return None
        y = _orthonormal_factor(factor, y)
        if attempt == 1 or not bool((kappa2 > _KAPPA2_ONE_PASS).any()):
            break
    return y


def _polar(y: Tensor) -> Tensor:
    r"""The polar factor Y (Y^T Y)^{-1/2}, with Y^T Y = W diag(s) W^T (eigh).

    A second pass on the result runs when kappa^2 = max s / min s exceeds
    ``_KAPPA2_ONE_PASS``; an SVD is the fallback for a numerically singular Y.
    """
    for attempt in range(2):
        y64 = y.double()
        s, w = torch.linalg.eigh(y64.mT @ y64)
        if bool((s[..., :1] <= 0).any()):
            u, _, vh = torch.linalg.svd(y, full_matrices=False)
            return u @ vh
        y = y @ ((w * s.rsqrt().unsqueeze(-2)) @ w.mT).to(y.dtype)
        if attempt == 1 or not bool((s[..., -1] > _KAPPA2_ONE_PASS * s[..., 0]).any()):
            break
    return y


class Frames(Manifold):
    """What real and unitary frames share: the solver options, the tall/wide switch,
    the polar projection and the shape check.

    A wide point (n < p) is handled through its transpose, without conjugation:
    X X^H = I iff (X^T)^H X^T = I. A subclass lists its ``retractions``.
    """

    ndim = 2
    retractions: tuple[str, ...] = ()

    def __init__(
        self,
        retraction: str = "qr",
        shake_tol: float | None = None,
        shake_maxiter: int = 50,
    ) -> None:
        super().__init__()
        if retraction not in self.retractions:
            raise ValueError(f"retraction must be one of {self.retractions}, got {retraction!r}")
        check_solver_args(shake_tol, shake_maxiter)
        self.retraction = retraction
        self.shake_tol = shake_tol
        self.shake_maxiter = int(shake_maxiter)

    def _params(self) -> tuple[object, ...]:
        return (self.retraction, self.shake_tol, self.shake_maxiter)

    @staticmethod
    def _wide(x: Tensor) -> bool:
        return x.shape[-2] < x.shape[-1]

    @staticmethod
    def _tall(x: Tensor, wide: bool) -> Tensor:
        return x.mT if wide else x

    def project(self, x: Tensor) -> Tensor:
        """The polar factor U W^H of X = U S W^H: the nearest frame in Frobenius norm."""
        self.check_shape(tuple(x.shape), "x")
        self.check_finite(x, "x")
        # a float64 (complex128) SVD for lower precisions: a float32 SVD's factor is off
        # the manifold by about 1e-6, the float64 one rounded to float32 by the rounding
        # floor (4e-7).
        work = x.to(torch.complex128 if x.is_complex() else torch.float64)
        u, s, vh = torch.linalg.svd(work, full_matrices=False)
        rank_tol = torch.finfo(x.dtype).eps * max(x.shape[-2:]) * s[..., :1]
        if bool((s[..., -1:] <= rank_tol).any()):
            raise ValueError(
                "x is rank-deficient (a singular value is zero to working precision): its "
                f"nearest frame is not unique; initialise it with {self.name}().random_point"
                "(...) or add a small random perturbation"
            )
        return (u @ vh).to(x.dtype)

    def shape_error(self, shape: tuple[int, ...], name: str) -> str | None:
        if len(shape) < 2 or shape[-1] < 1 or shape[-2] < 1:
            return (
                f"{name} has shape {tuple(shape)} but {self.name} needs (..., n, p) with "
                "n, p >= 1 (a matrix, optionally batched); reshape a conv weight to "
                "(out, in * kh * kw)"
            )
        return None


class Stiefel(Frames):
    r"""Orthonormal frames: X^T X = I for tall (..., n, p), X X^T = I for wide (n < p).

    Args:
        retraction: ``"qr"`` (the Q factor of X + V with diag(R) > 0, the default,
            by CholeskyQR), ``"polar"`` (the polar factor of X + V, from the eigen-
            decomposition of the p x p Gram matrix), ``"cayley"`` (the Cayley
            transform of the skew matrix W = P V X^T - X (P V)^T, P = I - X X^T/2,
            solved in its rank-2p form), ``"exp"`` (the geodesic of the
            embedded metric), or ``"newton-schulz"`` (the polar factor of X + V by
            Newton-Schulz iterations to a residual tolerance: matrix products only,
            see :func:`geodyn.manifolds.orthogonalize.polar_newton_schulz`). Cayley
            and exp end with one CholeskyQR pass, which
            removes their rounding (a few 1e-6 in float32); a step too large for
            any of them raises ``ValueError``.
        shake_tol: residual max |X'^T X' - I| at which SHAKE stops; by default
            a few units of rounding in the dtype.
        shake_maxiter: iterations after which SHAKE raises
            :class:`ConvergenceError`.

    SHAKE solves (Y + X Lambda)^T (Y + X Lambda) = I for symmetric Lambda by
    Newton's method with the Jacobian's symmetric part: with M = X^T X' and
    S = sym(M) = Q D Q^T, each step solves S dLambda + dLambda S = -F
    (F = X'^T X' - I) in the eigenbasis of S. It is exact for the symmetric
    part of the error and contracts the rest linearly, by about |skew(M)| =
    O(lr |p|) per iteration. Measured on 256 x 64 frames, rows of the step of
    norm 0.01: 5 iterations in float64, 2 in float32; of norm 0.1: 12-13 in
    float64, 4 in float32. A step with no solution (the part of Y off span(X)
    longer than 1) stops with :class:`ConvergenceError`.
    """

    name = "Stiefel"
    retractions = ("qr", "polar", "cayley", "exp", "newton-schulz")
    project_is_nearest = True
    symmetries = ("orthogonal_long",)

    # ------------------------------------------------------------------ verbs
    def constraint(self, x: Tensor) -> Tensor:
        xt = self._tall(x, self._wide(x))
        gram = xt.mT @ xt - _eye_like(xt)
        k = gram.shape[-1]
        rows, cols = torch.triu_indices(k, k, device=x.device)
        return gram[..., rows, cols]

    def proj_tangent(self, x: Tensor, v: Tensor) -> Tensor:
        wide = self._wide(x)
        xt, vt = self._tall(x, wide), self._tall(v, wide)
        return self._tall(vt - xt @ _sym(xt.mT @ vt), wide)

    def retract(self, x: Tensor, v: Tensor) -> Tensor:
        if x.dtype in _HALF:
            return self.retract(x.float(), v.float()).to(x.dtype)
        wide = self._wide(x)
        xt, vt = self._tall(x, wide), self._tall(v, wide)
        if self.retraction == "qr":
            return self._tall(self._retract_qr(xt, vt), wide)
        if self.retraction == "newton-schulz":
            return self._tall(polar_newton_schulz(xt + vt), wide)
        polished: Tensor | None = None
        try:
            if self.retraction == "polar":
                polished = _polar(xt + vt)
            else:
                y = (self._retract_cayley if self.retraction == "cayley" else self._retract_exp)(
                    xt, vt
                )
                # the solve / matrix exponential leave |Y^T Y - I| at a few 1e-6 in float32
                # and far more for huge steps: one CholeskyQR pass removes that rounding (it
                # moves an orthonormal frame by its residual only)
                polished = _cholesky_qr(y) if all_finite(y) else None
        except torch.linalg.LinAlgError:  # a factorisation of an overflowed Gram matrix
            polished = None
        if polished is None or not all_finite(polished):
            raise ValueError(
                f"v is too large for the {self.retraction!r} retraction (the result is not "
                "an orthonormal frame); reduce the step size lr or use retraction='qr'"
            )
        return self._tall(polished, wide)

    def fused_momentum_step(
        self, x: Tensor, g: Tensor, old: Tensor | None, *, lr: float, momentum: float,
        dampening: float, scratch: Scratch = fresh,
    ) -> FusedStep | None:
        r"""The folded momentum step with the qr or Newton-Schulz retraction, tall frames:
        with
        $b' = \mu b_{old} + (1 - \delta) g$, $b = b' - X \operatorname{sym}(X^\top b')$ (one
        product for $X^\top b'$, one for $b$), $Y = X - \eta b$ and $R^\top R = Y^\top Y$,
        the write is the triangular solve $X' = Y R^{-1}$ into the weight and $b$ into the
        buffer: the generic step's matrix work, with fewer passes over the weights. Its
        temporaries ($b'$ then $b$ in place, $Y$, $X^\top b'$, its symmetric part, the
        Gram matrix then its factor in place) take their memory from ``scratch``.

        ``checks`` is diag(R): finite only if every entry of Y is (each enters
        $Y^\top Y$), which needs x, g and the buffer finite; it is NaN where the Cholesky
        factorisation fails or where diag(R) shows $\kappa^2(Y)$ above the one-pass bound,
        where the generic step runs CholeskyQR2 or Householder QR.

        With ``"newton-schulz"`` the polar factor of Y (:func:`polar_newton_schulz`, its
        iterate and products in ``scratch`` too) is computed before the write, which
        copies it into the weight; it converged (a finite residual within its
        tolerance, so Y and hence b are finite), else there is no fast path and the
        generic step reports. Its ``checks`` are empty.

        Wide frames, other retractions, half precisions and a subclass that overrides a
        verb of the step (``proj_tangent``, ``retract``) have no fast path.
        """
        if (self.retraction not in ("qr", "newton-schulz") or self._wide(x)
                or x.dtype not in (torch.float32, torch.float64)
                or not self._inherits(Stiefel, "proj_tangent", "retract")):
            return None
        n, p = x.shape[-2:]
        square = (*x.shape[:-2], p, p)
        b = momentum_sum(old, g, momentum, dampening, scratch)
        a = torch.matmul(x.mT, b, **_out(scratch("xtb", square, x)))
        sym = _sym(a, scratch("sym", square, x))
        # b = b' - X sym in one batched product, in place where b' is the step's own
        # contiguous tensor (not the gradient, nor a fresh sum in the layout of g or old)
        product = (x.reshape(-1, n, p), sym.reshape(-1, p, p))
        if b is g or not b.is_contiguous():
            buf = torch.baddbmm(b.reshape(-1, n, p), *product, alpha=-1).view(x.shape)
        else:
            buf = b.view(-1, n, p).baddbmm_(*product, alpha=-1).view(x.shape)
        y = torch.add(x, buf, alpha=-lr, **_out(scratch("y", tuple(x.shape), x)))
        if self.retraction == "newton-schulz":
            try:
                q = polar_newton_schulz(y, scratch=scratch)
            except ConvergenceError:
                return None

            def copy(x_out: Tensor | None, buf_out: Tensor | None) -> tuple[Tensor, Tensor]:
                return (q if x_out is None else x_out.copy_(q),
                        buf if buf_out is None else buf_out.copy_(buf))

            return FusedStep(y.new_empty(0), copy)
        factor, failed, kappa2 = _gram_cholesky(y, scratch)
        generic = (failed | (kappa2 > _KAPPA2_ONE_PASS)).unsqueeze(-1)
        checks = torch.diagonal(factor, dim1=-2, dim2=-1).masked_fill(generic, float("nan"))

        def write(x_out: Tensor | None, buf_out: Tensor | None) -> tuple[Tensor, Tensor]:
            x_new = _orthonormal_factor(factor, y, x_out)
            return x_new, buf if buf_out is None else buf_out.copy_(buf)

        return FusedStep(checks, write)

    @staticmethod
    def _retract_qr(x: Tensor, v: Tensor) -> Tensor:
        """Q of X + V = Q R with diag(R) > 0 (hence R_X(0) = X).

        Computed by CholeskyQR (two GEMM-sized products and a small Cholesky, about
        twice as fast as Householder QR on a 1024 x 784 frame); Householder QR with
        the signs fixed is the fallback when (X + V)^T (X + V) is numerically singular.
        """
        q = _cholesky_qr(x + v)
        if q is not None:
            return q
        q, r = torch.linalg.qr(x + v)
        d = torch.diagonal(r, dim1=-2, dim2=-1)
        sign = torch.where(d < 0, -torch.ones_like(d), torch.ones_like(d))
        return q * sign.unsqueeze(-2)

    @staticmethod
    def _retract_cayley(x: Tensor, v: Tensor) -> Tensor:
        r"""(I - W/2)^{-1} (I + W/2) X with W = A B^T, A = [PV, X], B = [X, -PV].

        By Woodbury this is X + A (I - B^T A / 2)^{-1} B^T X: a 2p x 2p solve.
        """
        pv = v - 0.5 * x @ (x.mT @ v)
        a = torch.cat([pv, x], dim=-1)
        b = torch.cat([x, -pv], dim=-1)
        eye = torch.eye(a.shape[-1], dtype=x.dtype, device=x.device)
        return x + a @ torch.linalg.solve(eye - 0.5 * (b.mT @ a), b.mT @ x)

    def _retract_exp(self, x: Tensor, v: Tensor) -> Tensor:
        r"""Embedded-metric geodesic [X, V] expm([[A, -S], [I, A]]) [expm(-A); 0].

        A = X^T V, S = V^T V, after V is projected onto T_X M.
        """
        v = v - x @ _sym(x.mT @ v)
        a = x.mT @ v
        s = v.mT @ v
        eye = _eye_like(a)
        block = torch.cat(
            [torch.cat([a, -s], dim=-1), torch.cat([eye.expand_as(a), a], dim=-1)], dim=-2
        )
        e = torch.linalg.matrix_exp(block)
        p = a.shape[-1]
        ema = torch.linalg.matrix_exp(-a)
        return x @ (e[..., :p, :p] @ ema) + v @ (e[..., p:, :p] @ ema)

    def expmap(self, x: Tensor, u: Tensor) -> Tensor:
        """The embedded-metric geodesic from X with initial velocity ``u`` (made tangent)."""
        if x.dtype in _HALF:
            return self.expmap(x.float(), u.float()).to(x.dtype)
        wide = self._wide(x)
        return self._tall(self._retract_exp(self._tall(x, wide), self._tall(u, wide)), wide)

    def shake(self, x: Tensor, y: Tensor) -> Tensor:
        r"""Y + X Lambda on M with Lambda symmetric (wide: Y + Lambda X), by Newton's method
        on $F(\Lambda) = Z^\top Z - I$, $Z = Y + X\Lambda$.

        Newton's step solves the Lyapunov equation $A\Delta + \Delta A = -F$ with
        $A = \mathrm{sym}(X^\top Z)$ (an eigendecomposition of A). Near X (Y = X + hP),
        $X^\top Z$ is near I, so the chord step $\Delta = -\mathrm{sym}(F)/2$ (the
        Jacobian at $X^\top Z = I$, matrix products only) contracts F by about
        $\lVert X^\top Z - I \rVert = O(h)$. Each step is a chord step where the last one
        shrank max |F| at least fourfold (the first is one), else Newton's; both stop at
        the same root, on the same residual tolerance.
        """
        if x.dtype in _HALF:
            return self.shake(x.float(), y.float()).to(x.dtype)
        wide = self._wide(x)
        xt, yt = self._tall(x, wide), self._tall(y, wide)
        tol = self.shake_tol if self.shake_tol is not None else solver_tol(x.dtype, xt.shape[-2])
        eye = _eye_like(xt)
        State = tuple[Tensor, Tensor, float]  # Z, Lambda, max |F| before the last step

        def residual(state: State) -> tuple[Tensor, None]:
            z, _, _ = state
            return z.mT @ z - eye, None

        def step(state: State, f: Tensor, _: None) -> State | None:
            z, lam, before = state
            size = float(f.abs().max())
            if size <= before / 4:  # the chord step contracts: keep to it
                lam = lam - _sym(f).mul_(0.5)
            else:
                d, q = torch.linalg.eigh(_sym(xt.mT @ z))
                denom = d.unsqueeze(-1) + d.unsqueeze(-2)
                if bool((denom <= 0).any()):
                    return None
                lam = lam - q @ ((q.mT @ f @ q) / denom) @ q.mT
            return yt + xt @ lam, lam, size

        lam0 = torch.zeros_like(eye).expand(*xt.shape[:-2], -1, -1)
        z, _, _ = newton(
            residual,
            step,
            (yt, lam0, math.inf),
            tol=tol,
            maxiter=self.shake_maxiter,
            failure=f"{self.name}.shake: no symmetric multiplier found that puts Y back on the "
            "manifold along the normal space at X (the step is too large for the constraint); "
            "reduce the step size lr or raise shake_maxiter/shake_tol",
        )
        return self._tall(z, wide)
