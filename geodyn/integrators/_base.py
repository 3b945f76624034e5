"""What every geodyn optimizer shares: all-or-nothing steps (:func:`transaction`, the
one fault policy of the integrators and of ``Constrained``) and, for the integrators, a
seeded noise generator kept in ``state_dict`` (new values are computed first and
committed only when every parameter succeeded).
"""

from __future__ import annotations

import abc
import contextlib
import math
import warnings
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, TypeVar

import torch
from torch import Tensor
from torch.optim import Optimizer

from ..manifolds import ConvergenceError
from ..manifolds.base import all_finite
from ._portable import group_manifolds_kept, without_manifolds
from ._sharding import agree, local
from ._stacks import Stack
from ._workspace import in_memory_order

__all__ = ["GeometricOptimizer", "NonFiniteError", "Proposal", "transaction"]

T = TypeVar("T")

_NONFINITE = ("raise", "skip")
_ELSEWHERE = (
    "the step failed on another rank holding a shard of these parameters (a non-finite "
    "value or a failed constraint solve there); every rank skips or raises it together"
)


class NonFiniteError(ValueError):
    """A gradient, or the values a step would produce, contain NaN or Inf."""


@dataclass
class Proposal:
    """New values for one stack: positions, stacked state tensors, and plain state entries.

    A proposal with ``write`` carries no tensors: its values are already known to be
    finite, and ``write()`` computes them straight into the parameters and their state
    at the commit, after every check of the step passed (no copy).
    """

    stack: Stack
    x: Tensor | None
    state: dict[str, Tensor] = field(default_factory=dict)
    flags: dict[str, Any] = field(default_factory=dict)
    write: Callable[[], None] | None = None


def skippable(err: Exception) -> bool:
    """Whether ``nonfinite="skip"`` may skip a step that raised ``err``."""
    return isinstance(err, NonFiniteError | ConvergenceError)


def check_finite(stack: Stack, t: Tensor, what: str) -> None:
    """Raise :class:`NonFiniteError` naming ``what`` if ``t`` has NaN or Inf entries."""
    if not all_finite(t):
        shapes = ", ".join(str(tuple(p.shape)) for p in stack.params)
        raise NonFiniteError(
            f"{what} of the parameter(s) of shape {shapes} on {stack.manifold!r} has NaN or "
            "Inf entries; lower the learning rate or check the loss "
            "(nonfinite='skip' skips such steps)"
        )


def no_autocast() -> contextlib.ExitStack:
    """Autocast off (CPU, CUDA) while a step's geometry runs in the stack's compute dtype."""
    stack = contextlib.ExitStack()
    for device in ("cpu", "cuda"):
        if torch.is_autocast_enabled(device):
            stack.enter_context(torch.autocast(device, enabled=False))
    return stack


def make_generator(seed: int | None, generator: torch.Generator | None) -> torch.Generator:
    """The optimizer's noise generator: ``generator``, or a new one seeded with ``seed``.

    With neither, the seed is drawn from torch's global generator, so
    ``torch.manual_seed`` makes runs repeatable.
    """
    if generator is not None and seed is not None:
        raise ValueError("pass either seed or generator, not both")
    if generator is not None:
        return generator
    if seed is None:
        seed = int(torch.randint(0, 2**62, (1,)))
    return torch.Generator().manual_seed(int(seed))


def check_nonnegative(group: dict[str, Any], *names: str) -> None:
    """Raise ``ValueError`` if a hyperparameter of ``group`` is negative or not finite."""
    for name in names:
        value = group[name]
        if not (isinstance(value, (int, float)) and math.isfinite(value) and value >= 0):
            raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")


def check_step_size(group: dict[str, Any]) -> None:
    """Raise ``ValueError`` unless ``group["lr"]`` is a positive finite number."""
    lr = group["lr"]
    if not (isinstance(lr, (int, float)) and math.isfinite(lr) and lr > 0):
        raise ValueError(f"lr (the step size h) must be a finite number > 0, got {lr!r}")


def check_nonfinite_policy(nonfinite: str) -> None:
    """Raise ``ValueError`` unless ``nonfinite`` is ``"raise"`` or ``"skip"``."""
    if nonfinite not in _NONFINITE:
        raise ValueError(f"nonfinite must be 'raise' or 'skip', got {nonfinite!r}")


def transaction(
    attempt: Callable[[], T],
    *,
    params: Iterable[Tensor],
    nonfinite: str,
    rollback: Callable[[], None],
    stacklevel: int = 2,
) -> tuple[bool, T | None]:
    """All or nothing: ``attempt()``, then (True, its result) when it succeeded on every rank.

    On a fault (an exception here, or a failure on another rank holding a shard of
    ``params``) ``rollback()`` undoes whatever the attempt changed, then the policy
    ``nonfinite`` applies: ``"raise"`` re-raises; ``"skip"`` warns and returns
    (False, None) for a skippable fault (:class:`NonFiniteError`, ``ConvergenceError``)
    and re-raises any other. The attempt runs with autocast off.
    """
    error: Exception | None = None
    result: T | None = None
    try:
        with no_autocast():
            result = attempt()
    except Exception as err:
        error = err
    if not agree(error is None, params) and error is None:
        error = NonFiniteError(_ELSEWHERE)
    if error is None:
        return True, result
    rollback()
    if nonfinite == "raise" or not skippable(error):
        raise error
    warnings.warn(
        f"step skipped, parameters and optimizer state unchanged: {error}",
        RuntimeWarning,
        stacklevel=stacklevel,
    )
    return False, None


