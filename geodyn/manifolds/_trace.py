"""Whether a tensor is being traced, where a value-dependent Python branch is not allowed."""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["traced"]


def traced(x: Tensor) -> bool:
    """True under ``torch.compile`` and inside ``torch.func`` transforms (vmap, grad).

    There a host sync on a value (``bool(t)``, ``float(t)``) breaks the graph or
    raises, so verbs skip their eager-only checks and leave them to the caller.
    """
    return torch.compiler.is_compiling() or torch._C._functorch.is_functorch_wrapped_tensor(x)
