r"""The splitting family: constrained Langevin integrators written as words over A, B, O.

With step size h, friction gamma, temperature tau, and k_L the number of letters L in
the word, every letter is a geometric sub-step on the manifold M:

* B (kick): $p \leftarrow \mathrm{rattle}_x\big(p - \tfrac{h}{k_B}\,(\nabla U(x) + w x)\big)$
* A (drift): $(x, p) \leftarrow \mathrm{drift}_M(x, p, \tfrac{h}{k_A})$, the manifold's A
  step (``Manifold.drift``); by default SHAKE/RATTLE,
  $x' = \mathrm{shake}(x, x + \tfrac{h}{k_A} p)$,
  $p \leftarrow \mathrm{rattle}_{x'}\big((x' - x)/\tfrac{h}{k_A}\big)$; the circle lift's
  drift is its exact rotation
* O (thermostat): $p \leftarrow c\,p + \sqrt{(1 - c^2)\,\tau}\;P_x \xi$,
  $c = e^{-\gamma h / k_O}$, $\xi \sim N(0, I)$

"BAOAB" is the constrained underdamped Langevin scheme g-BAOAB (SHAKE/RATTLE);
with tau = 0 it is heavy-ball momentum on M. Each letter is a pure function of tensors
(``geodyn.functional``'s ``kick``, ``drift`` / ``retract_drift``, ``thermostat``); which
RATTLEs a step may skip is decided when the word is compiled
(:func:`~geodyn.integrators.schemes.lower`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from ..functional.splitting import drift, kick, ou_coefficients, retract_drift, thermostat
from ..manifolds.base import shake_drift
from ._base import GeometricOptimizer, Proposal, check_finite, check_nonnegative, check_step_size
from ._sharding import local
from ._stacks import Stack, manifold_of, stacks
from .schemes import Op, Step, compile_scheme, lower

__all__ = ["Splitting"]


@dataclass
class _Phase:
    """A stack's point, momentum and (weight-decayed) gradient while a step runs."""

    stack: Stack
    x: Tensor
    p: Tensor
    g: Tensor | None


