"""Tensors an optimizer keeps from step to step as working memory (not state).

On a CPU, fresh memory for a parameter-sized temporary page-faults on every step once the
allocator has handed it back to the system, and the faults can cost more than the pass
that fills it. An optimizer that writes a step's intermediate values into tensors kept
here allocates them once.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable

import torch
from torch import Tensor

from ..manifolds.base import Scratch

__all__ = ["Workspace", "dense", "in_memory_order"]


class Workspace:
    """Working tensors by key, each reused while it still fits the tensor it stands for.

    Nothing read from a workspace tensor outlives the step that wrote it: it is not part
    of the optimizer's state and is not saved in ``state_dict``.
    """

    def __init__(self) -> None:
        self._kept: dict[Hashable, Tensor] = {}

    def like(self, key: Hashable, t: Tensor) -> Tensor:
        """An uninitialised tensor like ``t`` (type, shape, dtype, device and the strides
        ``torch.empty_like`` gives it), the one kept under ``key`` where it fits."""
        kept = self._kept.get(key)
        if kept is None or not _fits(kept, t):
            kept = self._kept[key] = torch.empty_like(t)
        return kept

    def scratch(self, key: Hashable) -> Scratch:
        """A fast path's :data:`~geodyn.manifolds.base.Scratch`: each named tensor kept
        under ``(key, name)``, reused while its shape, dtype and device still fit."""

        def take(name: str, shape: tuple[int, ...], like: Tensor) -> Tensor:
            kept = self._kept.get((key, name))
            if kept is None or (kept.shape, kept.dtype, kept.device) != (
                shape, like.dtype, like.device
            ):
                kept = self._kept[key, name] = like.new_empty(shape)
            return kept

        return take

    def kept(self) -> dict[Hashable, Tensor]:
        """The tensors kept now, by key."""
        return dict(self._kept)

    def drop(self, which: Callable[[Hashable], bool]) -> None:
        """Forget the tensors whose key ``which`` accepts (their memory may now be in use
        elsewhere)."""
        self._kept = {key: t for key, t in self._kept.items() if not which(key)}


def in_memory_order(t: Tensor) -> Tensor:
    """``t`` with its dimensions permuted by decreasing stride: contiguous where ``t`` is
    dense (``t`` itself where it is contiguous)."""
    order = sorted(range(t.dim()), key=t.stride, reverse=True)
    return t.permute(order)


def dense(t: Tensor) -> bool:
    """Whether ``t``'s entries fill its memory, each once (in some order of its
    dimensions)."""
    return in_memory_order(t).is_contiguous()


def _fits(kept: Tensor, t: Tensor) -> bool:
    """Whether ``kept`` is what ``torch.empty_like(t)`` would make: t's strides where t is
    dense, else contiguous."""
    if (type(kept), kept.shape, kept.dtype, kept.device) != (type(t), t.shape, t.dtype, t.device):
        return False
    return kept.stride() == t.stride() if dense(t) else kept.is_contiguous()
