r"""Make any torch optimizer constraint-aware.

For every parameter with a declared manifold (``group["manifold"]`` or
``param.manifold``) one step of :class:`Constrained` is

1. $g \leftarrow P_{x}(g)$: the Riemannian gradient replaces ``param.grad``;
2. the base optimizer's step, $x \to \tilde x$ (its own weight decay included);
3. back onto M: $x' = R_{x}\big(P_{x}(\tilde x - x)\big)$ (``put_back="retract"``) or
   $x' = \mathrm{project}(\tilde x)$ (``put_back="project"``);
4. every state tensor that is a tangent vector (a key of ``tangent_state`` shaped like
   the parameter) is moved to $T_{x'}M$ by the manifold's ``transp``.

Parameters without a declared manifold are left entirely to the base optimizer.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch import Tensor
from torch.optim import Optimizer

from ..manifolds.base import all_finite
from ._base import _ELSEWHERE, NonFiniteError, check_finite, no_autocast, skippable
from ._portable import group_manifolds_kept, without_manifolds
from ._sharding import agree, local
from ._stacks import Stack, declared_manifold, stacks

__all__ = ["TANGENT_STATE_KEYS", "Constrained"]

TANGENT_STATE_KEYS: frozenset[str] = frozenset({"momentum_buffer", "exp_avg"})
"""Base-optimizer state keys holding tangent vectors (first moments, momenta).

