r"""The closed norm ball ||x||_2 <= r along the last dimension: an inequality set.

c(x) = (|x|^2 - r^2) / (2 r^2) <= 0 (the sphere's residual, negative inside).

* interior     every verb is that of flat space: P_x v = v, R_x(v) = x + v (then clipped)
* boundary     (|c(x)| <= atol) the tangent set is the cone {v : <x, v> <= 0};
               P_x v = v - x max(<x, v>, 0) / <x, x> removes only an outward component
* projection   the radial clip x min(1, r / |x|), the nearest point
* SHAKE        y if |y| <= r, else y + lambda x on the sphere |.| = r
"""

from __future__ import annotations

import torch
from torch import Tensor

from .base import ConvergenceError, Manifold, default_atol
from .sphere import _check_radius, safe_norm

__all__ = ["NormBall"]


def _sqnorm(x: Tensor) -> Tensor:
    return torch.linalg.vector_norm(x, dim=-1, keepdim=True).square()


class NormBall(Manifold):
    r"""The ball ||x||_2 <= radius over the last dimension (``is_inequality = True``).

    Contact model: a point moves freely inside; at the boundary, ``proj_tangent``
    and ``rattle`` remove the outward normal component of a velocity and keep
    an inward one, so a trajectory slides along the sphere or leaves it inward
    (an inelastic, non-sticky wall). SHAKE puts a step that leaves the ball
    back on the sphere with a multiplier along the old point x.

    Args:
        radius: r > 0.
        boundary_atol: |c(x)| below which x counts as on the boundary
            (default :func:`default_atol` of the dtype).
    """

    ndim = 1
    name = "NormBall"
    is_inequality = True
    linear_transport = False  # the tangent cone's projection is not linear
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
        outward = ((x * v).sum(-1, keepdim=True) / sq).clamp(min=0)
        return torch.addcmul(v, x, torch.where(self._touches(sq, x.dtype), outward, 0.0), value=-1)

    def retract(self, x: Tensor, v: Tensor) -> Tensor:
        y = x + v
        return y * (self.radius / safe_norm(y, -1)).clamp(max=1.0)

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

    def random_point(
        self,
        *shape: int,
        dtype: torch.dtype | None = None,
        device: torch.device | str | None = None,
        generator: torch.Generator | None = None,
    ) -> Tensor:
        """Uniform in the ball: a uniform direction times r U^(1/n)."""
        self.check_shape(shape, "shape")
        x = torch.randn(shape, dtype=dtype, device=device, generator=generator)
        u = torch.rand((*shape[:-1], 1), dtype=x.dtype, device=device, generator=generator)
        return x * (self.radius * u.pow(1 / shape[-1]) / x.norm(dim=-1, keepdim=True))

    def shape_error(self, shape: tuple[int, ...], name: str) -> str | None:
        if len(shape) < 1 or shape[-1] < 1:
            return (
                f"{name} has shape {tuple(shape)} but {self.name} needs (..., n) with n >= 1 "
                "(a single vector is shape (n,))"
            )
        return None