class Splitting(GeometricOptimizer):
    r"""Splitting integrator over the letters A (drift), B (kick), O (thermostat).

    One ``step()`` evaluates one gradient, at the current point: the kicks of
    consecutive steps are merged (see :mod:`geodyn.integrators.schemes`). For a word
    whose B's form one cyclic group (BAOAB, OBABO, ABOBA, BAB, ...) step n runs the
    word up to the group's first B (P) and then S P, with W = P S: the stored
    momentum lacks the outstanding part S, which :meth:`finalize` applies. The
    positions after a step are the word's own positions when S moves no point (BAOAB,
    OBABO, BAB: S is kicks and thermostats only). For ABOBA (P = A, S = BOBA) they
    are not: after step n the position is that of W^(n-1) followed by one half drift,
    half a drift past the word's position, and :meth:`finalize` (S: the kicks, the
    thermostat and the last half drift) ends W^n exactly. Words whose B's form several
    groups need ``step(closure)``.

    Momenta start at zero (tangent) and live in ``state[param]["momentum"]``.

    ``nonfinite``, ``seed`` and ``generator`` are those of
    :class:`~geodyn.integrators.GeometricOptimizer`.

    Args:
        params: parameters or param groups; a group may set ``lr``, ``gamma``, ``tau``,
            ``scheme``, ``weight_decay``, ``drift`` and ``manifold``.
        lr: step size h.
        gamma: friction gamma >= 0.
        tau: temperature tau >= 0 (0: deterministic, heavy-ball momentum on M).
        scheme: the word, e.g. "BAOAB" (default), "ABOBA", "OBABO", "BAB".
        weight_decay: w, adds w x to the gradient.
        drift: "auto" (the manifold's own A step, ``manifold.drift``: SHAKE/RATTLE unless
            the manifold has an exact flow, e.g. the circle lift's rotation), "shake"
            (SHAKE/RATTLE on every manifold) or "retract" (``retr_transp``).
        manifold: the manifold of groups that name none (by default each parameter's,
            :func:`~geodyn.integrators.manifold_of`).
    """

    def __init__(
        self,
        params: Iterable[Any],
        lr: float,
        gamma: float = 1.0,
        tau: float = 0.0,
        scheme: str = "BAOAB",
        weight_decay: float = 0.0,
        drift: str = "auto",
        manifold: Any = None,
        *,
        nonfinite: str = "raise",
        seed: int | None = None,
        generator: torch.Generator | None = None,
    ) -> None:
        defaults = dict(
            lr=lr,
            gamma=gamma,
            tau=tau,
            scheme=scheme,
            weight_decay=weight_decay,
            drift=drift,
            manifold=manifold,
        )
        super().__init__(params, defaults, nonfinite=nonfinite, seed=seed, generator=generator)

    def _check_group(self, group: dict[str, Any]) -> None:
        check_step_size(group)
        check_nonnegative(group, "gamma", "tau", "weight_decay")
        compile_scheme(group["scheme"])
        if group["drift"] not in _DRIFT:
            raise ValueError(f"drift must be 'auto', 'shake' or 'retract', got {group['drift']!r}")

    # ------------------------------------------------------------------ public
    @torch.no_grad()
    def finalize(self, closure: Callable[[], Any] | None = None) -> Any:
        """Apply the outstanding part S of the word (its last kicks), ending W^n exactly.

        Uses the current gradients (or ``closure``'s). The next ``step()`` then starts
        the word afresh with P.
        """
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        self._transaction(lambda: self._propose(None, finish=True))
        return loss

    # ------------------------------------------------------------------ stepping
    def _stacks(self) -> list[Stack]:
        def select(p: Tensor, group: dict[str, Any]) -> Any:
            return None if p.grad is None else manifold_of(p, group)

        return stacks(self.param_groups, select, key=lambda p: self._pending(p))

    def _pending(self, p: Tensor) -> bool:
        return bool(self.state[p].get("pending", False)) if p in self.state else False

    def _ops(self, stack: Stack, finish: bool) -> tuple[Step, ...]:
        program = compile_scheme(stack.group["scheme"])
        pending = self._pending(stack.params[0])
        ops: tuple[Op, ...]
        if finish:
            ops = program.finish if pending else ()
        else:
            ops = program.later if pending else program.first
        return lower(ops, stack.manifold.linear_transport)

    def _propose(self, closure: Callable[[], Any] | None, finish: bool = False) -> list[Proposal]:
        plan = [(s, self._ops(s, finish)) for s in self._stacks()]
        plan = [(s, ops) for s, ops in plan if ops]
        if not plan:
            return []
        refresh = any(op.letter == "G" for _, ops in plan for op in ops)
        phases = [self._phase(s) for s, _ in plan]
        if refresh:
            self._run_lockstep(plan, phases, closure)
        else:
            for (_, ops), phase in zip(plan, phases, strict=True):
                for op in ops:
                    self._apply(op, phase)
        flags = {"pending": not finish}
        proposals = []
        for (stack, _), phase in zip(plan, phases, strict=True):
            program = compile_scheme(stack.group["scheme"])
            pending = flags["pending"] and bool(program.finish)
            proposals.append(Proposal(stack, phase.x, {"momentum": phase.p}, {"pending": pending}))
        return proposals

    def _phase(self, stack: Stack) -> _Phase:
        x = stack.gather(stack.params)
        p = stack.gather([self._momentum(q) for q in stack.params])
        phase = _Phase(stack, x, p, None)
        self._refresh_gradient(phase)
        return phase

    def _momentum(self, q: Tensor) -> Tensor:
        momentum = self.state[q].get("momentum") if q in self.state else None
        return torch.zeros_like(q) if momentum is None else momentum

    def _refresh_gradient(self, phase: _Phase) -> None:
        stack = phase.stack
        grads = [p.grad for p in stack.params]
        if any(g is None for g in grads):
            raise ValueError("the closure left a parameter without a gradient; call backward()")
        g = stack.gather(grads)  # type: ignore[arg-type]
        check_finite(stack, g, "the gradient")
        wd = stack.group["weight_decay"]
        phase.g = g + wd * phase.x if wd else g

    def _run_lockstep(
        self, plan: list[tuple[Stack, tuple[Step, ...]]], phases: list[_Phase], closure: Any
    ) -> None:
        ops = plan[0][1]
        if any([o.letter for o in other] != [o.letter for o in ops] for _, other in plan):
            raise ValueError(
                "a scheme whose B's form several groups re-evaluates the gradient mid-step; "
                "then every param group must use the same scheme"
            )
        if closure is None:
            raise ValueError(
                f"scheme {plan[0][0].group['scheme']!r} needs the gradient at several points "
                "per step: call step(closure) with a closure that recomputes the loss and "
                "calls backward()"
            )
        saved = [(p, p.detach().clone()) for s, _ in plan for p in s.params]
        try:
            for i, op in enumerate(ops):
                if op.letter != "G":
                    for (_, own), phase in zip(plan, phases, strict=True):
                        self._apply(own[i], phase)
                    continue
                for phase in phases:
                    torch._foreach_copy_(
                        [local(p.data) for p in phase.stack.params], phase.stack.scatter(phase.x)
                    )
                with torch.enable_grad():
                    closure()
                for phase in phases:
                    self._refresh_gradient(phase)
        finally:
            torch._foreach_copy_([local(p.data) for p, _ in saved], [local(v) for _, v in saved])

    def _apply(self, op: Step, phase: _Phase) -> None:
        """Apply one letter to ``phase``: the sub-step's pure function, with h = lr * fraction."""
        group, manifold = phase.stack.group, phase.stack.manifold
        h = group["lr"] * op.fraction
        if op.letter == "B":
            assert phase.g is not None  # set by _refresh_gradient when the phase is made
            phase.p = kick(manifold, phase.x, phase.p, phase.g, h)
        elif op.letter == "A":
            move = _DRIFT[group["drift"]]
            phase.x, phase.p = move(manifold, phase.x, phase.p, h, rattle=op.rattle)
        else:
            gamma, tau = group["gamma"], group["tau"]
            _, sigma = ou_coefficients(h, gamma, tau)
            xi = self.normal_like(phase.x) if sigma > 0 else None
            phase.p = thermostat(
                manifold, phase.x, phase.p, xi, h=h, gamma=gamma, tau=tau, project=op.project
            )


_DRIFT: dict[str, Callable[..., tuple[Tensor, Tensor]]] = {
    "auto": drift,
    "shake": shake_drift,
    "retract": retract_drift,
}