class GeometricOptimizer(Optimizer, abc.ABC):
    """Base of the geodyn integrators: seeded noise, all-or-nothing steps, fault policy.

    Args:
        params: parameters or param groups, as for any ``torch.optim.Optimizer``.
        defaults: default hyperparameters of a param group.
        nonfinite: ``"raise"`` (a non-finite gradient or a failed SHAKE raises) or
            ``"skip"`` (the step is skipped with a warning). Either way parameters,
            optimizer state and the generator are left exactly as before the step.
        seed: seed of the optimizer's own :class:`torch.Generator` (deterministic
            methods keep it unused).
        generator: a generator to use instead (not together with ``seed``).
    """

    def __init__(
        self,
        params: Iterable[Any],
        defaults: dict[str, Any],
        *,
        nonfinite: str = "raise",
        seed: int | None = None,
        generator: torch.Generator | None = None,
    ) -> None:
        check_nonfinite_policy(nonfinite)
        super().__init__(params, defaults)
        self.nonfinite = nonfinite
        self.generator = make_generator(seed, generator)

    # ------------------------------------------------------------------ param groups
    def add_param_group(self, param_group: dict[str, Any]) -> None:
        super().add_param_group(param_group)
        try:
            self._check_group(self.param_groups[-1])
        except ValueError:
            self.param_groups.pop()
            raise

    @abc.abstractmethod
    def _check_group(self, group: dict[str, Any]) -> None:
        """Raise ``ValueError`` naming the hyperparameter if ``group`` is invalid."""

    # ------------------------------------------------------------------ checkpoints
    def state_dict(self) -> dict[str, Any]:
        """Torch's optimizer state plus ``"generator"``: the noise generator's state."""
        out = without_manifolds(super().state_dict())
        out["generator"] = self.generator.get_state()
        return out

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restore parameters' state, param groups and the noise generator."""
        state_dict = dict(state_dict)
        generator_state = state_dict.pop("generator", None)
        with group_manifolds_kept(self):
            super().load_state_dict(state_dict)
        if generator_state is not None:
            self.generator.set_state(generator_state)

    # ------------------------------------------------------------------ noise
    def normal_like(self, x: Tensor, out: Tensor | None = None) -> Tensor:
        """Standard normal noise shaped like ``x``, from the optimizer's generator; drawn
        into ``out`` (a tensor like x) where the generator is on x's device, in the order
        of its memory (a draw into a strided tensor would scatter each number)."""
        device = self.generator.device
        if out is not None and device == x.device:
            dense = in_memory_order(out)
            torch.randn(dense.shape, generator=self.generator, dtype=x.dtype, out=dense)
            return out
        xi = torch.randn(x.shape, generator=self.generator, dtype=x.dtype, device=device)
        return xi.to(x.device)

    # ------------------------------------------------------------------ stepping
    @torch.no_grad()
    def step(self, closure: Callable[[], Any] | None = None) -> Any:  # type: ignore[override]
        """One step of the integrator, all or nothing.

        Args:
            closure: re-evaluates the loss and its gradient; called once first (under
                ``torch.enable_grad``) as in any torch optimizer.

        Returns:
            The closure's loss, or ``None``.
        """
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        self._transaction(lambda: self._propose(closure))
        return loss

    def _transaction(self, propose: Callable[[], list[Proposal]]) -> bool:
        """Run ``propose`` in a :func:`transaction`; commit its values if it succeeded."""
        generator_state = self.generator.get_state()

        def attempt() -> list[Proposal]:
            proposals = propose()
            copied = [(pr, pr.x) for pr in proposals if pr.x is not None]
            outputs = [t for pr, x in copied for t in (x, *pr.state.values())]
            if not all_finite(*outputs):
                for pr, x in copied:
                    check_finite(pr.stack, x, "the new value")
                    for key, t in pr.state.items():
                        check_finite(pr.stack, t, f"the new state {key!r}")
            return proposals

        def rollback() -> None:
            self.generator.set_state(generator_state)

        done, proposals = transaction(
            attempt,
            params=(p for group in self.param_groups for p in group["params"]),
            nonfinite=self.nonfinite,
            rollback=rollback,
            stacklevel=5,
        )
        if proposals is not None:
            self._commit(proposals)
        return done

    def _commit(self, proposals: list[Proposal]) -> None:
        dst: list[Tensor] = []
        src: list[Tensor] = []
        for pr in proposals:
            for p in pr.stack.params:
                self.state[p].update(pr.flags)
            if pr.write is not None:
                pr.write()
                continue
            assert pr.x is not None
            for p, value in zip(pr.stack.params, pr.stack.scatter(pr.x), strict=True):
                dst.append(local(p.data))
                src.append(value)
            for key, stacked in pr.state.items():
                for p, value in zip(pr.stack.params, pr.stack.scatter(stacked), strict=True):
                    state = self.state[p]
                    if key not in state:
                        state[key] = torch.zeros_like(p, memory_format=torch.preserve_format)
                    dst.append(local(state[key]))
                    src.append(value)
        if dst:
            torch._foreach_copy_(dst, src)

    @abc.abstractmethod
    def _propose(self, closure: Callable[[], Any] | None) -> list[Proposal]:
        """New values for every stack, computed without touching parameters or state."""
