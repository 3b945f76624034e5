"""Which manifold a parameter lives on, and stacking of like parameters for one batched call.

Parameters of one param group that share (manifold, point shape, dtype, device) are
concatenated along a flattened batch dimension, so every manifold verb runs once per
stack instead of once per parameter. A manifold's verbs are batched over leading
dimensions, which is what makes this exact. A parameter of 65536 entries or more is a
stack of its own (no copy into a concatenation).

Half-precision parameters (bfloat16, float16) are gathered in float32: the geometry
(projections, retractions, SHAKE) is computed in float32 and the result is rounded
once, when it is copied back into the parameter.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from ..manifolds import Euclidean, Manifold, as_geodyn
from ._sharding import check_unsharded, local
from ._workspace import dense

__all__ = ["Stack", "declared_manifold", "manifold_of", "stacks"]


def declared_manifold(param: Tensor, group: dict[str, Any]) -> Manifold | None:
    """The manifold given for ``param``: ``group["manifold"]``, else ``param.manifold``
    (a geoopt manifold adapted by :func:`geodyn.manifolds.as_geodyn`).

    Returns ``None`` for a parameter with no declared constraint. With
    :func:`manifold_of`, the one place that reads a parameter's manifold.
    """
    manifold = group.get("manifold")
    if manifold is None:  # getattr, not isinstance: dynamo hides the subclass of params
        manifold = getattr(param, "manifold", None)
    return None if manifold is None else as_geodyn(manifold)


def manifold_of(param: Tensor, group: dict[str, Any]) -> Manifold:
    """The manifold ``param`` is stepped on.

    ``group["manifold"]`` if the param group names one, else ``param.manifold`` for a
    :class:`geoopt.ManifoldParameter` (a plain geoopt manifold is adapted with
    ``geodyn.manifolds.as_geodyn``), else :class:`~geodyn.manifolds.Euclidean`.
    """
    declared = declared_manifold(param, group)
    return _EUCLIDEAN if declared is None else declared


_EUCLIDEAN = Euclidean()  # stateless: one instance serves every unconstrained parameter


@dataclass
class Stack:
    """Parameters of one group sharing (manifold, point shape, dtype, device).

    ``gather`` concatenates per-parameter tensors into one tensor of shape
    ``(N, *point_shape)`` in :attr:`compute_dtype`; ``scatter`` splits such a tensor
    back into views shaped like the parameters (still in ``compute_dtype``: copying
    them into the parameters rounds them to the parameters' dtype). ``point_shape``
    (of a shard, whose points are whole) and ``compute_dtype`` (float32 for
    half-precision parameters, else the parameters' dtype) are fixed at creation, as
    the parameters share them.
    """

    manifold: Manifold
    group: dict[str, Any]
    params: list[Tensor]
    point_shape: tuple[int, ...] = field(init=False)
    compute_dtype: torch.dtype = field(init=False)

    def __post_init__(self) -> None:
        nd = self.manifold.ndim
        shape = local(self.params[0]).shape
        self.point_shape = tuple(shape[len(shape) - nd :]) if nd else ()
        dtype = self.params[0].dtype
        self.compute_dtype = torch.float32 if dtype in _HALF else dtype

    @property
    def in_place(self) -> bool:
        """Whether :meth:`gather` of the parameters is a view of them (one dense
        parameter in its compute dtype whose batch dimensions flatten without a copy: a
        contiguous one, or the circle lift's planar pairs), so that a step can write its
        result in place."""
        if len(self.params) != 1:
            return False
        p = local(self.params[0])
        return p.dtype == self.compute_dtype and dense(p) and _flattens(p, self.point_shape)

    def gather(self, tensors: Sequence[Tensor]) -> Tensor:
        dtype = self.compute_dtype
        flat = [local(t).detach().reshape(-1, *self.point_shape) for t in tensors]
        out = flat[0] if len(flat) == 1 else torch.cat(flat)
        return out if out.dtype == dtype else out.to(dtype)

    def scatter(self, stacked: Tensor) -> list[Tensor]:
        shards = [local(p) for p in self.params]
        if len(shards) == 1:
            return [stacked.view_as(shards[0])]
        sizes = [p.numel() // max(1, _prod(self.point_shape)) for p in shards]
        return [s.view_as(p) for s, p in zip(stacked.split(sizes), shards, strict=True)]


_HALF = (torch.bfloat16, torch.float16)
# A parameter this large is a stack of its own: one batched call already amortises the
# Python overhead, and concatenating it with others would copy it (a pass over memory).
_OWN_STACK = 1 << 16


def _flattens(t: Tensor, point_shape: tuple[int, ...]) -> bool:
    """Whether ``t.reshape(-1, *point_shape)`` is a view of ``t``."""
    try:
        t.view(-1, *point_shape)
    except RuntimeError:
        return False
    return True


def _prod(shape: Iterable[int]) -> int:
    out = 1
    for n in shape:
        out *= n
    return out


def stacks(
    param_groups: Iterable[dict[str, Any]],
    select: Callable[[Tensor, dict[str, Any]], Manifold | None],
    key: Callable[[Tensor], Hashable] = lambda p: None,
) -> list[Stack]:
    """Stacks of the selected parameters, in a deterministic order.

    Args:
        param_groups: the optimizer's param groups.
        select: the manifold of a parameter, or ``None`` to leave it out.
        key: an extra per-parameter key (e.g. optimizer state) that must also agree
            within a stack.
    """
    out: list[Stack] = []
    for group in param_groups:
        by_key: dict[Hashable, Stack] = {}
        for p in group["params"]:
            manifold = select(p, group)
            if manifold is None:
                continue
            manifold.check_shape(tuple(p.shape), "parameter")
            check_unsharded(p, manifold)
            nd = manifold.ndim
            shape = local(p).shape
            point = tuple(shape[len(shape) - nd :]) if nd else ()
            alone = p if p.numel() >= _OWN_STACK else None
            k = (manifold, point, p.dtype, p.device, key(p), alone)
            if k in by_key:
                by_key[k].params.append(p)
            else:
                by_key[k] = Stack(manifold, group, [p])
        out.extend(by_key.values())
    return out
