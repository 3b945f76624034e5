r"""Landing: retraction-free descent on any constraint set, with the safe step rule.

x' = x - eta_s (P_x g + lambda J(x)^T c(x)), eta_s the largest of lr, lr/2, ... that keeps
max |c(x')| within ``eps`` (:mod:`geodyn.functional.landing`). No retraction, projection
onto M or constraint solve ever runs: a step costs one projection of the gradient, one
reverse-mode pass through ``manifold.constraint`` and usually one more evaluation of it.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch import Tensor

from ..functional.landing import landing_step
from ._base import GeometricOptimizer, Proposal, check_finite, check_nonnegative, check_step_size
from ._stacks import manifold_of, stacks

__all__ = ["Landing"]


class Landing(GeometricOptimizer):
    r"""The landing method: tangent descent plus attraction to M, never a retraction.

    Args:
        params: parameters or param groups; a group may set ``lr``, ``attraction``,
            ``eps``, ``weight_decay`` and ``manifold``.
        lr: the largest step eta.
        attraction: lambda > 0, the weight of the normal attraction J^T c.
        eps: the distance (max |c|) from M that no iterate may exceed (an iterate already
            farther than eps may not move farther away).
        weight_decay: w, adds w x to the gradient.
        halvings: how often the step may be halved to meet the bound (a point that
            still misses it stays where it is).
        manifold: the manifold of groups that do not name one; any manifold with a
            differentiable ``constraint`` (a :class:`geodyn.Implicit` included).
        nonfinite: "raise" or "skip" on a non-finite gradient.
    """

    def __init__(
        self,
        params: Iterable[Any],
        lr: float,
        attraction: float = 1.0,
        eps: float = 0.5,
        weight_decay: float = 0.0,
        halvings: int = 10,
        manifold: Any = None,
        *,
        nonfinite: str = "raise",
    ) -> None:
        defaults = dict(
            lr=lr,
            attraction=attraction,
            eps=eps,
            weight_decay=weight_decay,
            halvings=halvings,
            manifold=manifold,
        )
        super().__init__(params, defaults, nonfinite=nonfinite)

    def _check_group(self, group: dict[str, Any]) -> None:
        check_step_size(group)
        check_nonnegative(group, "weight_decay")
        for name in ("attraction", "eps"):
            value = group[name]
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
                raise ValueError(f"{name} must be a finite number > 0, got {value!r}")
        halvings = group["halvings"]
        if isinstance(halvings, bool) or not isinstance(halvings, int) or halvings < 0:
            raise ValueError(f"halvings must be an int >= 0, got {halvings!r}")

    def _propose(self, closure: Callable[[], Any] | None) -> list[Proposal]:
        def select(p: Tensor, group: dict[str, Any]) -> Any:
            return None if p.grad is None else manifold_of(p, group)

        proposals = []
        for stack in stacks(self.param_groups, select):
            group = stack.group
            x = stack.gather(stack.params)
            g = stack.gather([p.grad for p in stack.params])  # type: ignore[misc]
            check_finite(stack, g, "the gradient")
            if group["weight_decay"]:
                g = torch.add(g, x, alpha=group["weight_decay"])
            x_new = landing_step(
                stack.manifold,
                x,
                g,
                lr=group["lr"],
                attraction=group["attraction"],
                eps=group["eps"],
                halvings=group["halvings"],
            )
            proposals.append(Proposal(stack, x_new))
        return proposals
