"""State dicts that ``torch.load(weights_only=True)`` reads: param groups without manifolds.

A param group may name its ``"manifold"``, an object that a weights-only load refuses.
It is left out of a saved state dict, and each group keeps the manifold of the optimizer
it is loaded into.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

from torch.optim import Optimizer

__all__ = ["group_manifolds_kept", "without_manifolds"]


def without_manifolds(state_dict: dict[str, Any]) -> dict[str, Any]:
    """``state_dict`` (changed in place) with no ``"manifold"`` in its param groups."""
    for group in state_dict["param_groups"]:
        group.pop("manifold", None)
    return state_dict


@contextlib.contextmanager
def group_manifolds_kept(optimizer: Optimizer) -> Iterator[None]:
    """Around a ``load_state_dict``: give each loaded group back its ``"manifold"``."""
    manifolds = {i: g["manifold"] for i, g in enumerate(optimizer.param_groups) if "manifold" in g}
    yield
    for i, manifold in manifolds.items():
        optimizer.param_groups[i].setdefault("manifold", manifold)
