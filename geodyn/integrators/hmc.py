r"""Constrained Hamiltonian Monte Carlo: RATTLE proposals, a Metropolis test and a reverse check.

One step from x on M, targeting exp(-U(x)/tau) d sigma_M (sigma_M the surface measure):

1. momentum $p = \sqrt{\tau}\,P_x \xi$, $\xi \sim N(0, I)$;
2. L RATTLE steps of size h, built from the splitting family's sub-steps (B, A, B):
   $p \leftarrow \mathrm{rattle}_x(p - \tfrac h2 \nabla U(x))$,
   $x' = \mathrm{shake}(x, x + h p)$, $p \leftarrow \mathrm{rattle}_{x'}((x' - x)/h)$
   (the manifold's ``drift`` verb where it defines one),
   $p \leftarrow \mathrm{rattle}_{x'}(p - \tfrac h2 \nabla U(x'))$;
3. the reverse check: L RATTLE steps from $(x_L, -p_L)$ must return to x (to
   ``reverse_tol``); SHAKE's equation has several solutions, and the map is an
   involution (so the Metropolis ratio is the energy difference alone) only where
   forward and backward solves pick corresponding ones (Zappa, Holmes-Cerfon and
   Goodman, CPAM 2018; Lelievre, Rousset and Stoltz, Math. Comp. 2019);
4. accept $x_L$ with probability $\min(1, e^{-(H(x_L, p_L) - H(x, p))})$,
   $H = (U + |p|^2 / 2) / \tau$; a failed solve or a failed reverse check rejects.

RATTLE is symplectic on T^*M and the check makes the proposal an involution, so the
chain is exactly reversible for exp(-U/tau) d sigma_M at every h (no O(h^p) bias).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch import Tensor

from ..manifolds import ConvergenceError, Manifold
from ._base import (
    GeometricOptimizer,
    NonFiniteError,
    Proposal,
    check_finite,
    check_nonnegative,
    check_step_size,
)
from ._stacks import Stack, manifold_of

__all__ = ["ConstrainedHMC"]


def _drift_points(
    manifold: Manifold, x: Tensor, p: Tensor, h: float
) -> tuple[Tensor, Tensor, Tensor]:
    """The drift of every point, and a mask (over the points) of those whose solve failed.

    A manifold raises for the whole batch when one point's solve fails; then the batch
    is split in halves until the failing points are alone (about 2 k log2(n) calls for
    k failures among n points), so one chain's failure rejects that chain alone.
    """
    nd = manifold.ndim
    batch, point = x.shape[: x.dim() - nd], x.shape[x.dim() - nd :]
    xs, ps = x.reshape(-1, *point), p.reshape(-1, *point)
    ys, qs = xs.clone(), ps.clone()
    failed = torch.zeros(xs.shape[0], dtype=torch.bool)
    pending = [(0, xs.shape[0])]
    while pending:
        lo, hi = pending.pop()
        try:
            y, q = manifold.drift(xs[lo:hi], ps[lo:hi], h)
        except ConvergenceError:
            if hi - lo == 1:
                failed[lo] = True
            else:
                mid = (lo + hi) // 2
                pending += [(lo, mid), (mid, hi)]
            continue
        ys[lo:hi], qs[lo:hi] = y, q
    n = xs.shape[0]
    finite = torch.isfinite(ys).reshape(n, -1).all(-1) & torch.isfinite(qs).reshape(n, -1).all(-1)
    failed |= ~finite
    keep = failed.reshape(-1, *([1] * nd))
    ys, qs = torch.where(keep, xs, ys), torch.where(keep, ps, qs)
    return ys.reshape(x.shape), qs.reshape(x.shape), failed.reshape(batch)


class ConstrainedHMC(GeometricOptimizer):
    r"""Exact sampler of exp(-U(x)/tau) on any manifold: constrained HMC with RATTLE.

    ``step(closure)`` makes one Metropolis-adjusted proposal of ``steps`` RATTLE steps;
    the closure is evaluated 2 L + 1 times (forward, reverse check, and at the start).
    It returns U and leaves dU/dx in ``.grad`` (``loss.sum().backward()``). U of shape
    ``()`` is one chain; U of shape ``B`` (the leading dimensions of every parameter)
    is ``B`` independent chains, each accepted or rejected on its own, so one
    parameter of shape (chains, *point) runs many chains at once.

    Attributes:
        stats: per-chain counts ``proposals``, ``accepted``, ``reverse_failures``
            (the reverse check failed), ``solve_failures`` (a SHAKE solve failed or
            produced a non-finite point); kept in ``state_dict``.

    Args:
        params: parameters or param groups; a group may set ``lr``, ``steps``, ``tau``
            and ``manifold``.
        lr: RATTLE step size h.
        steps: RATTLE steps L per proposal.
        tau: temperature tau > 0.
        reverse_tol: max |x_back - x| accepted by the reverse check (default 1e-6
            in float64, 1e-3 in lower precision).
        manifold: the manifold of every parameter of groups that do not name one.
        nonfinite: "raise" or "skip" when U or its gradient at the current point is
            not finite (non-finite proposals are simply rejected).
        seed: seed of the noise generator; or pass ``generator``.
        generator: a :class:`torch.Generator` for momenta and accept/reject draws.
    """

    def __init__(
        self,
        params: Iterable[Any],
        lr: float,
        steps: int = 5,
        tau: float = 1.0,
        reverse_tol: float | None = None,
        manifold: Any = None,
        *,
        nonfinite: str = "raise",
        seed: int | None = None,
        generator: torch.Generator | None = None,
    ) -> None:
        if reverse_tol is not None and not (math.isfinite(reverse_tol) and reverse_tol > 0):
            raise ValueError(
                f"reverse_tol must be a finite number > 0 or None, got {reverse_tol!r}"
            )
        self.reverse_tol = reverse_tol
        defaults = dict(lr=lr, steps=steps, tau=tau, manifold=manifold)
        super().__init__(params, defaults, nonfinite=nonfinite, seed=seed, generator=generator)
        self.stats = {"proposals": 0, "accepted": 0, "reverse_failures": 0, "solve_failures": 0}

    def _check_group(self, group: dict[str, Any]) -> None:
        check_step_size(group)
        check_nonnegative(group, "tau")
        if group["tau"] <= 0:
            raise ValueError(f"tau must be > 0 for a sampler, got {group['tau']!r}")
        steps = group["steps"]
        if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
            raise ValueError(
                f"steps (RATTLE steps per proposal) must be an int >= 1, got {steps!r}"
            )

    @property
    def acceptance_rate(self) -> float:
        """Accepted / proposed, over every chain and step so far (nan before the first)."""
        n = self.stats["proposals"]
        return self.stats["accepted"] / n if n else math.nan

    def state_dict(self) -> dict[str, Any]:
        out = super().state_dict()
        out["stats"] = dict(self.stats)
        return out

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        state_dict = dict(state_dict)
        stats = state_dict.pop("stats", None)
        super().load_state_dict(state_dict)
        if stats is not None:
            self.stats = dict(stats)

    @torch.no_grad()
    def step(self, closure: Callable[[], Any] | None = None) -> Any:  # type: ignore[override]
        """One Metropolis-adjusted RATTLE proposal per chain; returns U at the start."""
        if closure is None:
            raise ValueError(
                "ConstrainedHMC needs step(closure): the closure returns U (one value per chain) "
                "and sets the gradients, e.g. loss = U(x); loss.sum().backward(); return loss"
            )
        with torch.enable_grad():
            u0 = closure()
        self._start = u0
        self._transaction(lambda: self._propose(closure))
        return u0

    # ------------------------------------------------------------------ the proposal
    def _stacks(self) -> list[Stack]:
        return [Stack(manifold_of(p, g), g, [p]) for g in self.param_groups for p in g["params"]]

    def _propose(self, closure: Callable[[], Any] | None) -> list[Proposal]:
        assert closure is not None
        stacks = self._stacks()
        if not stacks:
            return []
        params = [s.params[0] for s in stacks]
        u0 = self._energy(self._start)
        chain_shape = u0.shape
        if not bool(torch.isfinite(u0).all()):
            raise NonFiniteError(
                "U at the current point is not finite; start the chains where exp(-U) > 0"
            )
        for p, s in zip(params, stacks, strict=True):
            s.manifold.check_shape(tuple(p.shape), "parameter")
            if tuple(p.shape[: len(chain_shape)]) != tuple(chain_shape) or (
                p.dim() - len(chain_shape) < s.manifold.ndim
            ):
                raise ValueError(
                    f"the closure returned U of shape {tuple(chain_shape)} (one value per chain) "
                    f"but a parameter has shape {tuple(p.shape)} on {s.manifold!r}: its leading "
                    "dimensions must be the chains' and whole points must follow"
                )
        x0 = [p.detach().clone() for p in params]
        g0 = [self._grad(p) for p in params]
        for s, g in zip(stacks, g0, strict=True):
            check_finite(s, g, "the gradient")
        tau = stacks[0].group["tau"]
        p0 = [
            s.manifold.proj_tangent(x, self.normal_like(x)).mul_(math.sqrt(tau))
            for s, x in zip(stacks, x0, strict=True)
        ]
        try:
            fwd = self._rattle(stacks, closure, x0, p0, g0, chain_shape)
            xl, pl, gl, ul, failed = fwd
            back = self._rattle(stacks, closure, xl, [-q for q in pl], gl, chain_shape)
        finally:
            torch._foreach_copy_([p.data for p in params], x0)
        xb, _, _, _, failed_back = back
        failed = failed | failed_back
        tol = self.reverse_tol or (1e-6 if x0[0].dtype == torch.float64 else 1e-3)
        gap = torch.stack(
            [
                self._per_chain((a - b).abs(), chain_shape, torch.amax)
                for a, b in zip(xb, x0, strict=True)
            ]
        ).amax(0)
        irreversible = ~(gap <= tol) & ~failed
        h0 = (u0 + sum(self._per_chain(q * q, chain_shape) for q in p0) / 2) / tau
        h1 = (ul + sum(self._per_chain(q * q, chain_shape) for q in pl) / 2) / tau
        log_u = torch.rand(chain_shape, generator=self.generator, dtype=h0.dtype).log()
        accept = (log_u < h0 - h1) & ~failed & ~irreversible
        n = max(1, math.prod(chain_shape))
        self.stats["proposals"] += n
        self.stats["accepted"] += int(accept.sum())
        self.stats["reverse_failures"] += int(irreversible.sum())
        self.stats["solve_failures"] += int(failed.sum())
        out = []
        for s, a, b in zip(stacks, xl, x0, strict=True):
            mask = accept.reshape(*chain_shape, *([1] * (a.dim() - len(chain_shape))))
            out.append(Proposal(s, torch.where(mask, a, b)))
        return out

    def _rattle(
        self,
        stacks: list[Stack],
        closure: Callable[[], Any],
        x: list[Tensor],
        p: list[Tensor],
        g: list[Tensor],
        chain_shape: torch.Size,
    ) -> tuple[list[Tensor], list[Tensor], list[Tensor], Tensor, Tensor]:
        """L RATTLE steps from (x, p) with gradients g; also U at the end and failed chains."""
        group = stacks[0].group
        h, steps = group["lr"], group["steps"]
        failed = torch.zeros(chain_shape, dtype=torch.bool)
        u = torch.zeros(chain_shape)
        for _ in range(steps):
            new_x, new_p = [], []
            for s, xi, pi, gi in zip(stacks, x, p, g, strict=True):
                m = s.manifold
                half = m.rattle(xi, pi - 0.5 * h * gi)
                moved, velocity, bad = _drift_points(m, xi, half, h)
                failed |= self._per_chain(bad, chain_shape, torch.amax, points=True)
                new_x.append(moved)
                new_p.append(velocity)
            torch._foreach_copy_([s.params[0].data for s in stacks], new_x)
            with torch.enable_grad():
                u = self._energy(closure())
            g = [self._grad(s.params[0]) for s in stacks]
            p = [
                s.manifold.rattle(xi, pi - 0.5 * h * gi)
                for s, xi, pi, gi in zip(stacks, new_x, new_p, g, strict=True)
            ]
            x = new_x
        bad_end = ~torch.isfinite(u)
        for q in (*p, *g):
            bad_end |= ~torch.isfinite(self._per_chain(q, chain_shape))
        return x, p, g, torch.where(bad_end | failed, torch.inf, u), failed | bad_end

    @staticmethod
    def _per_chain(
        t: Tensor, chain_shape: torch.Size, reduce: Any = torch.sum, points: bool = False
    ) -> Tensor:
        """Reduce ``t`` over everything after the chain dimensions (a mask if ``points``)."""
        k = len(chain_shape)
        flat = t.reshape(*chain_shape, -1) if t.dim() > k else t.reshape(*chain_shape, 1)
        if points:
            flat = flat.to(torch.uint8)
            return reduce(flat, dim=-1).bool()
        return reduce(flat, dim=-1)

    @staticmethod
    def _energy(u: Any) -> Tensor:
        if not isinstance(u, Tensor):
            raise ValueError(
                "the closure must return U as a tensor (one value per chain), got "
                f"{type(u).__name__}"
            )
        return u.detach().to(torch.float64)

    @staticmethod
    def _grad(p: Tensor) -> Tensor:
        if p.grad is None:
            raise ValueError("the closure left a parameter without a gradient; call backward()")
        return p.grad.detach().clone()
