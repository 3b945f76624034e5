r"""A manifold seen through a reshape: conv kernels as (out, in * kh * kw) matrices.

``Reshaped(M, shape, view_shape)`` is the set {x of shape ``shape`` : view(x) in M},
where view is a reshape to ``view_shape`` (same number of entries). Because a
reshape is a linear isometry of the ambient space, every verb commutes with it:

$$ P^{\mathrm{R}}_x v = \mathrm{view}^{-1}\big(P^M_{\mathrm{view}(x)}\,\mathrm{view}(v)\big), $$

and likewise for ``project``, ``retract``, ``shake``, ``rattle`` and the transport.
"""

from __future__ import annotations

import math
from typing import Any

from torch import Tensor

from .base import Draw, Manifold

__all__ = ["Reshaped"]


class Reshaped(Manifold):
    """The manifold ``base`` acting on tensors of ``shape`` through a reshape to ``view_shape``.

    The trailing ``len(shape)`` dimensions form one point; leading dimensions are a batch.

    Args:
        base: the geodyn manifold on the reshaped view (e.g. ``Stiefel()`` on (out, fan_in)).
        shape: the stored point shape, e.g. a conv kernel (out, in, kh, kw).
        view_shape: the shape ``base`` sees, e.g. (out, in * kh * kw).
    """

    name = "Reshaped"

    def __init__(self, base: Manifold, shape: tuple[int, ...], view_shape: tuple[int, ...]):
        super().__init__()
        if not isinstance(base, Manifold):
            raise ValueError(f"base must be a geodyn Manifold, got {type(base).__name__}")
        shape, view_shape = tuple(int(s) for s in shape), tuple(int(s) for s in view_shape)
        if math.prod(shape) != math.prod(view_shape):
            raise ValueError(
                f"view_shape {view_shape} must have as many entries as shape {shape}"
            )
        reason = base.shape_error(view_shape, "view_shape")
        if reason is not None:
            raise ValueError(reason)
        self.base = base
        self.shape = shape
        self.view_shape = view_shape
        self.ndim = len(shape)
        self.is_inequality = base.is_inequality
        # a reshape is linear, so it keeps a linear transport linear
        self.linear_transport = base.linear_transport

    def _params(self) -> tuple[Any, ...]:
        return (self.base, self.shape, self.view_shape)

    # ------------------------------------------------------------------ reshaping
    def _batch(self, x: Tensor) -> tuple[int, ...]:
        return tuple(x.shape[: x.dim() - self.ndim])

    def _view(self, x: Tensor) -> Tensor:
        return x.reshape(*self._batch(x), *self.view_shape)

    def _back(self, y: Tensor) -> Tensor:
        return y.reshape(*y.shape[: y.dim() - len(self.view_shape)], *self.shape)

    # ------------------------------------------------------------------ verbs
    def constraint(self, x: Tensor) -> Tensor:
        c = self.base.constraint(self._view(x))
        return c.reshape(*self._batch(x), -1)

    def inequality_mask(self, x: Tensor) -> Tensor:
        return self.base.inequality_mask(self._view(x)).reshape(*self._batch(x), -1)

    def project(self, x: Tensor) -> Tensor:
        self.check_shape(tuple(x.shape), "x")
        return self._back(self.base.project(self._view(x)))

    def proj_tangent(self, x: Tensor, v: Tensor) -> Tensor:
        return self._back(self.base.proj_tangent(self._view(x), self._view(v)))

    def rattle(self, x: Tensor, p: Tensor) -> Tensor:
        return self._back(self.base.rattle(self._view(x), self._view(p)))

    def retract(self, x: Tensor, v: Tensor) -> Tensor:
        return self._back(self.base.retract(self._view(x), self._view(v)))

    def expmap(self, x: Tensor, u: Tensor) -> Tensor:
        return self._back(self.base.expmap(self._view(x), self._view(u)))

    def shake(self, x: Tensor, y: Tensor) -> Tensor:
        return self._back(self.base.shake(self._view(x), self._view(y)))

    def transp(self, x: Tensor, y: Tensor, v: Tensor) -> Tensor:
        return self._back(self.base.transp(self._view(x), self._view(y), self._view(v)))

    def retr_transp(self, x: Tensor, u: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
        y, w = self.base.retr_transp(self._view(x), self._view(u), self._view(v))
        return self._back(y), self._back(w)

    def drift(
        self, x: Tensor, p: Tensor, h: float, *, rattle: bool = True
    ) -> tuple[Tensor, Tensor]:
        y, q = self.base.drift(self._view(x), self._view(p), h, rattle=rattle)
        return self._back(y), self._back(q)

    def inner(
        self, x: Tensor, u: Tensor, v: Tensor | None = None, *, keepdim: bool = False
    ) -> Tensor:
        """The base metric on the view, summed over the whole point."""
        vv = None if v is None else self._view(v)
        ip = self.base.inner(self._view(x), self._view(u), vv)
        batch = self._batch(x)
        ip = ip.reshape(*batch, -1).sum(-1)
        return ip.reshape(*batch, *([1] * self.ndim)) if keepdim else ip

    def _sample_point(self, shape: tuple[int, ...], draw: Draw) -> Tensor:
        batch = tuple(shape[: len(shape) - self.ndim])
        y = self.base.random_point(
            *batch,
            *self.view_shape,
            dtype=draw.dtype,
            device=draw.device,
            generator=draw.generator,
        )
        return self._back(y)

    def shape_error(self, shape: tuple[int, ...], name: str) -> str | None:
        shape = tuple(shape)
        if len(shape) < self.ndim or shape[len(shape) - self.ndim :] != self.shape:
            return (
                f"{name} has shape {shape} but {self!r} needs trailing dimensions {self.shape}"
            )
        return None

    def __repr__(self) -> str:
        return f"Reshaped({self.base!r}, {self.shape} -> {self.view_shape})"
