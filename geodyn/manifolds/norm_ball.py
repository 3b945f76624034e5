r"""The closed norm ball ||x||_2 <= r along the last dimension: an inequality set.

c(x) = (|x|^2 - r^2) / (2 r^2) <= 0 (the sphere's residual, negative inside).

* interior     every verb is that of flat space: P_x v = v, R_x(v) = x + v (then clipped)
* boundary     (|c(x)| <= atol) the tangent set is the cone {v : <x, v> <= 0};
               P_x v = v - x max(<x, v>, 0) / <x, x> removes only an outward component
* projection   the radial clip x min(1, r / |x|), the nearest point
* SHAKE        y if |y| <= r, else y + lambda x on the sphere |.| = r
* drift        the billiard flow: free flight, p <- p - 2 <p, n> n (n = x / r) at each wall hit
"""

from __future__ import annotations

import torch
from torch import Tensor

from .base import (
    ConvergenceError,
    Draw,
    FusedStep,
    Manifold,
    Scratch,
    _out,
    default_atol,
    fresh,
    momentum_sum,
)
from .sphere import _check_radius, _dot_rows, _vector_shape_error, safe_norm

__all__ = ["NormBall"]

def _sqnorm(x: Tensor) -> Tensor:
    return torch.linalg.vector_norm(x, dim=-1, keepdim=True).square()


