r"""The circle lift: each weight q bounded, |q| <= r, through (q, xi) with q^2 + xi^2 = r^2.

A point is a batch of circles of radius r in the plane (q, xi) (last dimension 2): the
complex number z = q + i xi, computed on its real halves. The tangent space at z is the
line i z R; P_z v = i z t with t = Im(conj(z) v) / |z|^2. The drift is the exact rotation
R_z(v) = z e^{i t} (the geodesic: the angle |P_z v| / r = |t|), and ``retr_transp``
rotates the velocity with the point (parallel transport on a circle).

Layout: a point of shape (..., 2) is stored *planar* where the lift makes it
(:meth:`CircleLift.lift`, :meth:`CircleLift.random_point`): all q first, then all xi,
so that each half ``z[..., 0]``, ``z[..., 1]`` is a contiguous tensor and every verb
runs on contiguous memory. The pair axis is last in shape and first in memory (the
strides of ``torch.stack((q, xi)).movedim(0, -1)``). Every verb takes either layout
and returns its pairs in the layout of its point x (a moved vector in that of the
vector).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

from .base import Draw, FusedStep, Scratch, _out, fresh
from .sphere import Sphere

__all__ = ["CircleLift"]


class CircleLift(Sphere):
    r"""Pairs (q, xi) on the circle q^2 + xi^2 = radius^2, one per weight (last dim 2).

    ``retract`` is the exponential map (an exact rotation, renormalised to remove
    rounding drift), and :meth:`drift` is that rotation with the momentum carried
    along (``linear_transport = False``: a rotation, not a projection). A lifted
    manifold (``lifted = True``, ``bound`` = radius): use :meth:`lift` to turn weights
    into points and :meth:`weight` to read them back.
    """

    name = "CircleLift"
    linear_transport = False
    lifted = True

    @property
    def bound(self) -> float:
        """Every weight obeys |q| <= radius."""
        return self.radius

    def drift(
        self, x: Tensor, p: Tensor, h: float, *, rattle: bool = True
    ) -> tuple[Tensor, Tensor]:
        """The exact flow: rotate x by the angle of h p and p with it (``rattle`` is moot:
        the rotated momentum is tangent)."""
        return self.retr_transp(x, p * h, p)

    def lift(self, q: Tensor) -> Tensor:
        """(q, sqrt(r^2 - q^2)) on a new last dimension, stored planar; needs |q| <= r."""
        self.check_finite(q, "q")
        if bool((q.abs() > self.radius).any()):
            worst = float(q.abs().max())
            raise ValueError(
                f"q has |q| up to {worst:.4g} > radius {self.radius}: the circle lift bounds each "
                f"weight by the radius; clamp it first, q.clamp(-{self.radius}, {self.radius})"
            )
        xi = (self.radius**2 - q * q).clamp(min=0).sqrt()
        return _pairs(q, xi, planar=True)

    def weight(self, z: Tensor) -> Tensor:
        """The weights q = z[..., 0] as a contiguous copy: a layer's matrix products take
        it as it is, where a strided view would be copied by each of them, forward and
        backward, and a write into it leaves z as it is. Its gradient comes back as pairs
        (dL/dq, 0) laid out as z, so that the parameter's gradient has its strides."""
        return _Weight.apply(z)

    def _sample_point(self, shape: tuple[int, ...], draw: Draw) -> Tensor:
        """Uniform on each circle (normalised Gaussian pairs), stored planar."""
        return _planar(super()._sample_point(shape, draw))

    # A pair (q, xi) is the complex number z = q + i xi; T_z M = {i z t : t real}. Every
    # verb below is elementwise in z, written on the real halves (no complex temporaries,
    # no reduction over a length-2 axis).
    def _coordinate(self, x: Tensor, v: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """q, xi and t = Im(conj(z) v) / |z|^2, so P_z v = i z t and |P_z v| / r = |t| on M."""
        q, xi = _halves(x)
        v_q, v_xi = _halves(v)
        t = torch.addcmul(q * v_xi, xi, v_q, value=-1) / torch.addcmul(q * q, xi, xi)
        return q, xi, t

    def proj_tangent(self, x: Tensor, v: Tensor) -> Tensor:
        """P_z v = i z Im(conj(z) v) / |z|^2."""
        q, xi, t = self._coordinate(x, v)
        return _pairs(-xi * t, q * t, _is_planar(x)).to(x.dtype)

    def expmap(self, x: Tensor, u: Tensor) -> Tensor:
        """The rotation z e^{i t} by the angle t of the tangent part i z t of u."""
        q, xi, t = self._coordinate(x, u)
        return _pairs(*_rotate(q, xi, torch.cos(t), torch.sin(t)), _is_planar(x)).to(x.dtype)

    def retract(self, x: Tensor, v: Tensor) -> Tensor:
        """The rotation exp_z(P_z v) = z e^{i t}, renormalised to radius r."""
        q, xi, t = self._coordinate(x, v)
        rotated = _rotate(q, xi, torch.cos(t), torch.sin(t))
        return self._on_circle(*rotated, _is_planar(x)).to(x.dtype)

    def retr_transp(self, x: Tensor, u: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
        """Rotate x by the angle of u and carry v along the same rotation (parallel transport)."""
        q, xi, t = self._coordinate(x, u)
        cos, sin = torch.cos(t), torch.sin(t)
        moved = _pairs(*_rotate(*_halves(v), cos, sin), _is_planar(v)).to(v.dtype)
        return self._on_circle(*_rotate(q, xi, cos, sin), _is_planar(x)).to(x.dtype), moved

    def fused_momentum_step(
        self, x: Tensor, g: Tensor, old: Tensor | None, *, lr: float, momentum: float,
        dampening: float, scratch: Scratch = fresh,
    ) -> FusedStep | None:
        r"""The rotation-transport momentum step, elementwise on the pairs, on the
        buffer's coordinates: $b = z(\nu + i \beta)$ with
        $\beta = \mathrm{Im}(\bar z b) / |z|^2$ (tangent) and
        $\nu = \mathrm{Re}(\bar z b) / |z|^2$ (normal: rounding, or a buffer stored in
        half precision). The buffer $b = \mu b_{old} + (1 - \delta)\, i z t_g$
        ($i z t_g$ on the first step), $t_g = \mathrm{Im}(\bar z g) / |z|^2$, has
        $\beta = \mu \beta_{old} + (1 - \delta) t_g$ and $\nu = \mu \nu_{old}$. Then
        $w = z e^{-i \eta \beta}$, $z' = r\, w / |w|$ and the buffer carried along,
        $w(\nu + i \beta)$: the generic step (projection, rotation of point and buffer)
        with no complex temporaries. ``checks`` is $\sum \beta + \sum \nu + \sum r/|w|$
        over the last weight axis, finite only if x, g and the buffer are (a sum that
        overflows is not finite either, and sends the step to the generic path). Half
        precisions, and a subclass that overrides a verb of the step (``proj_tangent``,
        ``retr_transp``), have no fast path. Its temporaries (the pair-sized
        $1/|z|^2$, $\beta$, $\nu$, the sine and the cosine, $\mathrm{Re}(w)$) take
        their memory from ``scratch``.
        """
        if x.dtype not in (torch.float32, torch.float64) or not self._inherits(
            CircleLift, "proj_tangent", "retr_transp"
        ):
            return None
        q, xi = x[..., 0], x[..., 1]
        shape = tuple(q.shape)

        def out(name: str) -> dict[str, Tensor]:
            return _out(scratch(name, shape, x))

        inverse = torch.mul(q, q, **out("inverse")).addcmul_(xi, xi).reciprocal_()
        beta = torch.mul(q, g[..., 1], **out("beta")).addcmul_(xi, g[..., 0], value=-1)
        nu = None  # beta is |z|^2 t_g so far
        if old is not None:
            if dampening:
                beta.mul_(1 - dampening)
            beta.addcmul_(q, old[..., 1], value=momentum).addcmul_(xi, old[..., 0], value=-momentum)
            nu = torch.mul(q, old[..., 0], **out("nu")).addcmul_(xi, old[..., 1]).mul_(inverse)
            nu.mul_(momentum)
        beta.mul_(inverse)
        sin = torch.mul(beta, -lr, **out("sin"))
        cos = torch.cos(sin, **out("cos"))
        sin.sin_()
        w_q = torch.mul(q, cos, **out("w_q")).addcmul_(xi, sin, value=-1)
        w_xi = cos.mul_(xi).addcmul_(q, sin)
        scale = torch.mul(w_q, w_q, out=inverse).addcmul_(w_xi, w_xi).rsqrt_().mul_(self.radius)
        checks = beta.sum(-1).add_(scale.sum(-1))
        if nu is not None:
            checks.add_(nu.sum(-1))

        def write(x_out: Tensor | None, buf_out: Tensor | None) -> tuple[Tensor, Tensor]:
            # into new tensors by stacking (no writes through views: compilable), else
            # into the given ones pair by pair (buf_out may be old and x_out x: the
            # write reads neither)
            if buf_out is None:
                b_q, b_xi = -w_xi * beta, w_q * beta
                if nu is not None:
                    b_q, b_xi = b_q + w_q * nu, b_xi + w_xi * nu
                buf_out = _pairs(b_q, b_xi, _is_planar(x))
            elif nu is None:
                torch.mul(w_xi, beta, out=buf_out[..., 0]).neg_()
                torch.mul(w_q, beta, out=buf_out[..., 1])
            else:
                torch.mul(w_q, nu, out=buf_out[..., 0]).addcmul_(w_xi, beta, value=-1)
                torch.mul(w_xi, nu, out=buf_out[..., 1]).addcmul_(w_q, beta)
            if x_out is None:
                return _pairs(w_q * scale, w_xi * scale, _is_planar(x)), buf_out
            torch.mul(w_q, scale, out=x_out[..., 0])
            torch.mul(w_xi, scale, out=x_out[..., 1])
            return x_out, buf_out

        return FusedStep(checks, write)

    def fused_proj_tangent_(self, x: Tensor, v: Tensor) -> Tensor | None:
        r"""$v \leftarrow i z t$, $t = \mathrm{Im}(\bar z v) / |z|^2$, pair by pair in place;
        the checks are t's sums over the last weight axis (a NaN or Inf entry of x or v,
        or a zero pair, reaches them). Half precisions, and a subclass that overrides
        ``proj_tangent`` or ``rattle``, have none."""
        if not self._elementwise(x) or not self._inherits(CircleLift, "proj_tangent", "rattle"):
            return None
        (q, xi), (v_q, v_xi) = _halves(x), _halves(v)
        t = torch.mul(q, v_xi).addcmul_(xi, v_q, value=-1).div_(torch.addcmul(q * q, xi, xi))
        torch.mul(xi, t, out=v_q).neg_()
        torch.mul(q, t, out=v_xi)
        return t.sum(-1)

    def fused_put_back(self, x: Tensor, y: Tensor, vectors: Sequence[Tensor]) -> Tensor | None:
        r"""In place, pair by pair: $y \leftarrow r\, w / |w|$ with $w = z e^{i t}$, the
        retraction along $P_z(y - z) = i z t$, $t = \mathrm{Im}(\bar z y) / |z|^2$ (as
        $\mathrm{Im}(\bar z z) = 0$), then each vector projected onto the tangent line
        at the new y (:meth:`transp`). The checks are the sums of t and of $r/|w|$ over
        the last weight axis and the projections' own. Half precisions, and a subclass
        that overrides ``proj_tangent``, ``retract``, ``transp`` or ``rattle``, have
        none."""
        if not self._elementwise(x) or not self._inherits(
            CircleLift, "proj_tangent", "retract", "transp", "rattle"
        ):
            return None
        (q, xi), (y_q, y_xi) = _halves(x), _halves(y)
        inverse = torch.addcmul(q * q, xi, xi).reciprocal_()
        sin = torch.mul(q, y_xi).addcmul_(xi, y_q, value=-1).mul_(inverse)
        checks = sin.sum(-1)
        cos = torch.cos(sin)
        sin.sin_()
        torch.mul(q, cos, out=y_q).addcmul_(xi, sin, value=-1)
        torch.mul(xi, cos, out=y_xi).addcmul_(q, sin)
        scale = torch.mul(y_q, y_q, out=inverse).addcmul_(y_xi, y_xi).rsqrt_().mul_(self.radius)
        y_q.mul_(scale)
        y_xi.mul_(scale)
        moved = [self.fused_proj_tangent_(y, v) for v in vectors]
        sums = [checks, scale.sum(-1), *moved]
        return torch.cat([c.reshape(-1) for c in sums])  # type: ignore[union-attr]

    def fused_drift(
        self, x: Tensor, p: Tensor, h: float, *, rattle: bool = True, project: bool = False,
        scratch: Scratch = fresh,
    ) -> FusedStep | None:
        r""":meth:`drift` pair by pair: with $t = \mathrm{Im}(\bar z p) / |z|^2$,
        $w = z e^{i h t}$, $z' = r\, w / |w|$ and $p' = p\, e^{i h t}$ (``rattle`` is moot:
        the rotation carries a tangent p to a tangent p'). The checks are the sums of t and
        of $r/|w|$ over the last weight axis. Its temporaries (the pair-sized $1/|z|^2$, t
        and its sine, the cosine, w and the q half of p') take their memory from
        ``scratch``. None with ``project`` (the rotation is not a
        linear transport: no caller leaves it a projection), for half precisions and for
        a subclass that overrides ``drift`` or ``retr_transp``."""
        if project or not self._elementwise(x) or not self._inherits(
            CircleLift, "drift", "retr_transp"
        ):
            return None
        (q, xi), (p_q, p_xi) = _halves(x), _halves(p)
        shape = tuple(q.shape)

        def out(name: str) -> dict[str, Tensor]:
            return _out(scratch(name, shape, x))

        inverse = torch.mul(q, q, **out("inverse")).addcmul_(xi, xi).reciprocal_()
        sin = torch.mul(q, p_xi, **out("sin")).addcmul_(xi, p_q, value=-1)
        t = sin.mul_(inverse)
        checks = t.sum(-1)
        cos = torch.cos(t.mul_(h), **out("cos"))
        sin = t.sin_()
        w_q = torch.mul(q, cos, **out("w_q")).addcmul_(xi, sin, value=-1)
        w_xi = torch.mul(xi, cos, **out("w_xi")).addcmul_(q, sin)
        scale = torch.mul(w_q, w_q, out=inverse).addcmul_(w_xi, w_xi).rsqrt_().mul_(self.radius)
        checks.add_(scale.sum(-1))
        planar = _is_planar(x)

        def write(x_out: Tensor | None, p_out: Tensor | None) -> tuple[Tensor, Tensor]:
            a = torch.mul(p_q, cos, **out("a")).addcmul_(p_xi, sin, value=-1)
            if p_out is None:
                p_new = _pairs(a, torch.mul(p_xi, cos).addcmul_(p_q, sin), _is_planar(p))
            else:  # p_out may be p: its xi half is written before its q half, read first
                p_new = p_out
                torch.mul(p_xi, cos, out=p_new[..., 1]).addcmul_(p_q, sin)
                p_new[..., 0].copy_(a)
            if x_out is None:
                return _pairs(w_q * scale, w_xi * scale, planar), p_new
            torch.mul(w_q, scale, out=x_out[..., 0])
            torch.mul(w_xi, scale, out=x_out[..., 1])
            return x_out, p_new

        return FusedStep(checks, write)

    def _elementwise(self, x: Tensor) -> bool:
        """Whether the elementwise fast paths apply to x: float32 or float64."""
        return x.dtype in (torch.float32, torch.float64)

    def _on_circle(self, a: Tensor, b: Tensor, planar: bool) -> Tensor:
        """The pairs r (a, b) / |(a, b)|: the rounding of a rotation removed."""
        scale = self.radius * torch.addcmul(a * a, b, b).rsqrt()
        return _pairs(a * scale, b * scale, planar)

    def shape_error(self, shape: tuple[int, ...], name: str) -> str | None:
        if len(shape) < 1 or shape[-1] != 2:
            return (
                f"{name} has shape {tuple(shape)} but {self.name} needs (..., 2): the pair "
                "(q, xi) for each weight; build points with CircleLift(r).lift(q)"
            )
        return None


def _halves(x: Tensor) -> tuple[Tensor, Tensor]:
    """The two halves x[..., 0], x[..., 1] (views); half precisions are computed in
    float32, and the verbs cast their results back."""
    if x.dtype not in (torch.float32, torch.float64):
        x = x.float()
    return x[..., 0], x[..., 1]


def _is_planar(z: Tensor) -> bool:
    """Whether the pairs z (..., 2) are stored planar: each half contiguous, q before xi."""
    return z.dim() > 1 and z.movedim(-1, 0).is_contiguous()


def _planar(z: Tensor) -> Tensor:
    """The pairs z stored planar (z itself where they are)."""
    return z.movedim(-1, 0).contiguous().movedim(0, -1)


def _pairs(a: Tensor, b: Tensor, planar: bool) -> Tensor:
    """The pairs (a, b) on a new last dimension, stored planar or interleaved."""
    if planar:
        return torch.stack((a, b)).movedim(0, -1)
    return torch.stack((a, b), dim=-1)


class _Weight(torch.autograd.Function):
    """q = z[..., 0] as a new contiguous tensor (never a view: a write into the weight must
    not move z off the circle); the gradient (dL/dq, 0) comes back laid out as z."""

    generate_vmap_rule = True

    @staticmethod
    def forward(z: Tensor) -> Tensor:  # type: ignore[override]
        return z[..., 0].clone(memory_format=torch.contiguous_format)

    @staticmethod
    def setup_context(ctx: Any, inputs: tuple[Tensor], output: Tensor) -> None:
        ctx.planar = _is_planar(inputs[0])

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> Tensor:  # type: ignore[override]
        return _pairs(grad, torch.zeros_like(grad), ctx.planar)

    @staticmethod
    def jvp(ctx: Any, z_t: Tensor) -> Tensor:  # type: ignore[override]
        return z_t[..., 0].clone(memory_format=torch.contiguous_format)


def _rotate(a: Tensor, b: Tensor, cos: Tensor, sin: Tensor) -> tuple[Tensor, Tensor]:
    """(a + i b) e^{i t} as its halves, given cos t and sin t."""
    return torch.addcmul(a * cos, b, sin, value=-1), torch.addcmul(b * cos, a, sin)
