"""The unconstrained space R^n: every verb is the identity of flat space."""

from __future__ import annotations

from torch import Tensor

from .base import Draw, Manifold

__all__ = ["Euclidean"]


class Euclidean(Manifold):
    """R^n with no constraint (``ndim = 0``: every entry is its own point).

    c(x) is empty, T_x M = R^n, R_x(v) = x + v and SHAKE returns y unchanged.
    """

    ndim = 0
    name = "Euclidean"
    reversible = True
    project_is_nearest = True

    def constraint(self, x: Tensor) -> Tensor:
        return x.new_zeros((*x.shape, 0))

    def project(self, x: Tensor) -> Tensor:
        self.check_finite(x, "x")
        return x.clone()

    def proj_tangent(self, x: Tensor, v: Tensor) -> Tensor:
        return v

    def retract(self, x: Tensor, v: Tensor) -> Tensor:
        return x + v

    def expmap(self, x: Tensor, u: Tensor) -> Tensor:
        return x + u

    def shake(self, x: Tensor, y: Tensor) -> Tensor:
        return y

    def _sample_point(self, shape: tuple[int, ...], draw: Draw) -> Tensor:
        return draw.normal(shape)