class NormBall(Manifold):
    r"""The ball ||x||_2 <= radius over the last dimension (``is_inequality = True``).

    Contact model: :meth:`drift` is the billiard flow, free flight with an
    elastic reflection p <- p - 2 <p, n> n at the wall, which preserves the
    uniform law of x times the Gaussian law of p (so samplers hit their
    measure). At a boundary point ``proj_tangent`` and ``rattle`` remove the
    outward normal component of a velocity and keep an inward one (the tangent
    cone), and SHAKE puts a step that leaves the ball back on the sphere with a
    multiplier along the old point x: the projected-step model of optimizers.

    Args:
        radius: r > 0.
        boundary_atol: |c(x)| below which x counts as on the boundary
            (default :func:`default_atol` of the dtype).
    """

    ndim = 1
    name = "NormBall"
    fused_entrywise = True
    is_inequality = True
    linear_transport = False  # the tangent cone's projection is not linear
    project_is_nearest = True
    symmetries = ("orthogonal_last",)

    def __init__(self, radius: float = 1.0, boundary_atol: float | None = None) -> None:
        super().__init__()
        if boundary_atol is not None and not boundary_atol > 0:
            raise ValueError(f"boundary_atol must be positive or None, got {boundary_atol}")
        self.radius = _check_radius(radius)
        self.boundary_atol = boundary_atol

    def _params(self) -> tuple[object, ...]:
        return (self.radius, self.boundary_atol)

    def constraint(self, x: Tensor) -> Tensor:
        r2 = self.radius**2
        return (_sqnorm(x) - r2) / (2 * r2)

    def on_boundary(self, x: Tensor) -> Tensor:
        """Mask (..., 1): whether x lies on the sphere |x| = r up to ``boundary_atol``."""
        return self._touches(_sqnorm(x), x.dtype)

    def _outward(self, sq: Tensor, xv: Tensor, dtype: torch.dtype) -> Tensor:
        """The cone's coefficient max(<x, v>, 0) / |x|^2 at the wall rows, 0 inside, from
        sq = |x|^2 and xv = <x, v>: P_x v = v - coefficient x."""
        return torch.where(self._touches(sq, dtype), (xv / sq).clamp(min=0), 0.0)

    def _touches(self, sq: Tensor, dtype: torch.dtype) -> Tensor:
        """c(x) >= -atol, from sq = |x|^2: (sq - r^2) / (2 r^2) >= -atol."""
        atol = self.boundary_atol if self.boundary_atol is not None else default_atol(dtype)
        return sq >= self.radius**2 * (1 - 2 * atol)

    def project(self, x: Tensor) -> Tensor:
        """The radial clip x min(1, r/|x|): the nearest point of the ball."""
        self.check_shape(tuple(x.shape), "x")
        self.check_finite(x, "x")
        return x * (self.radius / safe_norm(x, -1)).clamp(max=1.0)

    def proj_tangent(self, x: Tensor, v: Tensor) -> Tensor:
        """v inside; at the boundary, v minus its outward normal component (the cone)."""
        sq = _sqnorm(x)
        return torch.addcmul(v, x, self._outward(sq, (x * v).sum(-1, keepdim=True), x.dtype),
                             value=-1)

    def fused_proj_tangent_(self, x: Tensor, v: Tensor) -> Tensor | None:
        r"""In place: $v \leftarrow v - x \max(\langle x,v\rangle, 0)/|x|^2$ on the rows at
        the wall, v unchanged inside. The checks are $|x|^2$, $\langle x,v\rangle$ (every
        row's: a NaN or Inf entry of x or v reaches them) and the coefficient. A subclass
        that overrides ``proj_tangent`` or ``rattle`` has none."""
        if not self._inherits(NormBall, "proj_tangent", "rattle"):
            return None
        sq, xv = _sqnorm(x), _dot_rows(x, v)
        c = self._outward(sq, xv, x.dtype)
        v.addcmul_(x, c, value=-1)
        return torch.cat((sq, xv, c), dim=-1)

    def retract(self, x: Tensor, v: Tensor) -> Tensor:
        y = x + v
        return y * (self.radius / safe_norm(y, -1)).clamp(max=1.0)

    def fused_momentum_step(
        self, x: Tensor, g: Tensor, old: Tensor | None, *, lr: float, momentum: float,
        dampening: float, scratch: Scratch = fresh,
    ) -> FusedStep | None:
        r"""RSGD's momentum step with the cone's projection as transport, in a few passes:
        $b = \mu b_{old} + (1 - \delta) P_x g$ ($P_x g$ first), $y = x - \eta b$,
        $x' = y \min(1, r/|y|)$ and $P_{x'} b$, with the row sums
        $\langle x, x\rangle, \langle x, g\rangle, |y|^2, \langle y, b\rangle$ (so
        $|x'|^2$ and $\langle x', b\rangle$ follow by the scale): the generic step to
        rounding. ``checks`` holds those sums, finite only if x, g and the buffer are;
        where $|y|^2$ overflows the generic step (with its scaled norm) runs. A subclass
        that overrides a verb of the step (``proj_tangent``, ``retract``, ``transp``,
        ``retr_transp``) has none.
        """
        if not self._inherits(NormBall, "proj_tangent", "retract", "transp", "retr_transp"):
            return None
        sq = _sqnorm(x)
        shape = tuple(x.shape)
        gx = _dot_rows(x, g, scratch("product", shape, x))
        cone = self._outward(sq, gx, x.dtype)
        if old is None:
            b = torch.addcmul(g, x, cone, value=-1)
        else:
            b = momentum_sum(old, g, momentum, dampening, scratch)
            b.addcmul_(x, cone, value=dampening - 1)
        y = torch.add(x, b, alpha=-lr, **_out(scratch("y", shape, x)))
        sy = _sqnorm(y)
        scale = sy.rsqrt().mul_(self.radius).clamp_(max=1.0)
        sq_new = sy * scale.square()
        yb = _dot_rows(y, b, scratch("product", shape, x)).mul_(scale)  # <x', b>
        outward = self._outward(sq_new, yb, x.dtype)
        checks = torch.cat((sq, gx, sy, yb), dim=-1)

        def write(x_out: Tensor | None, buf_out: Tensor | None) -> tuple[Tensor, Tensor]:
            x_new = torch.mul(y, scale, **_out(x_out))
            return x_new, torch.addcmul(b, x_new, outward, value=-1, **_out(buf_out))

        return FusedStep(checks, write)

    def shake(self, x: Tensor, y: Tensor) -> Tensor:
        """y if |y| <= r, else the root nearest zero of |y + lambda x| = r.

        With a = |x|^2, b = <x, y>, d = |y|^2 - r^2, the roots are (-b +- sqrt(disc)) / a,
        disc = b^2 - a d = a (r^2 - |y_perp|^2) (y_perp: y orthogonal to x, the form without
        cancellation); the one nearest zero is -d / (b + sign(b) sqrt(disc)). The result
        is rescaled onto |.| = r, which only removes the rounding of y + lambda x.
        """
        a = (x * x).sum(-1, keepdim=True)
        b = (x * y).sum(-1, keepdim=True)
        d = (y * y).sum(-1, keepdim=True) - self.radius**2
        outside = d > 0
        y_perp = y - x * (b / a)
        disc = a * (self.radius**2 - (y_perp * y_perp).sum(-1, keepdim=True))
        if bool((outside & ~(disc >= 0)).any()):  # NaN: |y|^2 overflowed
            worst = float(torch.where(outside, -disc / a.square(), 0.0).clamp(min=0).max())
            raise ConvergenceError(
                f"{self.name}.shake: no multiplier along x puts y back on the ball's boundary "
                "(the step moved y too far from x); reduce the step size lr",
                residual=worst,
                iterations=0,
            )
        root = disc.clamp(min=0).sqrt()
        z = y + x * (-d / (b + torch.where(b < 0, -root, root)))
        return torch.where(outside, z * (self.radius / safe_norm(z, -1)), y)

    def drift(
        self, x: Tensor, p: Tensor, h: float, *, rattle: bool = True
    ) -> tuple[Tensor, Tensor]:
        r"""Move for time h along p inside the ball, reflecting elastically at |x| = r.

        The first chord ends at the exit time t of |x + t p| = r, the positive root of
        a t^2 + 2 b t + c = 0 (a = |p|^2, b = <x, p>, c = |x|^2 - r^2), taken without
        cancellation; there p <- p - 2 <p, n> n with n = x / r. From then on the path is
        a billiard in a sphere: it stays in the plane of (n, p), every chord takes the
        same time tau = -2 <x, p> / |p|^2 and turns the point and its momentum by the
        same central angle theta = 2 asin(tau |p| / 2r). So k = ceil(left / tau) - 1 chords
        are one rotation by k theta in that plane, followed by a free flight for the time
        left over; a grazing path (tau -> 0) slides along the great circle, k theta ->
        |p| left / r. No iteration, exact for any number of wall hits.

        This is the exact billiard flow: volume preserving and reversible
        (drift(x', -p', h) = (x, -p)) with |p| conserved, so it keeps the uniform law of
        x in the ball times any isotropic law of p, the invariant measure of constrained
        Langevin dynamics with U = 0 (reflective HMC, Afshar and Domke 2015). The result
        is always admissible, so ``rattle`` is not needed and is ignored. Rows are
        independent.
        """
        r, r2 = self.radius, self.radius**2
        a = (p * p).sum(-1, keepdim=True)
        a_or_1 = torch.where(a > 0, a, torch.ones_like(a))  # p = 0: t = 0, no hit
        b = (x * p).sum(-1, keepdim=True)
        c = (x * x).sum(-1, keepdim=True) - r2
        t, hit = self._exit(a, b, c, h)
        free = x + h * p
        if not bool(hit.any()):
            return free * (r / safe_norm(free, -1)).clamp(max=1.0), p
        wall = x + t * p
        wall = wall * (r / safe_norm(wall, -1))
        q = p - (2 * (wall * p).sum(-1, keepdim=True) / r2) * wall  # reflected: inward
        left = (h - t).clamp(min=0)
        tau = (-2 * (wall * q).sum(-1, keepdim=True) / a_or_1).clamp(min=0)
        speed = a.sqrt()
        # whole chords (each ending in a reflection) before the last flight of (0, tau]
        whole = torch.ceil(left / torch.where(tau > 0, tau, 1.0)) - 1
        chords = torch.where(tau > 0, whole.clamp(min=0), 0.0)
        theta = 2 * torch.asin((tau * speed / (2 * r)).clamp(max=1.0))
        angle = torch.where(tau > 0, chords * theta, speed * left / r)
        flight = torch.where(tau > 0, left - chords * tau, torch.zeros_like(left))
        # the plane of the motion: e1 = n, e2 the unit tangential part of q (0 on a diameter)
        e1 = wall / r
        tangential = q - (q * e1).sum(-1, keepdim=True) * e1
        norm_t = tangential.norm(dim=-1, keepdim=True)
        e2 = tangential / torch.where(norm_t > 0, norm_t, torch.ones_like(norm_t))
        cos, sin = torch.cos(angle), torch.sin(angle)

        def rotate(v: Tensor) -> Tensor:
            v1, v2 = (v * e1).sum(-1, keepdim=True), (v * e2).sum(-1, keepdim=True)
            return v + (cos - 1) * (v1 * e1 + v2 * e2) + sin * (v1 * e2 - v2 * e1)

        q_end = rotate(q)
        y = rotate(wall) + flight * q_end
        y = y * (r / safe_norm(y, -1)).clamp(max=1.0)
        return torch.where(hit, y, free * (r / safe_norm(free, -1)).clamp(max=1.0)), torch.where(
            hit, q_end, p
        )

    @staticmethod
    def _exit(a: Tensor, b: Tensor, c: Tensor, h: float) -> tuple[Tensor, Tensor]:
        """The exit time t >= 0 of |x + t p| = r from a = |p|^2, b = <x, p>,
        c = |x|^2 - r^2 (without cancellation), and whether the wall comes within h."""
        a_or_1 = torch.where(a > 0, a, torch.ones_like(a))  # p = 0: t = 0, no hit
        root = (b * b - a * c).clamp(min=0).sqrt()
        t = torch.where(b > 0, -c / (b + root), (root - b) / a_or_1).clamp(min=0)
        # a hit: the wall comes first (a path from the wall that is not inward hits it at t = 0)
        return t, (a > 0) & (t < h) & ((t > 0) | (b > 0) | (c >= 0))

    def fused_drift(
        self, x: Tensor, p: Tensor, h: float, *, rattle: bool = True, project: bool = False,
        scratch: Scratch = fresh,
    ) -> FusedStep | None:
        r"""The free flight from the row sums $|x|^2, \langle x,p\rangle, |p|^2$: the exit
        times, and for the rows that meet no wall within h one write of
        $x' = (x + h p)\min(1, r/|x + h p|)$, with
        $|x + h p|^2 = |x|^2 + 2h\langle x,p\rangle + h^2|p|^2$, and p' = p (9 passes over
        memory against 25). The rows that meet the wall are gathered and reflected by
        :meth:`drift` before the write, then scattered into it. ``None`` with
        ``project`` (the ball's transport is not linear) and for a subclass that
        overrides ``drift``. The checks are the sums, the bound
        $\min(1, r/|x + h p|)(|x| + h|p|)$ of a free row's entries and the reflected
        rows' values."""
        if project or not self._inherits(NormBall, "drift"):
            return None
        product = scratch("product", tuple(x.shape), x)
        sxx, sxp, spp = _sqnorm(x), _dot_rows(x, p, product), _sqnorm(p)
        _, hit = self._exit(spp, sxp, sxx - self.radius**2, h)
        scale = (sxx + h * (2 * sxp + h * spp)).rsqrt().mul_(self.radius).clamp_(max=1.0)
        bound = (scale * (sxx.sqrt() + h * spp.sqrt())).masked_fill_(hit, 0.0)
        n = x.shape[-1]
        rows = hit.reshape(-1)
        checks = torch.cat((sxx, sxp, spp, bound), dim=-1).reshape(-1)
        reflected = None
        if bool(rows.any()):
            reflected = self.drift(x.reshape(-1, n)[rows], p.reshape(-1, n)[rows], h)
            checks = torch.cat((checks, *(v.reshape(-1) for v in reflected)))

        def write(x_out: Tensor | None, p_out: Tensor | None) -> tuple[Tensor, Tensor]:
            x_new = torch.add(x, p, alpha=h, **_out(x_out)).mul_(scale)
            p_new = p if p_out is p else p.clone() if p_out is None else p_out.copy_(p)
            if reflected is not None:
                x_new.view(-1, n)[rows] = reflected[0]
                p_new.view(-1, n)[rows] = reflected[1]
            return x_new, p_new

        return FusedStep(checks, write)

    def _sample_point(self, shape: tuple[int, ...], draw: Draw) -> Tensor:
        """Uniform in the ball: a uniform direction times r U^(1/n)."""
        x = draw.normal(shape)
        u = draw.uniform((*shape[:-1], 1))
        return x * (self.radius * u.pow(1 / shape[-1]) / x.norm(dim=-1, keepdim=True))

    def shape_error(self, shape: tuple[int, ...], name: str) -> str | None:
        return _vector_shape_error(self, shape, name)
