r"""Make any torch optimizer constraint-aware.

For every parameter with a declared manifold (``group["manifold"]`` or
``param.manifold``) one step of :class:`Constrained` is

1. $g \leftarrow P_{x}(g)$: the Riemannian gradient replaces ``param.grad`` (with a
   closure, after every evaluation the base makes, at the step's starting point x);
2. the base optimizer's step, $x \to \tilde x$ (its own weight decay included);
3. back onto M: $x' = R_{x}\big(P_{x}(\tilde x - x)\big)$ (``put_back="retract"``) or
   $x' = \mathrm{project}(\tilde x)$ (``put_back="project"``);
4. every state tensor that is a tangent vector (a key of ``tangent_state`` shaped like
   the parameter) is moved to $T_{x'}M$ by the manifold's ``transp``; centered
   RMSprop's ``square_avg`` = mean^2 + variance moves with its mean ``grad_avg``, keeping
   the variance (an elementwise scale) as it was.

Parameters without a declared manifold are left entirely to the base optimizer.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch import Tensor
from torch.optim import Optimizer

from ..manifolds.base import all_finite
from ._base import NonFiniteError, check_finite, check_nonfinite_policy, transaction
from ._sharding import local
from ._stacks import Stack, declared_manifold, stacks
from ._workspace import Workspace
from .wrapper import OptimizerWrapper, check_optimizer

__all__ = ["TANGENT_STATE_KEYS", "Constrained"]

TANGENT_STATE_KEYS: frozenset[str] = frozenset({"momentum_buffer", "exp_avg", "grad_avg"})
"""Base-optimizer state keys holding tangent vectors: the first moments and momenta of
torch.optim (``momentum_buffer``: SGD, RMSprop, Muon; ``exp_avg``: Adam, AdamW, NAdam,
RAdam, Adamax, SparseAdam; ``grad_avg``: centered RMSprop).

