r"""Overdamped constrained Langevin dynamics (SHAKE-projected SGLD).

$$v_n = P_{x_n}\big(-h\,(\nabla U(x_n) + w x_n) + \sqrt{2 h \tau}\,\xi_n\big), \qquad
x_{n+1} = \mathrm{drift}_M(x_n, v_n, 1), \qquad \xi_n \sim N(0, I),$$

that is $x_{n+1} = \mathrm{shake}(x_n, x_n + v_n)$ on an equality set (the manifold's
default drift), the reflected Euler step on the norm ball (elastic wall) and the geodesic
on the circle lift (:func:`geodyn.functional.overdamped_step`). The increment is projected
onto $T_{x_n}M$ first: SHAKE moves along the normal space at $x_n$, so an untouched normal
component would only shift its multiplier. With tau = 0 this is projected gradient descent.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch import Tensor

from ..functional.overdamped import overdamped_step
from ._base import GeometricOptimizer, Proposal, check_finite, check_nonnegative, check_step_size
from ._stacks import manifold_of, stacks

__all__ = ["Overdamped"]


class Overdamped(GeometricOptimizer):
    """Overdamped Langevin on M with SHAKE: one gradient and one SHAKE per step.

    Samples (to O(h)) the density proportional to exp(-U(x)/tau) on M with respect to
    the surface measure.

    ``nonfinite``, ``seed`` and ``generator`` are those of
    :class:`~geodyn.integrators.GeometricOptimizer`.

    Args:
        params: parameters or param groups; a group may set ``lr``, ``tau``,
            ``weight_decay`` and ``manifold``.
        lr: step size h.
        tau: temperature (0: projected gradient descent).
        weight_decay: w, adds w x to the gradient.
        manifold: the manifold of groups that name none (by default each parameter's,
            :func:`~geodyn.integrators.manifold_of`).
    """

    def __init__(
        self,
        params: Iterable[Any],
        lr: float,
        tau: float = 0.0,
        weight_decay: float = 0.0,
        manifold: Any = None,
        *,
        nonfinite: str = "raise",
        seed: int | None = None,
        generator: torch.Generator | None = None,
    ) -> None:
        defaults = dict(lr=lr, tau=tau, weight_decay=weight_decay, manifold=manifold)
        super().__init__(params, defaults, nonfinite=nonfinite, seed=seed, generator=generator)

    def _check_group(self, group: dict[str, Any]) -> None:
        check_step_size(group)
        check_nonnegative(group, "tau", "weight_decay")

    def _propose(self, closure: Callable[[], Any] | None) -> list[Proposal]:
        def select(p: Tensor, group: dict[str, Any]) -> Any:
            return None if p.grad is None else manifold_of(p, group)

        proposals = []
        for stack in stacks(self.param_groups, select):
            group, manifold = stack.group, stack.manifold
            h, tau, wd = group["lr"], group["tau"], group["weight_decay"]
            x = stack.gather(stack.params)
            g = stack.gather([p.grad for p in stack.params])  # type: ignore[misc]
            check_finite(stack, g, "the gradient")
            xi = self.normal_like(x) if tau > 0 else None
            x_new = overdamped_step(manifold, x, g, xi, h=h, tau=tau, weight_decay=wd)
            proposals.append(Proposal(stack, x_new))
        return proposals
