"""An optimizer that stacks onto another: shared param groups, nested state_dict."""

from __future__ import annotations

from typing import Any

import torch
from torch.optim import Optimizer

from ..integrators import group_manifolds_kept, without_manifolds

__all__ = ["OptimizerWrapper"]


class OptimizerWrapper(Optimizer):
    """Base for methods that add behaviour around any ``torch.optim.Optimizer``.

    The wrapper shares the base optimizer's ``param_groups`` and ``state`` (an LR
    scheduler on the wrapper drives the base), and nests state dicts as
    ``{"base": base.state_dict(), "method": <the method's own state>}``.
    """

    def __init__(self, optimizer: Optimizer) -> None:
        if not isinstance(optimizer, Optimizer):
            raise ValueError(
                f"optimizer must be a torch.optim.Optimizer (e.g. torch.optim.SGD(...)), "
                f"got {type(optimizer).__name__}"
            )
        params = [p for group in optimizer.param_groups for p in group["params"]]
        super().__init__(params, {})
        self.optimizer = optimizer
        self.param_groups = optimizer.param_groups
        self.defaults = optimizer.defaults
        self.state = optimizer.state

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        if not hasattr(self, "optimizer"):  # called once by Optimizer.__init__
            super().add_param_group(param_group)
        else:
            self.optimizer.add_param_group(param_group)

    def params(self) -> list[torch.Tensor]:
        """Every parameter of the base optimizer, in group order."""
        return [p for group in self.param_groups for p in group["params"]]

    def method_state(self) -> dict[str, Any]:
        """The method's own state (subclasses override)."""
        return {}

    def load_method_state(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`method_state` returned (subclasses override)."""

    def state_dict(self) -> dict[str, Any]:
        """``{"base": ..., "method": ...}`` of plain tensors and containers only.

        A param group's ``"manifold"`` (an object, which ``torch.load(weights_only=True)``
        refuses) is left out: :meth:`load_state_dict` keeps the loading optimizer's own.
        """
        base = without_manifolds(self.optimizer.state_dict())
        return {"base": base, "method": self.method_state()}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        if set(state_dict) != {"base", "method"}:
            raise ValueError(
                f"state_dict of {type(self).__name__} must have keys 'base' and 'method' "
                f"(from {type(self).__name__}.state_dict()), got {sorted(state_dict)}"
            )
        self.load_method_state(state_dict["method"])
        with group_manifolds_kept(self):
            self.optimizer.load_state_dict(state_dict["base"])
            self.param_groups = self.optimizer.param_groups
            self.state = self.optimizer.state

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.optimizer!r})"
