"""A small cache of constraint evaluations (c(x), J(x)) keyed on the values of x.

One integrator step asks for c and its Jacobian at the same point several times
(the B step's projection, SHAKE's starting point, the O step's projection and
the next A step's SHAKE all sit at one point); with the cache each point is
evaluated once. The key is the exact content of x (``torch.equal`` against a
private copy), so an in-place change of x, a new tensor with the same storage
or a view cannot return a stale entry; the cost of a lookup is one comparison
pass over x, far below an autograd Jacobian.
"""

from __future__ import annotations

from collections import OrderedDict

import torch
from torch import Tensor

__all__ = ["EvaluationCache"]


class EvaluationCache:
    """The last ``size`` points' (c, J), least recently used dropped first."""

    def __init__(self, size: int = 4) -> None:
        self.size = size
        self._entries: OrderedDict[int, tuple[Tensor, Tensor, Tensor]] = OrderedDict()
        self._next = 0

    @staticmethod
    def usable(x: Tensor) -> bool:
        """False while autograd records x's graph: cached values would carry none."""
        return not (torch.is_grad_enabled() and x.requires_grad)

    def get(self, x: Tensor) -> tuple[Tensor, Tensor] | None:
        """(c, J) at a point with exactly x's shape, dtype, device and values, if cached."""
        for key, (point, values, jac) in reversed(self._entries.items()):
            if (
                point.shape == x.shape
                and point.dtype == x.dtype
                and point.device == x.device
                and torch.equal(point, x)
            ):
                self._entries.move_to_end(key)
                return values, jac
        return None

    def put(self, x: Tensor, values: Tensor, jac: Tensor) -> None:
        self._entries[self._next] = (x.detach().clone(), values.detach(), jac.detach())
        self._next += 1
        while len(self._entries) > self.size:
            self._entries.popitem(last=False)

    def clear(self) -> None:
        self._entries.clear()
