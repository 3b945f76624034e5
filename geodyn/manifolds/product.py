r"""Products of manifolds: one flat vector holds a point of every factor.

A point of M_1 x ... x M_k is the concatenation along the last dimension of
the flattened factor points, so it has shape (..., sum_i prod(shape_i)).
Every verb acts per factor on its slice, reshaped to (..., *shape_i), after its
arguments are broadcast against each other (as geoopt's ProductManifold does); the
constraint concatenates the factors' residuals. The capabilities are the factors':
``is_inequality`` if any factor has an inequality (``inequality_mask`` says which
constraints), ``linear_transport`` if every factor has it, and the A step (``drift``)
is each factor's own.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from .base import Draw, Manifold

__all__ = ["Product"]


class Product(Manifold):
    """The product of ``factors``, each a pair ``(manifold, point_shape)``.

    Example: ``Product((Sphere(), (3,)), (Stiefel(), (4, 2)))`` has points of
    shape (..., 11): a unit 3-vector followed by a 4 x 2 frame, flattened.
    """

    ndim = 1
    name = "Product"

    def __init__(self, *factors: tuple[Manifold, tuple[int, ...]]) -> None:
        super().__init__()
        if not factors:
            raise ValueError("Product needs at least one factor (manifold, point_shape)")
        parsed = []
        for i, factor in enumerate(factors):
            if not (isinstance(factor, tuple) and len(factor) == 2):
                raise ValueError(
                    f"factors[{i}] must be a pair (manifold, point_shape), got {factor!r}"
                )
            manifold, shape = factor
            if not isinstance(manifold, Manifold):
                raise ValueError(
                    f"factors[{i}] has {manifold!r}, not a geodyn Manifold; wrap geoopt "
                    "manifolds with as_geodyn(...)"
                )
            shape = tuple(int(s) for s in shape)
            reason = manifold.shape_error(shape, f"factors[{i}] point_shape")
            if reason is not None:
                raise ValueError(reason)
            parsed.append((manifold, shape))
        self.factors: tuple[tuple[Manifold, tuple[int, ...]], ...] = tuple(parsed)
        self.sizes = tuple(math.prod(shape) for _, shape in self.factors)
        self.size = sum(self.sizes)
        self.is_inequality = any(m.is_inequality for m, _ in self.factors)
        self.linear_transport = all(m.linear_transport for m, _ in self.factors)

    def _params(self) -> tuple[object, ...]:
        return self.factors

    # ------------------------------------------------------------------ slicing
    def _split(self, x: Tensor) -> list[Tensor]:
        batch = x.shape[:-1]
        chunks = torch.split(x, list(self.sizes), dim=-1)
        shapes = [shape for _, shape in self.factors]
        return [c.reshape(*batch, *shape) for c, shape in zip(chunks, shapes, strict=True)]

    def _pack(self, parts: list[Tensor], batch: tuple[int, ...]) -> Tensor:
        return torch.cat([p.reshape(*batch, -1) for p in parts], dim=-1)

    def _per_factor(
        self, fn: Callable[..., Any], *tensors: Tensor
    ) -> tuple[list[Any], tuple[int, ...]]:
        """``fn(manifold_i, *slices_i)`` for every factor, on the broadcast ``tensors``."""
        tensors = tuple(torch.broadcast_tensors(*tensors)) if len(tensors) > 1 else tensors
        split = [self._split(t) for t in tensors]
        out = [fn(m, *args) for (m, _), *args in zip(self.factors, *split, strict=True)]
        return out, tuple(tensors[0].shape[:-1])

    def _map(self, fn: Callable[..., Tensor], *tensors: Tensor) -> Tensor:
        parts, batch = self._per_factor(fn, *tensors)
        return self._pack(parts, batch)

    def _map2(
        self, fn: Callable[..., tuple[Tensor, Tensor]], *tensors: Tensor
    ) -> tuple[Tensor, Tensor]:
        pairs, batch = self._per_factor(fn, *tensors)
        return self._pack([a for a, _ in pairs], batch), self._pack([b for _, b in pairs], batch)

    # ------------------------------------------------------------------ verbs
    def constraint(self, x: Tensor) -> Tensor:
        return self._map(lambda m, a: m.constraint(a), x)

    def inequality_mask(self, x: Tensor) -> Tensor:
        """The factors' masks, concatenated like :meth:`constraint`."""
        return self._map(lambda m, a: m.inequality_mask(a), x)

    def residual(self, x: Tensor) -> Tensor:
        """The largest factor residual (each factor clamps its own inequalities)."""
        parts = zip(self.factors, self._split(x), strict=True)
        return torch.stack([m.residual(a) for (m, _), a in parts]).max()

    def project(self, x: Tensor) -> Tensor:
        self.check_shape(tuple(x.shape), "x")
        return self._map(lambda m, a: m.project(a), x)

    def proj_tangent(self, x: Tensor, v: Tensor) -> Tensor:
        return self._map(lambda m, a, b: m.proj_tangent(a, b), x, v)

    def rattle(self, x: Tensor, p: Tensor) -> Tensor:
        return self._map(lambda m, a, b: m.rattle(a, b), x, p)

    def retract(self, x: Tensor, v: Tensor) -> Tensor:
        return self._map(lambda m, a, b: m.retract(a, b), x, v)

    def shake(self, x: Tensor, y: Tensor) -> Tensor:
        return self._map(lambda m, a, b: m.shake(a, b), x, y)

    def transp(self, x: Tensor, y: Tensor, v: Tensor) -> Tensor:
        return self._map(lambda m, a, b, c: m.transp(a, b, c), x, y, v)

    def retr_transp(self, x: Tensor, u: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
        return self._map2(lambda m, a, b, c: m.retr_transp(a, b, c), x, u, v)

    def drift(
        self, x: Tensor, p: Tensor, h: float, *, rattle: bool = True
    ) -> tuple[Tensor, Tensor]:
        """Every factor's own A step on its slice."""
        return self._map2(lambda m, a, b: m.drift(a, b, h, rattle=rattle), x, p)

    def inner(
        self, x: Tensor, u: Tensor, v: Tensor | None = None, *, keepdim: bool = False
    ) -> Tensor:
        """The sum of the factors' metrics."""
        tensors = torch.broadcast_tensors(x, u) if v is None else torch.broadcast_tensors(x, u, v)
        batch = tensors[0].shape[:-1]

        def factor_inner(m: Manifold, a: Tensor, b: Tensor, *c: Tensor) -> Tensor:
            return m.inner(a, b, *c, keepdim=True).reshape(*batch, -1).sum(-1)

        parts, _ = self._per_factor(factor_inner, *tensors)
        total = torch.stack(parts).sum(0)
        return total.unsqueeze(-1) if keepdim else total

    def component_inner(self, x: Tensor, u: Tensor, v: Tensor | None = None) -> Tensor:
        """Each factor's inner product, spread over that factor's entries (geoopt's
        ProductManifold): adaptive methods keep one second moment per factor."""
        tensors = (x, u) if v is None else (x, u, v)

        def spread(m: Manifold, a: Tensor, b: Tensor, *c: Tensor) -> Tensor:
            return m.component_inner(a, b, *c).expand(a.shape)

        return self._map(spread, *tensors)

    def _sample_point(self, shape: tuple[int, ...], draw: Draw) -> Tensor:
        batch = tuple(shape[:-1])
        parts = [
            m.random_point(
                *batch, *s, dtype=draw.dtype, device=draw.device, generator=draw.generator
            )
            for m, s in self.factors
        ]
        return torch.cat([p.reshape(*batch, -1) for p in parts], dim=-1)

    @property
    def project_is_nearest(self) -> bool:
        """A nearest point per factor is the nearest point: the squared distance is a sum."""
        return all(m.project_is_nearest for m, _ in self.factors)

    def random_tangent(self, x: Tensor, generator: torch.Generator | None = None) -> Tensor:
        return self._map(lambda m, a: m.random_tangent(a, generator=generator), x)

    def shape_error(self, shape: tuple[int, ...], name: str) -> str | None:
        if len(shape) < 1 or shape[-1] != self.size:
            return (
                f"{name} has shape {tuple(shape)} but this {self.name} needs (..., {self.size}): "
                "the flattened factor points concatenated along the last dimension"
            )
        return None

    def extra_repr(self) -> str:
        return ", ".join(f"({m!r}, {s})" for m, s in self.factors)