Second moments (``exp_avg_sq``, ``max_exp_avg_sq``, ``square_avg``, ``sum``, ...) are
elementwise scales, not vectors, and are left as they are.
"""

_PUT_BACK = ("retract", "project")


class Constrained(Optimizer):
    """Wrap a torch optimizer so that parameters with a manifold stay on it.

    The wrapper shares ``param_groups`` and ``state`` with the base optimizer, so LR
    schedulers, ``zero_grad``, ``state_dict`` and ``load_state_dict`` act on the base.

    Args:
        base_optimizer: any :class:`torch.optim.Optimizer` (SGD, Adam, AdamW, RMSprop, ...).
        put_back: "retract" (retract from the old point along the tangent part of the
            base's update) or "project" (the manifold's projection of the base's result).
        tangent_state: state keys that hold tangent vectors; default
            :data:`TANGENT_STATE_KEYS`. Extend it for other optimizers, e.g.
            ``TANGENT_STATE_KEYS | {"my_momentum"}``.
        nonfinite: "raise" or "skip" on a non-finite gradient or result, or a failed
            solve; parameters and base state are then left exactly as before the step.
    """

    def __init__(
        self,
        base_optimizer: Optimizer,
        *,
        put_back: str = "retract",
        tangent_state: Iterable[str] = TANGENT_STATE_KEYS,
        nonfinite: str = "raise",
    ) -> None:
        if not isinstance(base_optimizer, Optimizer):
            raise ValueError(
                f"base_optimizer must be a torch.optim.Optimizer, got {type(base_optimizer)}"
            )
        if put_back not in _PUT_BACK:
            raise ValueError(f"put_back must be 'retract' or 'project', got {put_back!r}")
        if nonfinite not in ("raise", "skip"):
            raise ValueError(f"nonfinite must be 'raise' or 'skip', got {nonfinite!r}")
        super().__init__(base_optimizer.param_groups, base_optimizer.defaults)
        self.base = base_optimizer
        self.param_groups = base_optimizer.param_groups
        self.state = base_optimizer.state
        self.put_back = put_back
        self.tangent_state = frozenset(tangent_state)
        self.nonfinite = nonfinite

    def __repr__(self) -> str:
        return f"Constrained({self.base!r}, put_back={self.put_back!r})"

    def state_dict(self) -> dict[str, Any]:
        """The base optimizer's state dict, without the groups' manifolds (objects)."""
        return without_manifolds(self.base.state_dict())

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Load into the base optimizer."""
        with group_manifolds_kept(self):
            self.base.load_state_dict(state_dict)
            self.param_groups = self.base.param_groups
            self.state = self.base.state

    def zero_grad(self, set_to_none: bool = True) -> None:
        self.base.zero_grad(set_to_none=set_to_none)

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        if hasattr(self, "base"):
            self.base.add_param_group(param_group)
        else:
            super().add_param_group(param_group)

    @torch.no_grad()
    def step(self, closure: Callable[[], Any] | None = None) -> Any:  # type: ignore[override]
        """Project gradients, run the base step, put parameters back, move tangent state.

        All or nothing: on a fault nothing (parameters, base state) changes.
        """
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        params = [p for g in self.param_groups for p in g["params"] if p.grad is not None]
        saved_x = [p.detach().clone() for p in params]
        saved_state = {p: _clone_state(self.state[p]) for p in params if p in self.state}
        error: Exception | None = None
        try:
            with no_autocast():
                self._step(params, dict(zip(params, saved_x, strict=True)))
        except Exception as err:
            error = err
        if not agree(error is None, params) and error is None:
            error = NonFiniteError(_ELSEWHERE)
        if error is not None:
            for p, x in zip(params, saved_x, strict=True):
                p.data.copy_(x)
            for p in params:
                if p in saved_state:
                    self.state[p] = saved_state[p]
                elif p in self.state:
                    del self.state[p]
            if self.nonfinite == "raise" or not skippable(error):
                raise error
            warnings.warn(
                f"step skipped, parameters and optimizer state unchanged: {error}",
                RuntimeWarning,
                stacklevel=3,
            )
        return loss

    def _step(self, params: list[Tensor], saved_x: dict[Tensor, Tensor]) -> None:
        if not all_finite(*(local(p.grad) for p in params)):  # type: ignore[arg-type]
            bad = next(p for p in params if not bool(torch.isfinite(p.grad).all()))  # type: ignore[arg-type]
            raise NonFiniteError(
                f"the gradient of a parameter of shape {tuple(bad.shape)} has NaN or Inf "
                "entries; lower the learning rate or check the loss "
                "(nonfinite='skip' skips such steps)"
            )

        def select(p: Tensor, group: dict[str, Any]) -> Any:
            return None if p.grad is None else declared_manifold(p, group)

        constrained = stacks(self.param_groups, select)
        old = [s.gather([saved_x[p] for p in s.params]) for s in constrained]
        for s, x in zip(constrained, old, strict=True):
            grads: list[Tensor] = []
            for p in s.params:
                assert p.grad is not None  # select() stacked only parameters with a gradient
                grads.append(p.grad)
            rgrad = s.manifold.proj_tangent(x, s.gather(grads))
            torch._foreach_copy_([local(g) for g in grads], s.scatter(rgrad))
        self.base.step()
        for s, x in zip(constrained, old, strict=True):
            self._put_back(s, x)

    def _put_back(self, stack: Stack, x_old: Tensor) -> None:
        manifold = stack.manifold
        stepped = stack.gather(stack.params)
        check_finite(stack, stepped, "the base optimizer's new value")
        if self.put_back == "retract":
            x_new = manifold.retract(x_old, manifold.proj_tangent(x_old, stepped - x_old))
        else:
            x_new = manifold.project(stepped)
        check_finite(stack, x_new, "the new value")
        dst, src = [local(p.data) for p in stack.params], stack.scatter(x_new)
        states = [self.state[p] for p in stack.params]
        floats = [local(v) for st in states for v in st.values() if _is_float_tensor(v)]
        if not all_finite(*floats):
            raise NonFiniteError(
                f"the base optimizer's new state of the parameter(s) on {manifold!r} has NaN "
                "or Inf entries (e.g. a squared gradient overflowed); lower the learning rate "
                "or clip the gradient (nonfinite='skip' skips such steps)"
            )
        for key in sorted(self.tangent_state):
            if not all(_is_vector_of(self.state[p].get(key), p) for p in stack.params):
                continue
            v = stack.gather([st[key] for st in states])
            moved = manifold.transp(x_old, x_new, v)
            check_finite(stack, moved, f"the moved state {key!r}")
            dst.extend(local(st[key]) for st in states)
            src.extend(stack.scatter(moved))
        torch._foreach_copy_(dst, src)


def _is_float_tensor(value: Any) -> bool:
    return isinstance(value, Tensor) and value.is_floating_point()


def _is_vector_of(value: Any, p: Tensor) -> bool:
    return isinstance(value, Tensor) and value.shape == p.shape


def _clone_state(state: dict[str, Any]) -> dict[str, Any]:
    return {k: v.clone() if isinstance(v, Tensor) else v for k, v in state.items()}
