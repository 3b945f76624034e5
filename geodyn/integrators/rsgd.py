r"""Riemannian SGD with momentum, following torch.optim.SGD's conventions.

With $d_n = P_{x_n}(\nabla U(x_n) + w x_n)$ the Riemannian gradient,

$$b_{n} = \mu\, \mathcal{T}(b_{n-1}) + (1 - \delta)\, d_n \quad (b_1 = d_1), \qquad
u_n = d_n + \mu b_n \ \text{(Nesterov) or } b_n, \qquad x_{n+1} = R_{x_n}(-\eta\, u_n),$$

and the buffer moved to $T_{x_{n+1}}M$ with the manifold's ``retr_transp``. Where the
transport is the (linear) tangent projection (``manifold.linear_transport``) and the
momentum is not Nesterov's, the move is folded into the next step's projection,
$b_n = P_{x_n}(\mu b_{n-1} + (1 - \delta) g_n)$: the same iterates with one projection
per step instead of two. With every parameter Euclidean it follows
:class:`torch.optim.SGD`'s update and agrees with it to rounding (not bit for bit: the
operations are grouped differently).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch import Tensor

from ..manifolds import Manifold
from ._base import GeometricOptimizer, Proposal, check_finite, check_nonnegative, check_step_size
from ._stacks import manifold_of, stacks

__all__ = ["RiemannianSGD"]


class RiemannianSGD(GeometricOptimizer):
    """SGD with (Nesterov) momentum on M: Riemannian gradient, retraction, transported buffer.

    The momentum buffer ``state[param]["momentum_buffer"]`` is always tangent: it starts
    as the first Riemannian gradient (torch's first-step convention) and is moved to the
    new tangent space after every step, or, with linear transport and no Nesterov
    momentum, at the start of the next (then it is tangent at the point before the step).

    ``nonfinite``, ``seed`` and ``generator`` are those of
    :class:`~geodyn.integrators.GeometricOptimizer`.

    Args:
        params: parameters or param groups; a group may set ``lr``, ``momentum``,
            ``dampening``, ``nesterov``, ``weight_decay`` and ``manifold``.
        lr: learning rate eta.
        momentum: mu in [0, 1).
        dampening: delta, as in torch.optim.SGD.
        nesterov: Nesterov momentum (needs momentum > 0 and dampening = 0).
        weight_decay: w, adds w x to the gradient before projection.
        manifold: the manifold of groups that name none (by default each parameter's,
            :func:`~geodyn.integrators.manifold_of`).
        compiled: run the momentum step of manifolds with linear transport (no
            Nesterov) as one ``torch.compile``-d function per stack: its row reductions
            and elementwise updates fuse into a few kernels. The finiteness check and the
            commit stay eager, so a step is still all or nothing. The first steps
            compile (seconds); worth it for long runs on large weights.
    """

    def __init__(
        self,
        params: Iterable[Any],
        lr: float,
        momentum: float = 0.0,
        dampening: float = 0.0,
        nesterov: bool = False,
        weight_decay: float = 0.0,
        manifold: Any = None,
        *,
        nonfinite: str = "raise",
        seed: int | None = None,
        generator: torch.Generator | None = None,
        compiled: bool = False,
    ) -> None:
        defaults = dict(
            lr=lr,
            momentum=momentum,
            dampening=dampening,
            nesterov=nesterov,
            weight_decay=weight_decay,
            manifold=manifold,
        )
        super().__init__(params, defaults, nonfinite=nonfinite, seed=seed, generator=generator)
        self.compiled = bool(compiled)
        self._momentum_step = torch.compile(momentum_step) if compiled else momentum_step

    def _check_group(self, group: dict[str, Any]) -> None:
        check_step_size(group)
        check_nonnegative(group, "momentum", "weight_decay")
        if group["nesterov"] and (group["momentum"] <= 0 or group["dampening"] != 0):
            raise ValueError("nesterov=True needs momentum > 0 and dampening = 0")

    def _propose(self, closure: Callable[[], Any] | None) -> list[Proposal]:
        def select(p: Tensor, group: dict[str, Any]) -> Any:
            return None if p.grad is None else manifold_of(p, group)

        def has_buffer(p: Tensor) -> bool:
            return p in self.state and "momentum_buffer" in self.state[p]

        proposals = []
        for stack in stacks(self.param_groups, select, key=has_buffer):
            group, manifold = stack.group, stack.manifold
            mu, wd = group["momentum"], group["weight_decay"]
            x = stack.gather(stack.params)
            g = stack.gather([p.grad for p in stack.params])  # type: ignore[misc]
            check_finite(stack, g, "the gradient")
            if wd:
                g = torch.add(g, x, alpha=wd)
            old = None
            if mu and has_buffer(stack.params[0]):
                old = stack.gather([self.state[p]["momentum_buffer"] for p in stack.params])
            if mu and not group["nesterov"] and manifold.linear_transport:
                x_new, buf = self._momentum_step(
                    manifold, x, g, old, mu, group["dampening"], group["lr"]
                )
                proposals.append(Proposal(stack, x_new, {"momentum_buffer": buf}))
                continue
            d = manifold.proj_tangent(x, g)
            if mu == 0:
                proposals.append(Proposal(stack, manifold.retract(x, torch.mul(d, -group["lr"]))))
                continue
            buf = accumulate(old, d, mu, group["dampening"])
            u = torch.add(d, buf, alpha=mu) if group["nesterov"] else buf
            x_new, buf_new = manifold.retr_transp(x, torch.mul(u, -group["lr"]), buf)
            proposals.append(Proposal(stack, x_new, {"momentum_buffer": buf_new}))
        return proposals


def accumulate(old: Tensor | None, v: Tensor, momentum: float, dampening: float) -> Tensor:
    """The momentum buffer mu b_old + (1 - delta) v, or v on the first step (no b_old)."""
    return v if old is None else torch.mul(old, momentum).add_(v, alpha=1 - dampening)


def momentum_step(
    manifold: Manifold,
    x: Tensor,
    g: Tensor,
    old: Tensor | None,
    momentum: float,
    dampening: float,
    lr: float,
) -> tuple[Tensor, Tensor]:
    """b = P_x(mu b_old + (1 - delta) g) (b = P_x g without b_old), x' = R_x(-lr b).

    The momentum step of a manifold with linear transport by projection: the buffer's
    move to T_x M is folded into the projection of the new gradient,
    mu P_x b_old + (1 - delta) P_x g = P_x(mu b_old + (1 - delta) g), so a step projects
    once; the stored b is tangent at x, the point it was used at. A pure function of
    tensors (no state, no mutation of its inputs), so that ``torch.compile`` can fuse it.
    """
    buf = manifold.proj_tangent(x, accumulate(old, g, momentum, dampening))
    return manifold.retract(x, torch.mul(buf, -lr)), buf
