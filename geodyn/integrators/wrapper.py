"""The one way to add behaviour around a torch optimizer: share its groups, nest its state.

A wrapper holds a base optimizer and shares its ``param_groups``, ``state`` and
``defaults`` (the same objects), so an LR scheduler on the wrapper drives the base and
``zero_grad`` clears the base's gradients. Its state dict is the base's (without the
groups' manifolds, see :mod:`geodyn.integrators._portable`), nested as
``{"base": ..., "method": ...}`` when the wrapper keeps state of its own.
"""

from __future__ import annotations

from typing import Any

import torch
from torch.optim import Optimizer

from ._portable import group_manifolds_kept, without_manifolds

__all__ = ["OptimizerWrapper", "check_optimizer"]


def check_optimizer(value: object, argument: str) -> None:
    """Raise ``ValueError`` naming ``argument`` unless ``value`` is a torch optimizer."""
    if not isinstance(value, Optimizer):
        raise ValueError(
            f"{argument} must be a torch.optim.Optimizer (e.g. "
            f"torch.optim.SGD(model.parameters(), lr=0.1)), got {type(value).__name__}"
        )


class OptimizerWrapper(Optimizer):
    """Base of every optimizer that wraps another (``Constrained``, LAWN, periodic sampling).

    Args:
        base: the wrapped :class:`torch.optim.Optimizer`.

    Subclasses with state of their own override :meth:`method_state` (return a dict
    of tensors and plain containers) and :meth:`load_method_state`.
    """

    def __init__(self, base: Optimizer) -> None:
        check_optimizer(base, "base")
        super().__init__([p for group in base.param_groups for p in group["params"]], {})
        self.base = base
        self._share()

    def _share(self) -> None:
        """Alias the base's groups, state and defaults (again after the base loads a state dict)."""
        self.param_groups = self.base.param_groups
        self.state = self.base.state
        self.defaults = self.base.defaults

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        if not hasattr(self, "base"):  # called by Optimizer.__init__, before base is set
            super().add_param_group(param_group)
        else:
            self.base.add_param_group(param_group)

    def zero_grad(self, set_to_none: bool = True) -> None:
        self.base.zero_grad(set_to_none=set_to_none)

    def params(self) -> list[torch.Tensor]:
        """Every parameter of the base optimizer, in group order."""
        return [p for group in self.param_groups for p in group["params"]]

    def method_state(self) -> dict[str, Any] | None:
        """The wrapper's own state, or ``None`` when it keeps none (the default)."""
        return None

    def load_method_state(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`method_state` returned."""

    def state_dict(self) -> dict[str, Any]:
        """The base's state dict, as ``{"base": ..., "method": ...}`` when the wrapper has state.

        A param group's ``"manifold"`` (an object, which ``torch.load(weights_only=True)``
        refuses) is left out: :meth:`load_state_dict` keeps the loading optimizer's own.
        """
        base = without_manifolds(self.base.state_dict())
        method = self.method_state()
        return base if method is None else {"base": base, "method": method}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Load what :meth:`state_dict` saved into the base (and the wrapper's own state)."""
        if self.method_state() is not None:
            if set(state_dict) != {"base", "method"}:
                raise ValueError(
                    f"state_dict of {type(self).__name__} must have keys 'base' and 'method' "
                    f"(from {type(self).__name__}.state_dict()), got {sorted(state_dict)}"
                )
            self.load_method_state(state_dict["method"])
            state_dict = state_dict["base"]
        with group_manifolds_kept(self):
            self.base.load_state_dict(state_dict)
            self._share()

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.base!r})"
