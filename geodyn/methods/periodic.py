r"""Periodic sampling over weight distributions (Tripathi et al., 2019, arXiv 1905.05774).

Training is cut into periods of ``period`` optimizer steps. Within a period the
weights are sampled every ``interval`` steps, giving snapshots
$w^{(1)}, \dots, w^{(n)}$ with $n = \text{period} / \text{interval}$ (the last one at
the period's end). At the end of the period the live weights are replaced by a
combination of the snapshots and training continues from there:

* PSWA (periodically sampled weight averaging): $\bar w = \frac1n \sum_{k=1}^n w^{(k)}$;
* PWALKS (averaging over the last K samples): $\bar w = \frac1K \sum_{k=n-K+1}^n w^{(k)}$;
* PSWM (periodically sampled weight momentum): $m_1 = w^{(1)}$,
  $m_k = \beta m_{k-1} + (1 - \beta) w^{(k)}$, $\bar w = m_n$.

A parameter on a manifold (its param group's ``manifold``, else ``param.manifold``:
:func:`geodyn.integrators.declared_manifold`) gets the combination projected back
onto it, $\bar w \leftarrow \mathrm{project}_M(\bar w)$. The base optimizer's state
(momenta, Adam moments) is left as it is.
"""

from __future__ import annotations

from typing import Any, Literal

import torch
from torch import Tensor
from torch.optim import Optimizer

from ..integrators import OptimizerWrapper, declared_manifold
from ..integrators.wrapper import check_optimizer

__all__ = ["PeriodicSampling"]

Mode = Literal["pswa", "pwalks", "pswm"]


class PeriodicSampling(OptimizerWrapper):
    """PSWA / PWALKS / PSWM around any optimizer.

    Args:
        optimizer: the base optimizer (SGD, Adam, a geodyn integrator...).
        period: steps per period; the live weights are replaced every ``period`` steps.
        interval: steps between snapshots; must divide ``period``.
        mode: ``"pswa"`` (mean of the period's snapshots), ``"pwalks"`` (mean of the last
            ``last_k``) or ``"pswm"`` (exponential moving average with ``beta``).
        last_k: number of snapshots PWALKS averages (``1 <= last_k <= period // interval``).
        beta: PSWM's momentum, ``0 <= beta < 1``.
        start: steps of plain training before the first period begins.

    Example:
        ``opt = PeriodicSampling(torch.optim.SGD(model.parameters(), lr=0.1), period=100,
        interval=10)``, then ``opt.zero_grad(); loss.backward(); opt.step()`` as usual.
    """

    def __init__(
        self,
        optimizer: Optimizer,
        period: int,
        interval: int = 1,
        mode: Mode = "pswa",
        last_k: int | None = None,
        beta: float = 0.9,
        start: int = 0,
    ) -> None:
        check_optimizer(optimizer, "optimizer")
        super().__init__(optimizer)
        if mode not in ("pswa", "pwalks", "pswm"):
            raise ValueError(f"mode must be 'pswa', 'pwalks' or 'pswm', got {mode!r}")
        if int(interval) < 1 or int(period) < 1 or int(period) % int(interval) != 0:
            raise ValueError(
                f"period ({period}) and interval ({interval}) must be positive with interval "
                "dividing period (e.g. period=100, interval=10)"
            )
        n = int(period) // int(interval)
        if mode == "pwalks":
            if last_k is None or not 1 <= int(last_k) <= n:
                raise ValueError(
                    f"mode='pwalks' needs last_k between 1 and period // interval = {n}, "
                    f"got {last_k}"
                )
        if not 0.0 <= float(beta) < 1.0:
            raise ValueError(f"beta must be in [0, 1), got {beta}")
        if int(start) < 0:
            raise ValueError(f"start must be >= 0, got {start}")
        self.period, self.interval, self.mode = int(period), int(interval), mode
        self.last_k = None if last_k is None else int(last_k)
        self.beta, self.start = float(beta), int(start)
        self.steps = 0
        self.count = 0  # snapshots taken in the current period
        self.snapshots: list[list[Tensor]] = []  # PWALKS: the last K snapshots
        self.accumulator: list[Tensor] | None = None  # PSWA: running mean; PSWM: EMA

    # ------------------------------------------------------------------ the method
    @torch.no_grad()
    def step(self, closure=None):  # type: ignore[override]
        """One base step; a snapshot every ``interval`` steps; the swap at a period's end."""
        loss = self.base.step(closure)
        self.steps += 1
        since = self.steps - self.start
        if since > 0 and since % self.interval == 0:
            self._snapshot()
            if since % self.period == 0:
                self._swap()
        return loss

    def _snapshot(self) -> None:
        params = self.params()
        self.count += 1
        if self.mode == "pwalks":
            self.snapshots.append([p.detach().clone() for p in params])
            assert self.last_k is not None  # __init__ requires it for mode='pwalks'
            del self.snapshots[: -self.last_k]
        elif self.accumulator is None:
            self.accumulator = [p.detach().clone() for p in params]
        elif self.mode == "pswa":  # running mean: m += (w - m) / n
            torch._foreach_add_(
                self.accumulator,
                torch._foreach_sub([p.detach() for p in params], self.accumulator),
                alpha=1.0 / self.count,
            )
        else:  # PSWM: m = beta m + (1 - beta) w
            torch._foreach_lerp_(self.accumulator, [p.detach() for p in params], 1.0 - self.beta)

    def combined(self) -> list[Tensor]:
        """The period's combination of snapshots (before projection), one tensor per parameter."""
        if self.count == 0:
            raise ValueError("no snapshot taken yet in this period; step the optimizer first")
        if self.mode == "pwalks":
            return [torch.stack(ws).mean(0) for ws in zip(*self.snapshots, strict=True)]
        assert self.accumulator is not None
        return self.accumulator

    def _swap(self) -> None:
        manifolds = [declared_manifold(p, g) for g in self.param_groups for p in g["params"]]
        for p, w, manifold in zip(self.params(), self.combined(), manifolds, strict=True):
            p.copy_(w if manifold is None else manifold.project(w))
        self.count = 0
        self.snapshots = []
        self.accumulator = None

    # ------------------------------------------------------------------ persistence
    def method_state(self) -> dict[str, Any]:
        return {
            "steps": self.steps,
            "count": self.count,
            "snapshots": [[w.clone() for w in ws] for ws in self.snapshots],
            "accumulator": None
            if self.accumulator is None
            else [w.clone() for w in self.accumulator],
        }

    def load_method_state(self, state: dict[str, Any]) -> None:
        params = self.params()

        def placed(ws: list[Tensor]) -> list[Tensor]:
            if len(ws) != len(params):
                raise ValueError(
                    f"state_dict holds {len(ws)} tensors per snapshot but the optimizer has "
                    f"{len(params)} parameters; load it into an optimizer over the same model"
                )
            return [w.to(p.device, p.dtype).clone() for w, p in zip(ws, params, strict=True)]

        snapshots = [placed(ws) for ws in state["snapshots"]]
        acc = state["accumulator"]
        self.accumulator = None if acc is None else placed(acc)
        self.snapshots = snapshots
        self.steps, self.count = int(state["steps"]), int(state["count"])