Left as they are: elementwise scales (``exp_avg_sq``, ``max_exp_avg_sq``,
``square_avg``, ``acc_delta``, ``sum``, ``exp_inf``, ``step_size``), scalars, ASGD's
``ax`` (an average of points, not a vector), Rprop's ``prev`` (sign bookkeeping whose
zeros mark skipped entries; a projection would blur them) and LBFGS's memory (flat
vectors over all parameters at once).
"""

_PUT_BACK = ("retract", "project")

# a moved mean whose second moment holds mean^2 + variance (centered RMSprop): the
# variance, an elementwise scale, stays as it was, so the second moment moves with the mean
_CENTRED = {"grad_avg": "square_avg"}


class Constrained(OptimizerWrapper):
    """Wrap a torch optimizer so that parameters with a manifold stay on it.

    The wrapper shares ``param_groups`` and ``state`` with the base optimizer (see
    :class:`~geodyn.integrators.OptimizerWrapper`), so LR schedulers, ``zero_grad``,
    ``state_dict`` and ``load_state_dict`` act on the base.

    Args:
        base_optimizer: any :class:`torch.optim.Optimizer` (SGD, Adam, AdamW, RMSprop,
            LBFGS with ``step(closure)``, ...).
        put_back: "retract" (retract from the old point along the tangent part of the
            base's update) or "project" (the manifold's projection of the base's result).
        tangent_state: state keys that hold tangent vectors; default
            :data:`TANGENT_STATE_KEYS`. Extend it for other optimizers, e.g.
            ``TANGENT_STATE_KEYS | {"my_momentum"}``.
        nonfinite: "raise" or "skip" on a non-finite gradient or result, or a failed
            solve; parameters and base state are then left exactly as before the step.

    The copies that make a step all or nothing (each parameter with a gradient and its
    base state) are kept between steps and written afresh at each: one copy of those
    tensors stays allocated, the memory a step needs at its peak anyway.
    """

    def __init__(
        self,
        base_optimizer: Optimizer,
        *,
        put_back: str = "retract",
        tangent_state: Iterable[str] = TANGENT_STATE_KEYS,
        nonfinite: str = "raise",
    ) -> None:
        check_optimizer(base_optimizer, "base_optimizer")
        if put_back not in _PUT_BACK:
            raise ValueError(f"put_back must be 'retract' or 'project', got {put_back!r}")
        check_nonfinite_policy(nonfinite)
        super().__init__(base_optimizer)
        self.put_back = put_back
        self.tangent_state = frozenset(tangent_state)
        self.nonfinite = nonfinite
        # the rollback copies, kept between steps (see _copy)
        self._copies = Workspace()

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.base!r}, put_back={self.put_back!r})"

    @torch.no_grad()
    def step(self, closure: Callable[[], Any] | None = None) -> Any:  # type: ignore[override]
        """Project gradients, run the base step, put parameters back, move tangent state.

        With ``closure`` the base step receives it (LBFGS evaluates it several times),
        each evaluation followed by the gradient projection. All or nothing: on a fault
        nothing (parameters, base state) changes.

        Returns:
            What the base step returns (the closure's loss, or ``None``).
        """
        params = [
            p
            for g in self.param_groups
            for p in g["params"]
            if p.grad is not None or (closure is not None and p.requires_grad)
        ]
        saved_x = {p: self._copy(p, None, p.detach()) for p in params}
        saved_state = {
            p: {k: self._copy(p, k, v) if isinstance(v, Tensor) else v
                for k, v in self.state[p].items()}
            for p in params if p in self.state
        }
        losses: list[Any] = []

        def rollback() -> None:
            for p, x in saved_x.items():
                p.data.copy_(x)
            for p in params:
                if p in saved_state:
                    self.state[p] = saved_state[p]  # the copies become the state
                elif p in self.state:
                    del self.state[p]
            self._copies.drop(lambda key: key[1] is not None)  # type: ignore[index]

        done, loss = transaction(
            lambda: self._step(saved_x, closure, losses),
            params=params,
            nonfinite=self.nonfinite,
            rollback=rollback,
            stacklevel=4,
        )
        return loss if done else (losses[0] if losses else None)

    def _copy(self, p: Tensor, key: str | None, t: Tensor) -> Tensor:
        """A copy of ``t`` (``p`` itself, key None, or its state ``key``) for the rollback,
        written into the copy kept from the last step where it fits: fresh memory for
        every copy every step costs more, on a CPU, than the copy itself. A sparse
        tensor is cloned."""
        if t.layout != torch.strided:
            return t.clone()
        return self._copies.like((id(p), key), t).copy_(t)

    def _constrained(self) -> list[Stack]:
        def select(p: Tensor, group: dict[str, Any]) -> Any:
            return None if p.grad is None else declared_manifold(p, group)

        return stacks(self.param_groups, select)

    def _step(
        self, saved_x: dict[Tensor, Tensor], closure: Callable[[], Any] | None, losses: list[Any]
    ) -> Any:
        if closure is None:
            self._project_gradients(saved_x)
            loss = self.base.step()
        else:

            def projected() -> Any:
                with torch.enable_grad():
                    value = closure()
                losses.append(value)
                with torch.no_grad():
                    self._project_gradients(saved_x)
                return value

            loss = self.base.step(projected)
        for s in self._constrained():
            self._put_back(s, s.gather([saved_x[p] for p in s.params]))
        return loss

    def _project_gradients(self, saved_x: dict[Tensor, Tensor]) -> None:
        """Check every gradient is finite; replace each constrained one by P_x g (x: the start)."""
        grads = [p.grad for g in self.param_groups for p in g["params"] if p.grad is not None]
        if not all_finite(*(local(g) for g in grads)):
            bad = next(g for g in grads if not bool(torch.isfinite(g).all()))
            raise NonFiniteError(
                f"the gradient of a parameter of shape {tuple(bad.shape)} has NaN or Inf "
                "entries; lower the learning rate or check the loss "
                "(nonfinite='skip' skips such steps)"
            )
        for s in self._constrained():
            x = s.gather([saved_x[p] for p in s.params])
            stacked: list[Tensor] = [p.grad for p in s.params]  # type: ignore[misc]
            g = s.gather(stacked)
            checks = s.manifold.fused_proj_tangent_(x, g) if _aliases(g, stacked) else None
            if checks is not None:
                check_finite(s, checks, "the Riemannian gradient")
                continue
            rgrad = s.manifold.proj_tangent(x, g)
            torch._foreach_copy_([local(grad) for grad in stacked], s.scatter(rgrad))

    def _put_back(self, stack: Stack, x_old: Tensor) -> None:
        if self._fused_put_back(stack, x_old):
            return
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
        _check_state(stack, states)
        for key in sorted(self.tangent_state):
            if not all(_is_vector_of(self.state[p].get(key), p) for p in stack.params):
                continue
            v = stack.gather([st[key] for st in states])
            moved = manifold.transp(x_old, x_new, v)
            check_finite(stack, moved, f"the moved state {key!r}")
            dst.extend(local(st[key]) for st in states)
            src.extend(stack.scatter(moved))
            second = _CENTRED.get(key)
            if second is not None and all(_is_vector_of(st.get(second), p) for st, p in
                                          zip(states, stack.params, strict=True)):
                variance = (stack.gather([st[second] for st in states]) - v * v).clamp_(min=0)
                dst.extend(local(st[second]) for st in states)
                src.extend(stack.scatter(variance.addcmul_(moved, moved)))
        torch._foreach_copy_(dst, src)

    def _fused_put_back(self, stack: Stack, x_old: Tensor) -> bool:
        """The manifold's in-place put-back (:meth:`~geodyn.manifolds.Manifold.fused_put_back`)
        where it applies: ``put_back="retract"``, one parameter the stack views in place,
        tangent state viewed in place too and no centred second moment. Then the base's
        state is checked, and the put-back's checks, the few numbers it computes anyway (a
        NaN or Inf entry of the old point or of the base's result reaches them): where one
        is not finite the step fails and the wrapper restores its copies. Returns whether
        it ran.
        """
        if self.put_back != "retract" or not stack.in_place:
            return False
        (p,) = stack.params
        state = self.state[p]
        keys = [k for k in sorted(self.tangent_state) if _is_vector_of(state.get(k), p)]
        if any(_is_vector_of(state.get(_CENTRED.get(k)), p) for k in keys):
            return False
        y = stack.gather([p])  # a view of p: stack.in_place
        vectors = [stack.gather([state[k]]) for k in keys]
        if not all(_aliases(v, [state[k]]) for v, k in zip(vectors, keys, strict=True)):
            return False
        checks = stack.manifold.fused_put_back(x_old, y, vectors)
        if checks is None:
            return False
        _check_state(stack, [state])
        check_finite(stack, checks, "the base optimizer's new value, put back")
        return True


def _aliases(gathered: Tensor, tensors: list[Tensor]) -> bool:
    """Whether ``gathered`` (a stack's gather of ``tensors``) is a view of the one tensor
    given, so that writing into it writes into that tensor."""
    return len(tensors) == 1 and gathered.data_ptr() == local(tensors[0]).data_ptr()


def _check_state(stack: Stack, states: list[dict[str, Any]]) -> None:
    floats = [local(v) for st in states for v in st.values() if _is_float_tensor(v)]
    if not all_finite(*floats):
        raise NonFiniteError(
            f"the base optimizer's new state of the parameter(s) on {stack.manifold!r} has "
            "NaN or Inf entries (e.g. a squared gradient overflowed); lower the learning "
            "rate or clip the gradient (nonfinite='skip' skips such steps)"
        )


def _is_float_tensor(value: Any) -> bool:
    return isinstance(value, Tensor) and value.is_floating_point()


def _is_vector_of(value: Any, p: Tensor) -> bool:
    return isinstance(value, Tensor) and value.shape == p.shape

