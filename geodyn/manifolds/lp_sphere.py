r"""The Lp sphere ||x||_p = r along the last dimension (p > 1).

With n(x) = sign(x) |x|^(p-1) (the gradient of ||x||_p^p / p):

* constraint   c(x) = (||x||_p^p - r^p) / (p r^p), the relative radius error to first order
* tangent      P_x v = v - n <n, v> / <n, n>
* retraction   R_x(v) = r (x + v) / ||x + v||_p
* projection   the Euclidean nearest point, from the Lagrange condition
               y_i + m sign(y_i) |y_i|^(p-1) = x_i (one scalar m per row)
* SHAKE        y + mu n(x) with c(y + mu n(x)) = 0, by Newton's method on the convex c(mu)
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from ._roots import bracketed_newton, newton
from ._tol import check_solver_args, solver_tol
from .base import ConvergenceError, Draw, FusedStep, Manifold, Scratch, _out, fresh, momentum_sum
from .sphere import (
    _check_radius,
    _dot_rows,
    _norm,
    _sqnorm_rows,
    _vector_shape_error,
    safe_norm,
)

__all__ = ["LpSphere"]


def _signum(x: Tensor) -> Tensor:
    """sign(x) with sign(0) = +1 (the side a zero coordinate moves to)."""
    return torch.where(x < 0, -torch.ones_like(x), torch.ones_like(x))


class LpSphere(Manifold):
    r"""Points with ||x||_p = radius over the last dimension; leading dimensions are a batch.

    Args:
        p: the exponent, p > 1 (sparser points as p -> 1). p <= 1 is refused:
            the normal sign(x)|x|^(p-1) is undefined or discontinuous at zero
            coordinates, so there is no tangent space there.
        radius: r > 0.
        shake_tol: residual |c| at which SHAKE stops (default: rounding level).
        shake_maxiter: Newton iterations before SHAKE raises
            :class:`ConvergenceError`.

    ``project`` returns the Euclidean nearest point. Per coordinate, with the
    largest |x_i| mapped to s, the Lagrange condition gives every other
    |y_i| = t_i from t_i + m t_i^(p-1) = |x_i| with m = (max|x| - s) / s^(p-1);
    a bracketed Newton search on s then solves ||y||_p = r. Outside the ball
    (m > 0) this is the convex projection; inside and p <= 2 each t_i is the
    global minimiser of the Lagrangian, so the point is the global nearest one;
    inside and p > 2 it is the stationary point reached by moving the largest
    coordinate out first. A point outside is solved on the unit sphere
    (P_r(x) = r P_1(x / r)) in log coordinates, so its accuracy does not depend
    on its distance; every row is solved in float64, independently of the others.
    """

    ndim = 1
    name = "LpSphere"
    fused_entrywise = True
    symmetries = ("signed_permutation_last",)

    def __init__(
        self,
        p: float,
        radius: float = 1.0,
        shake_tol: float | None = None,
        shake_maxiter: int = 50,
    ) -> None:
        super().__init__()
        p = float(p)
        if not p > 1 or not math.isfinite(p):
            raise ValueError(
                f"p must be a finite number > 1, got {p}: for p <= 1 the normal "
                "sign(x)|x|^(p-1) is undefined or discontinuous at zero coordinates, so the "
                "set has no tangent space there; use p = 1 + eps (e.g. 1.1) for sparse weights"
            )
        check_solver_args(shake_tol, shake_maxiter)
        self.p = p
        self.radius = _check_radius(radius)
        self.shake_tol = shake_tol
        self.shake_maxiter = int(shake_maxiter)

    def _params(self) -> tuple[object, ...]:
        return (self.p, self.radius, self.shake_tol, self.shake_maxiter)

    @property
    def project_is_nearest(self) -> bool:
        """True for p <= 2; for p > 2 a point inside may get a stationary point instead."""
        return self.p <= 2

    def _norm_p(self, x: Tensor) -> Tensor:
        """||x||_p along the last dimension, free of overflow and underflow in |x|^p."""
        return safe_norm(x, -1, self.p)

    def normal(self, x: Tensor) -> Tensor:
        """n(x) = sign(x) |x|^(p-1), the gradient of ||x||_p^p / p."""
        return torch.sign(x) * x.abs().pow(self.p - 1)

    def constraint(self, x: Tensor) -> Tensor:
        rp = self.radius**self.p
        return (x.abs().pow(self.p).sum(dim=-1, keepdim=True) - rp) / (self.p * rp)

    def proj_tangent(self, x: Tensor, v: Tensor) -> Tensor:
        n = self.normal(x)
        return v - n * ((n * v).sum(-1, keepdim=True) / (n * n).sum(-1, keepdim=True))

    def retract(self, x: Tensor, v: Tensor) -> Tensor:
        y = x + v
        return y * (self.radius / self._norm_p(y))

    def fused_momentum_step(
        self, x: Tensor, g: Tensor, old: Tensor | None, *, lr: float, momentum: float,
        dampening: float, scratch: Scratch = fresh,
    ) -> FusedStep | None:
        r"""The folded step in a few passes: $b' = \mu b_{old} + (1 - \delta) g$, the normal
        $n = \mathrm{sign}(x) |x|^{p-1}$, the row sums $\langle n, b'\rangle$ and $|n|^2$,
        $b = b' - c\,n$ ($c = \langle n, b'\rangle / |n|^2$), $y = x - \eta b$ and
        $x' = r\, y / \|y\|_p$, the buffer written at the commit: the generic step to
        rounding. ``checks`` holds the row sums and $\|y\|_p$, finite only if x, g and
        the buffer are; where $\|y\|_p$ is 0 or overflows, the generic step (with its
        scaled norm) runs. A subclass that overrides a verb of the step (``proj_tangent``,
        ``normal``, ``retract``) has none.
        """
        if not self._inherits(LpSphere, "proj_tangent", "normal", "retract"):
            return None
        b = momentum_sum(old, g, momentum, dampening, scratch)
        shape = tuple(x.shape)
        n = torch.abs(x, **_out(scratch("n", shape, x))).pow_(self.p - 1).copysign_(x)
        nb = _dot_rows(n, b, scratch("product", shape, x))
        c = nb / _sqnorm_rows(n)
        y = torch.add(x, b, alpha=-lr, **_out(scratch("y", shape, x))).addcmul_(n, c, value=lr)
        norm = _norm(y, -1, self.p)
        scale = norm.reciprocal().mul_(self.radius)
        checks = torch.cat((c, norm, scale), dim=-1)

        def write(x_out: Tensor | None, buf_out: Tensor | None) -> tuple[Tensor, Tensor]:
            buf = torch.addcmul(b, n, c, value=-1, **_out(buf_out))
            return torch.mul(y, scale, **_out(x_out)), buf

        return FusedStep(checks, write)

    def fused_proj_tangent_(self, x: Tensor, v: Tensor) -> Tensor | None:
        r"""$v \leftarrow v - c\,n$ in place, $c = \langle n, v\rangle / |n|^2$,
        $n = \mathrm{sign}(x) |x|^{p-1}$; the checks are c (a NaN or Inf entry of x or v,
        or a zero row of x, reaches it, and $|c\,n| \le |v|$). A subclass that overrides
        ``proj_tangent``, ``normal`` or ``rattle`` has none."""
        if not self._inherits(LpSphere, "proj_tangent", "normal", "rattle"):
            return None
        n = x.abs().pow_(self.p - 1).copysign_(x)
        c = _dot_rows(n, v).div_(_sqnorm_rows(n))
        v.addcmul_(n, c, value=-1)
        return c

    # ------------------------------------------------------------------ projection
    def project(self, x: Tensor) -> Tensor:
        """The Euclidean nearest point of the Lp sphere (see the class docstring).

        Rows outside the ball and rows inside it are solved separately, each row
        independently of the others, in float64 (rounded once to the dtype of x).
        """
        self.check_shape(tuple(x.shape), "x")
        self.check_finite(x, "x")
        rows = x.reshape(-1, x.shape[-1])
        if bool((rows.abs().amax(dim=-1) == 0).any()):
            raise ValueError(
                "x has a zero row: a zero vector has no nearest point on the Lp sphere; "
                f"initialise it with {self.name}.random_point(...)"
            )
        outside = (self._norm_p(rows) > self.radius).squeeze(-1)
        y = torch.empty_like(rows)
        if bool(outside.any()):
            y[outside] = self._project_outside(rows[outside])
        if not bool(outside.all()):
            y[~outside] = self._project_inside(rows[~outside].double()).to(x.dtype)
        return y.reshape(x.shape)

    def _project_outside(self, x: Tensor) -> Tensor:
        r"""Nearest points of rows with ||x||_p > r, in float64 on the unit sphere.

        By homogeneity P_r(x) = r P_1(x / r). With z = |x| / r and s the largest
        |y_i| of P_1, s lies in [n^(-1/p), min(1, max z)] whatever the distance of
        x; the multiplier is m = (max z - s) / s^(p-1) >= 0 and every other
        coordinate solves t + m t^(p-1) = z_i. That equation is solved for
        u = log t, where log(e^u + m e^((p-1) u)) is convex with slope in
        [min(1, p-1), max(1, p-1)], and the outer one, log sum t^p = 0, for s:
        no power of a large or small number is formed, so far points (|x| / r
        ~ 1e6 in float32, p = 40 at 1e3 in float64) keep full accuracy.
        """
        p, n = self.p, x.shape[-1]
        z = x.double().abs() / self.radius
        top = torch.zeros_like(z, dtype=torch.bool).scatter_(
            -1, z.argmax(dim=-1, keepdim=True), True
        )
        z_top = z.amax(dim=-1, keepdim=True)
        eps = torch.finfo(torch.float64).eps
        nonzero = z > 0
        log_z = torch.where(nonzero, z, torch.ones_like(z)).log()
        slope = min(1.0, p - 1)
        # phi below subtracts log z_i: its rounding, and so the attainable accuracy of
        # log t_i and of s, is eps max(1, |log z_i|)
        magnitude = log_z.abs().clamp(min=1)

        def others(s: Tensor) -> tuple[Tensor, Tensor]:
            """log t_i at the multiplier of s, and d(log t_i)/d(log m)."""
            log_m = (z_top - s).log() - (p - 1) * s.log()
            log_m = log_m.expand_as(z)

            def phi(u: Tensor) -> tuple[Tensor, Tensor]:
                share = torch.sigmoid(-log_m - (p - 2) * u)  # t / (t + m t^(p-1))
                value = torch.logaddexp(u, log_m + (p - 1) * u) - log_z
                return value, share + (1 - share) * (p - 1)

            hi = torch.minimum(log_z, (log_z - log_m) / (p - 1))
            lo = hi - math.log(2) / slope
            u, _ = bracketed_newton(phi, lo, hi, hi, xtol=8 * eps * magnitude)
            _, dphi = phi(u)
            share = torch.sigmoid(-log_m - (p - 2) * u)
            return u, -(1 - share) / dphi

        def f_df(s: Tensor) -> tuple[Tensor, Tensor]:
            u, du_dlogm = others(s)
            u = torch.where(top, s.log(), u)
            weights = torch.softmax(torch.where(nonzero, p * u, -math.inf), dim=-1)
            dlogm_ds = -1 / (z_top - s) - (p - 1) / s
            du_ds = torch.where(top, 1 / s, du_dlogm * dlogm_ds)
            value = torch.logsumexp(torch.where(nonzero, p * u, -math.inf), dim=-1, keepdim=True)
            return value, p * (weights * torch.where(nonzero, du_ds, 0.0)).sum(-1, keepdim=True)

        s_lo = torch.full_like(z_top, float(n) ** (-1 / p))
        s_hi = z_top.clamp(max=1.0)
        s0 = (z_top / safe_norm(z, -1, p)).clamp(min=s_lo, max=s_hi)  # the radial rescaling
        xtol = 32 * eps * magnitude.amax(dim=-1, keepdim=True) * s_hi
        s, ok = bracketed_newton(f_df, s_lo, s_hi, s0, xtol=xtol, maxiter=100)
        if not ok:
            raise ConvergenceError(
                f"{self.name}.project: the search for the nearest point did not converge",
                residual=float(f_df(s)[0].abs().max()),
                iterations=100,
            )
        u, _ = others(s)
        y = _signum(x) * torch.where(top, s, torch.where(nonzero, u.exp(), 0.0))
        return (y * (self.radius / self._norm_p(y))).to(x.dtype)

    def _project_inside(self, x: Tensor) -> Tensor:
        """Nearest points (stationary points for p > 2) of rows with ||x||_p <= r.

        With the largest |x_i| mapped to 1, the largest |y_i| is s in [1, r / max|x|].
        """
        scale = x.abs().amax(dim=-1, keepdim=True)
        p = self.p
        a = x.abs() / scale  # max |a| = 1 in every row
        r = self.radius / scale
        top = torch.zeros_like(a, dtype=torch.bool).scatter_(
            -1, a.argmax(dim=-1, keepdim=True), True
        )
        eps = torch.finfo(x.dtype).eps
        s_lo, s_hi = torch.ones_like(r), r
        s0 = r / self._norm_p(a)  # the radial rescaling

        def others(s: Tensor) -> tuple[Tensor, Tensor, Tensor]:
            m = (1 - s) / s.pow(p - 1)
            t = self._coordinates(a, m, s)
            dh = 1 + m * (p - 1) * t.pow(p - 2)
            dt_dm = torch.where(t > 0, -t.pow(p - 1) / dh, torch.zeros_like(t))
            return m, t, dt_dm

        def g_dg(s: Tensor) -> tuple[Tensor, Tensor]:
            _, t, dt_dm = others(s)
            t = torch.where(top, s, t)
            dm_ds = -s.pow(1 - p) - (p - 1) * (1 - s) * s.pow(-p)
            g = t.pow(p).sum(-1, keepdim=True) - r.pow(p)
            rest = torch.where(top, 0.0, p * t.pow(p - 1) * dt_dm).sum(-1, keepdim=True)
            return g, p * s.pow(p - 1) + rest * dm_ds

        s, ok = bracketed_newton(g_dg, s_lo, s_hi, s0, xtol=64 * eps * s_hi, maxiter=200)
        if not ok:
            raise ConvergenceError(
                f"{self.name}.project: the search for the nearest point did not converge",
                residual=float(g_dg(s)[0].abs().max()),
                iterations=200,
            )
        _, t, _ = others(s)
        y = _signum(x) * torch.where(top, s, t)  # the nearest point over scale
        return y * (self.radius / self._norm_p(y))

    def _coordinates(self, a: Tensor, m: Tensor, s: Tensor) -> Tensor:
        """|y_i| = t_i solving t + m t^(p-1) = a_i on the branch through a_i at m = 0.

        Newton's method started where it converges monotonically: for p < 2 on
        u = t^(p-1) (u^(1/(p-1)) + m u = a is convex in u) from above; for
        p > 2 on t from t = a (convex for m >= 0, concave for m < 0).
        """
        p = self.p
        eps = torch.finfo(a.dtype).eps
        m, s = m.expand_as(a), s.expand_as(a)
        if p == 2:
            return a / (1 + m)
        if p < 2:
            q = 1 / (p - 1)
            hi = torch.where(m < 0, s, a).pow(p - 1)

            def f_df(u: Tensor) -> tuple[Tensor, Tensor]:
                return u.pow(q) + m * u - a, q * u.pow(q - 1) + m

            u, _ = bracketed_newton(f_df, torch.zeros_like(a), hi, hi, xtol=8 * eps * hi)
            return u.pow(q)
        t_crit = (1 / (m.abs() * (p - 1))).pow(1 / (p - 2))
        lo = torch.where(m < 0, a, torch.zeros_like(a))
        hi = torch.where(m < 0, torch.minimum(s, t_crit), a)

        def h_dh(t: Tensor) -> tuple[Tensor, Tensor]:
            return t + m * t.pow(p - 1) - a, 1 + m * (p - 1) * t.pow(p - 2)

        t, _ = bracketed_newton(h_dh, lo, hi.clamp(min=lo), a, xtol=8 * eps * hi)
        return t

    def _sample_point(self, shape: tuple[int, ...], draw: Draw) -> Tensor:
        """A Gaussian vector rescaled radially onto the sphere (dense: no zero coordinates).

        The nearest-point projection of a Gaussian would instead shrink small
        coordinates to nearly zero for p close to 1, where the sphere is sharply curved.
        """
        x = draw.normal(shape)
        return x * (self.radius / self._norm_p(x))

    # ------------------------------------------------------------------ SHAKE
    def shake(self, x: Tensor, y: Tensor) -> Tensor:
        """y + mu n(x) on M, mu per row by Newton's method on c(mu) (convex in mu)."""
        p = self.p
        n = self.normal(x)
        rp = self.radius**p
        tol = self.shake_tol if self.shake_tol is not None else solver_tol(x.dtype, x.shape[-1])

        # every iteration's z and its powers in the same two tensors (fresh memory each
        # time costs more, on a CPU, than the passes that fill it), except where autograd
        # records the iteration (it takes no out= arguments)
        kept = not (torch.is_grad_enabled() and (x.requires_grad or y.requires_grad))
        z_kept, work = (torch.empty_like(y), torch.empty_like(y)) if kept else (None, None)

        def powered(z: Tensor, exponent: float) -> Tensor:
            return torch.pow(torch.abs(z, **_out(work)), exponent, **_out(work))

        def residual(mu: Tensor) -> tuple[Tensor, Tensor]:
            z = torch.addcmul(y, mu, n, out=z_kept)
            return (powered(z, p).sum(-1, keepdim=True) - rp) / (p * rp), z

        def step(mu: Tensor, c: Tensor, z: Tensor) -> Tensor:
            dz = torch.copysign(powered(z, p - 1), z, **_out(work))  # n(z)
            return mu - c / (torch.mul(dz, n, **_out(work)).sum(-1, keepdim=True) / rp)

        mu = newton(
            residual,
            step,
            torch.zeros_like(y[..., :1]),
            tol=tol,
            maxiter=self.shake_maxiter,
            failure=f"{self.name}.shake: no multiplier along the normal at x puts y back on the "
            "Lp sphere (the step moved y too far from x); reduce the step size lr",
        )
        return y + mu * n

    def shape_error(self, shape: tuple[int, ...], name: str) -> str | None:
        return _vector_shape_error(self, shape, name)
