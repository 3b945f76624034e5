r"""The circle lift: each weight q bounded, |q| <= r, through (q, xi) with q^2 + xi^2 = r^2.

A point is a batch of circles of radius r in the plane (q, xi) (last dimension 2).
The drift is the exact rotation of (q, xi) by the angle |v| / r:
R_z(v) = cos(|v|/r) z + r sin(|v|/r) v / |v| for v tangent, and ``retr_transp``
rotates the velocity with the point.
"""

from __future__ import annotations

import torch
from torch import Tensor

from .norm_ball import scaled_norm
from .sphere import Sphere

__all__ = ["CircleLift"]


class CircleLift(Sphere):
    r"""Pairs (q, xi) on the circle q^2 + xi^2 = radius^2, one per weight (last dim 2).

    ``geodesic_drift = True``: ``retract`` is the exponential map (an exact
    rotation, renormalised to remove rounding drift), so integrators drift
    with ``retr_transp`` instead of SHAKE. Use :meth:`lift` to turn weights
    into points and :meth:`weight` to read them back.
    """

    name = "CircleLift"
    geodesic_drift = True

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

    @staticmethod
    def weight(z: Tensor) -> Tensor:
        """The weights q = z[..., 0]."""
        return z[..., 0]

    def retract(self, x: Tensor, v: Tensor) -> Tensor:
        """The rotation exp_x(u) = cos(|u|/r) x + r sin(|u|/r) u/|u|, u = P_x v, renormalised.

        |u| is taken as m |u/m| (m = max |u_i|), so a huge step still rotates x
        instead of overflowing to a NaN.
        """
        u = self.proj_tangent(x, v)
        norm_u = scaled_norm(u)
        theta = norm_u / self.radius
        e = torch.where(norm_u > 0, u / norm_u.clamp_min(torch.finfo(u.dtype).tiny), 0.0)
        y = torch.cos(theta) * x + self.radius * torch.sin(theta) * e
        return y * (self.radius / scaled_norm(y))

    def retr_transp(self, x: Tensor, u: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
        """Rotate x by u and carry v along the same rotation."""
        u = self.proj_tangent(x, u)
        return self.retract(x, u), self._transp_geodesic(x, u, v)

    def shape_error(self, shape: tuple[int, ...], name: str) -> str | None:
        if len(shape) < 1 or shape[-1] != 2:
            return (
                f"{name} has shape {tuple(shape)} but {self.name} needs (..., 2): the pair "
                "(q, xi) for each weight; build points with CircleLift(r).lift(q)"
            )
        return None
