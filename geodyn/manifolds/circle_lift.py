r"""The circle lift: each weight q bounded, |q| <= r, through (q, xi) with q^2 + xi^2 = r^2.

A point is a batch of circles of radius r in the plane (q, xi) (last dimension 2),
computed with as the complex number z = q + i xi. The tangent space at z is the line
i z R; P_z v = i z t with t = Im(conj(z) v) / |z|^2. The drift is the exact rotation
R_z(v) = z e^{i t} (the geodesic: the angle |P_z v| / r = |t|), and ``retr_transp``
rotates the velocity with the point (parallel transport on a circle).
"""

from __future__ import annotations

import torch
from torch import Tensor

from .base import FusedStep
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
        """(q, sqrt(r^2 - q^2)) stacked on a new last dimension; needs |q| <= r."""
        self.check_finite(q, "q")
        if bool((q.abs() > self.radius).any()):
            worst = float(q.abs().max())
            raise ValueError(
                f"q has |q| up to {worst:.4g} > radius {self.radius}: the circle lift bounds each "
                f"weight by the radius; clamp it first, q.clamp(-{self.radius}, {self.radius})"
            )
        xi = (self.radius**2 - q * q).clamp(min=0).sqrt()
        return torch.stack([q, xi], dim=-1)

    def weight(self, z: Tensor) -> Tensor:
        """The weights q = z[..., 0], as a contiguous copy: a layer's matrix products take
        it as it is, where a strided view would be copied by each of them, forward and
        backward."""
        return z[..., 0].contiguous()

    # A pair (q, xi) is the complex number z = q + i xi; T_z M = {i z t : t real}. Every
    # verb below is elementwise in z (no reduction over a length-2 axis).
    def _angle(self, x: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
        """z and t = Im(conj(z) v) / |z|^2, so P_z v = i z t and |P_z v| / r = |t| on M."""
        z, w = _complex(x), _complex(v)
        return z, (z.conj() * w).imag / _abs2(z)

    def proj_tangent(self, x: Tensor, v: Tensor) -> Tensor:
        """P_z v = i z Im(conj(z) v) / |z|^2."""
        z, t = self._angle(x, v)
        return (torch.view_as_real(z * 1j) * t.unsqueeze(-1)).to(x.dtype)

    def expmap(self, x: Tensor, u: Tensor) -> Tensor:
        """The rotation z e^{i t} by the angle t of the tangent part i z t of u."""
        z, t = self._angle(x, u)
        return torch.view_as_real(z * _turn(t)).to(x.dtype)

    def retract(self, x: Tensor, v: Tensor) -> Tensor:
        """The rotation exp_z(P_z v) = z e^{i t}, renormalised to radius r."""
        z, t = self._angle(x, v)
        return self._on_circle(z * _turn(t)).to(x.dtype)

    def retr_transp(self, x: Tensor, u: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
        """Rotate x by the angle of u and carry v along the same rotation (parallel transport)."""
        z, t = self._angle(x, u)
        turn = _turn(t)
        moved = torch.view_as_real(_complex(v) * turn)
        return self._on_circle(z * turn).to(x.dtype), moved.to(v.dtype)

    def fused_momentum_step(
        self, x: Tensor, g: Tensor, old: Tensor | None, *, lr: float, momentum: float,
        dampening: float,
    ) -> FusedStep | None:
        r"""The rotation-transport momentum step, elementwise on the pairs. A tangent
        vector at z is $i z \beta$ with one real coordinate
        $\beta = \mathrm{Im}(\bar z b) / |z|^2$, so the buffer
        $b = \mu b_{old} + (1 - \delta)\, i z t_g$ ($i z t_g$ on the first step) has
        $\beta = \mu \beta_{old} + (1 - \delta) t_g$, with
        $t_g = \mathrm{Im}(\bar z g) / |z|^2$. Then $w = z e^{-i \eta \beta}$,
        $z' = r\, w / |w|$ and the buffer carried along, $i w \beta$: the generic step
        (projection, rotation of point and buffer) on the coordinate, with no complex
        temporaries. ``checks`` is $\sum \beta + \sum r/|w|$ over the last weight axis,
        finite only if x, g and the buffer are (a sum that overflows is not finite either,
        and sends the step to the generic path). Half precisions have no fast path.
        """
        if x.dtype not in (torch.float32, torch.float64):
            return None
        q, xi = x[..., 0], x[..., 1]
        norm2 = torch.mul(q, q).addcmul_(xi, xi)
        beta = torch.mul(q, g[..., 1]).addcmul_(xi, g[..., 0], value=-1)  # |z|^2 t_g
        if old is not None:
            beta.mul_(1 - dampening).addcmul_(q, old[..., 1], value=momentum)
            beta.addcmul_(xi, old[..., 0], value=-momentum)
        beta.div_(norm2)
        sin = torch.mul(beta, -lr)
        cos = torch.cos(sin)
        sin.sin_()
        w_q = torch.mul(q, cos).addcmul_(xi, sin, value=-1)
        w_xi = cos.mul_(xi).addcmul_(q, sin)
        scale = norm2.copy_(w_q).mul_(w_q).addcmul_(w_xi, w_xi).rsqrt_().mul_(self.radius)
        checks = beta.sum(-1).add_(scale.sum(-1))

        def write(x_out: Tensor | None, buf_out: Tensor | None) -> tuple[Tensor, Tensor]:
            # into new tensors by stacking (no writes through views: compilable), else
            # into the given ones pair by pair; the buffer first (x_out may be x)
            if buf_out is None:
                buf_out = torch.stack((-w_xi * beta, w_q * beta), dim=-1)
            else:
                torch.mul(w_xi, beta, out=buf_out[..., 0]).neg_()
                torch.mul(w_q, beta, out=buf_out[..., 1])
            if x_out is None:
                return torch.stack((w_q * scale, w_xi * scale), dim=-1), buf_out
            torch.mul(w_q, scale, out=x_out[..., 0])
            torch.mul(w_xi, scale, out=x_out[..., 1])
            return x_out, buf_out

        return FusedStep(checks, write)

    def _on_circle(self, y: Tensor) -> Tensor:
        """y r / |y| as (real, imaginary) pairs: the rounding of a rotation removed."""
        # out of place: autograd keeps rsqrt's output for the backward pass
        return torch.view_as_real(y) * (self.radius * _abs2(y).rsqrt()).unsqueeze(-1)

    def shape_error(self, shape: tuple[int, ...], name: str) -> str | None:
        if len(shape) < 1 or shape[-1] != 2:
            return (
                f"{name} has shape {tuple(shape)} but {self.name} needs (..., 2): the pair "
                "(q, xi) for each weight; build points with CircleLift(r).lift(q)"
            )
        return None


def _complex(x: Tensor) -> Tensor:
    """The pairs of the last dimension as complex numbers (a view where the layout allows).

    Half precisions are computed in float32; the verbs cast their results back.
    """
    if x.dtype not in (torch.float32, torch.float64):
        x = x.float()
    viewable = x.is_contiguous() and x.storage_offset() % 2 == 0
    return torch.view_as_complex(x if viewable else x.clone(memory_format=torch.contiguous_format))


def _abs2(z: Tensor) -> Tensor:
    """|z|^2 = Re(z conj(z)), elementwise (faster than z.abs(), which guards overflow)."""
    return (z * z.conj()).real


def _turn(t: Tensor) -> Tensor:
    """e^{i t}."""
    return torch.complex(torch.cos(t), torch.sin(t))
