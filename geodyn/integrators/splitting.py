r"""The splitting family: constrained Langevin integrators written as words over A, B, O.

With step size h, friction gamma, temperature tau, and k_L the number of letters L in
the word, every letter is a geometric sub-step on the manifold M:

* B (kick): $p \leftarrow \mathrm{rattle}_x\big(p - \tfrac{h}{k_B}\,(\nabla U(x) + w x)\big)$
* A (drift): $x' = \mathrm{shake}(x, x + \tfrac{h}{k_A} p)$,
  $p \leftarrow \mathrm{rattle}_{x'}\big((x' - x)/\tfrac{h}{k_A}\big)$ (SHAKE/RATTLE), or
  $(x', p) = \mathrm{retr\_transp}(x, \tfrac{h}{k_A} p, p)$ (exact geodesic flows)
* O (thermostat): $p \leftarrow c\,p + \sqrt{(1 - c^2)\,\tau}\;P_x \xi$,
  $c = e^{-\gamma h / k_O}$, $\xi \sim N(0, I)$

"BAOAB" is the constrained underdamped Langevin scheme g-BAOAB (SHAKE/RATTLE);
with tau = 0 it is heavy-ball momentum on M.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from ._base import GeometricOptimizer, Proposal, check_finite, check_nonnegative, check_step_size
from ._sharding import local
from ._stacks import Stack, manifold_of, stacks
from .schemes import Op, compile_scheme

__all__ = ["Splitting"]

_DRIFTS = ("auto", "shake", "retract")


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
    whose B's form one cyclic group (BAOAB, OBABO, ABOBA, BAB, ...) the positions
    after each step are those of the word's trajectory, and the stored momentum lacks
    the outstanding kick S; :meth:`finalize` applies it. Words whose B's form several
    groups need ``step(closure)``.

    Momenta start at zero (tangent) and live in ``state[param]["momentum"]``.

    Args:
        params: parameters or param groups; a group may set ``lr``, ``gamma``, ``tau``,
            ``scheme``, ``weight_decay``, ``drift`` and ``manifold``.
        lr: step size h.
        gamma: friction gamma >= 0.
        tau: temperature tau >= 0 (0: deterministic, heavy-ball momentum on M).
        scheme: the word, e.g. "BAOAB" (default), "ABOBA", "OBABO", "BAB".
        weight_decay: w, adds w x to the gradient.
        drift: "shake" (SHAKE/RATTLE), "retract" (``retr_transp``), or "auto":
            retract when ``manifold.geodesic_drift`` (an exact geodesic flow), else shake.
        manifold: the manifold of every parameter of groups that do not name one
            (default: ``param.manifold`` for geoopt parameters, else Euclidean).
        nonfinite: "raise" or "skip" on a non-finite gradient or failed SHAKE.
        seed: seed of the noise generator; or pass ``generator``.
        generator: a :class:`torch.Generator` for the noise.
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
        if group["drift"] not in _DRIFTS:
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

    def _ops(self, stack: Stack, finish: bool) -> tuple[Op, ...]:
        program = compile_scheme(stack.group["scheme"])
        pending = self._pending(stack.params[0])
        if finish:
            return program.finish if pending else ()
        return program.later if pending else program.first

    def _propose(self, closure: Callable[[], Any] | None, finish: bool = False) -> list[Proposal]:
        plan = [(s, self._ops(s, finish)) for s in self._stacks()]
        plan = [(s, ops) for s, ops in plan if ops]
        if not plan:
            return []
        refresh = any(letter == "G" for _, ops in plan for letter, _ in ops)
        phases = [self._phase(s) for s, _ in plan]
        if refresh:
            self._run_lockstep(plan, phases, closure)
        else:
            for (_, ops), phase in zip(plan, phases, strict=True):
                for i, op in enumerate(ops):
                    following = ops[i + 1][0] if i + 1 < len(ops) else ""
                    self._apply(op, phase, projected_next=following in ("B", "O"))
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
        self, plan: list[tuple[Stack, tuple[Op, ...]]], phases: list[_Phase], closure: Any
    ) -> None:
        ops = plan[0][1]
        if any(o != ops for _, o in plan):
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
            for op in ops:
                if op[0] != "G":
                    for phase in phases:
                        self._apply(op, phase)
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

    def _apply(self, op: Op, phase: _Phase, projected_next: bool = False) -> None:
        """Apply one letter to ``phase``.

        ``projected_next``: the next op projects the momentum at the same point (B and O
        do); with linear transport an A then leaves its RATTLE to it, P(a P u + v) = P(a u + v).
        """
        letter, fraction = op
        group, manifold = phase.stack.group, phase.stack.manifold
        h = group["lr"] * fraction
        if letter == "B":
            assert phase.g is not None  # set by _refresh_gradient when the phase is made
            phase.p = manifold.rattle(phase.x, torch.add(phase.p, phase.g, alpha=-h))
        elif letter == "A":
            drift = group["drift"]
            if drift == "auto":
                drift = "retract" if manifold.geodesic_drift else "shake"
            # no RATTLE here when the next op's projection does it (linear transport)
            rattled = projected_next and manifold.linear_transport
            if drift == "retract" and rattled:  # that projection also moves p
                x_new, p = manifold.retract(phase.x, torch.mul(phase.p, h)), phase.p
            elif drift == "retract":
                x_new, p = manifold.retr_transp(phase.x, torch.mul(phase.p, h), phase.p)
                rattled = manifold.linear_transport  # the transport was the RATTLE
            else:
                x_new = manifold.shake(phase.x, torch.add(phase.x, phase.p, alpha=h))
                p = torch.sub(x_new, phase.x).div_(h)
            if not rattled:
                p = manifold.rattle(x_new, p)
            phase.x, phase.p = x_new, p
        elif letter == "O":
            c = math.exp(-group["gamma"] * h)
            sigma = math.sqrt((1 - c * c) * group["tau"])
            if manifold.linear_transport:  # P(c p + sigma xi): also the RATTLE an A left
                p = torch.mul(phase.p, c)
                if sigma > 0:
                    p.add_(self.normal_like(phase.x), alpha=sigma)
                phase.p = manifold.rattle(phase.x, p)
            elif sigma > 0:
                xi = manifold.proj_tangent(phase.x, self.normal_like(phase.x))
                phase.p = xi.mul_(sigma).add_(phase.p, alpha=c)
            else:
                phase.p = torch.mul(phase.p, c)
