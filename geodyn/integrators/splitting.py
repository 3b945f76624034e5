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
from ..manifolds.base import FusedStep, rattle_owned, shake_drift
from ._base import GeometricOptimizer, Proposal, check_finite, check_nonnegative, check_step_size
from ._sharding import local
from ._stacks import Stack, manifold_of, stacks
from ._workspace import Workspace
from .schemes import Op, Step, compile_scheme, lower

__all__ = ["Splitting"]


@dataclass
class _Phase:
    """A stack's point, momentum and (weight-decayed) gradient while a step runs.

    The momentum is ``p_owned`` once a letter has made it (the next letters may
    overwrite it) and ``unprojected`` while the letter's RATTLE at x is left to the
    next (the momentum is then P_x p); the point is ``x_kept`` once a drift wrote it
    into the kept memory; ``write``, where set, computes the last drift straight into
    the parameter and its momentum at the commit.
    """

    stack: Stack
    x: Tensor
    p: Tensor
    g: Tensor | None
    p_owned: bool = False
    unprojected: bool = False
    x_kept: bool = False
    write: Callable[[], None] | None = None


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
        # per stack (by its first parameter) and role, the memory the letters write into
        self._work = Workspace()

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
                for op, following in zip(ops, (*ops[1:], None), strict=True):
                    self._apply(op, phase, following, last=following is None)
        flags = {"pending": not finish}
        proposals = []
        for (stack, _), phase in zip(plan, phases, strict=True):
            self._resolve(phase)
            program = compile_scheme(stack.group["scheme"])
            pending = flags["pending"] and bool(program.finish)
            flag = {"pending": pending}
            if phase.write is not None:
                proposals.append(Proposal(stack, None, flags=flag, write=phase.write))
            else:
                proposals.append(Proposal(stack, phase.x, {"momentum": phase.p}, flag))
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

    def _apply(
        self, op: Step, phase: _Phase, following: Step | None = None, last: bool = False
    ) -> None:
        """Apply one letter to ``phase``: the sub-step's pure function, with h = lr * fraction,
        writing into the stack's kept memory (see :meth:`_memory`).

        ``following``: the letter after it in this step, if known. With
        ``linear_transport`` a B or O followed by a letter that projects at the same x (an
        A's fast path, a B, an O projecting its result) leaves its RATTLE to that letter
        (``unprojected``). ``last``: no letter follows it in this step.
        """
        group, manifold = phase.stack.group, phase.stack.manifold
        h = group["lr"] * op.fraction
        if op.letter == "A":
            if self._fused_drift(op, phase, h, last):
                return
            self._resolve(phase)
            move, p = _DRIFT[group["drift"]], phase.p
            phase.x, phase.p = move(manifold, phase.x, p, h, rattle=op.rattle)
            # a transport may hand p back (Euclidean): then it is as owned as before
            phase.p_owned |= phase.p.untyped_storage().data_ptr() != p.untyped_storage().data_ptr()
            return
        defer = manifold.linear_transport and following is not None and (
            following.letter in "AB" or following.letter == "O" and bool(following.project)
        )
        if op.letter == "B":
            assert phase.g is not None  # set by _refresh_gradient when the phase is made
            phase.p = kick(manifold, phase.x, phase.p, phase.g, h, rattle=not defer,
                           out=self._momentum_out(phase))
        else:
            if not op.project:
                self._resolve(phase)  # this O's p must be tangent
            gamma, tau = group["gamma"], group["tau"]
            _, sigma = ou_coefficients(h, gamma, tau)
            xi = None
            if sigma > 0:
                xi = self.normal_like(phase.x, self._memory(phase, "noise", phase.x))
            phase.p = thermostat(
                manifold, phase.x, phase.p, xi, h=h, gamma=gamma, tau=tau, project=op.project,
                rattle=not defer, out=self._momentum_out(phase),
            )
        phase.p_owned = True  # in the kept memory, or new
        phase.unprojected = defer

    def _resolve(self, phase: _Phase) -> None:
        """Apply the RATTLE a letter left to the next, where one is outstanding."""
        if phase.unprojected:
            phase.p = rattle_owned(phase.stack.manifold, phase.x, phase.p)
            phase.unprojected = False

    def _memory(self, phase: _Phase, role: str, like: Tensor) -> Tensor:
        """The stack's memory for ``role``, kept between steps: fresh memory for each
        sub-step's result costs more, on a CPU, than the pass that fills it."""
        return self._work.like((id(phase.stack.params[0]), role), like)

    def _momentum_out(self, phase: _Phase) -> Tensor:
        return phase.p if phase.p_owned else self._memory(phase, "p", phase.p)

    def _fused_drift(self, op: Step, phase: _Phase, h: float, last: bool) -> bool:
        """The manifold's own drift by its fast path
        (:meth:`~geodyn.manifolds.Manifold.fused_drift`) on a momentum a letter made: x'
        into the one of two kept tensors that x is not and p' over p or, for the step's
        last letter on a point in kept memory, both straight into the parameter and its
        momentum at the commit (no copy). False where it does not apply or its checks
        fail (nothing written: the generic drift then runs and reports)."""
        if phase.stack.group["drift"] != "auto" or not phase.p_owned:
            return False
        fused = phase.stack.manifold.fused_drift(
            phase.x, phase.p, h, rattle=op.rattle, project=phase.unprojected,
            scratch=self._work.scratch((id(phase.stack.params[0]), "fused_drift")),
        )
        if fused is None or not bool(torch.isfinite(fused.checks).all()):
            return False
        phase.unprojected = False
        if last and phase.x_kept and self._writable(phase.stack):
            phase.write = lambda: self._write(phase.stack, fused)
            return True
        out = self._memory(phase, "x", phase.x)
        if out is phase.x:
            out = self._memory(phase, "x'", phase.x)
        phase.x, phase.p = fused.write(out, phase.p)
        phase.x_kept = True
        return True

    def _writable(self, stack: Stack) -> bool:
        """Whether a step's values can be written straight into the stack's parameter and
        momentum: a parameter the stack views in place, a momentum laid out like it."""
        if not stack.in_place:
            return False
        param = stack.params[0]
        momentum = self.state.get(param, {}).get("momentum")  # adds no state entry
        return momentum is None or (
            (momentum.shape, local(momentum).stride(), momentum.dtype, momentum.device)
            == (param.shape, local(param).stride(), param.dtype, param.device)
        )

    def _write(self, stack: Stack, fused: FusedStep) -> None:
        (param,) = stack.params
        state = self.state[param]
        if "momentum" not in state:
            state["momentum"] = torch.empty_like(param)
        x = local(param.data)
        shape = (-1, *stack.point_shape)
        fused.write(x.view(shape), local(state["momentum"]).view(shape))


_DRIFT: dict[str, Callable[..., tuple[Tensor, Tensor]]] = {
    "auto": drift,
    "shake": shake_drift,
    "retract": retract_drift,
}
