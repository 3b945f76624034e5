"""What the fast path's kept scratch buys: each manifold against itself allocating afresh.

Run ``python -m benchmarks.bench_scratch [--rounds 8]``.

``RiemannianSGD`` on the W1 MLP (784-1024-1024-10, batch 128, float32, 2 threads) with
each manifold of the fast paths, and with a subclass whose ``fused_momentum_step`` drops
the scratch ``RiemannianSGD`` hands it (so the step takes fresh memory, as without one),
interleaved with torch SGD in the harness of ``benchmarks.run``. Prints the training step
and the optimizer step alone, in ms.
"""

from __future__ import annotations

import argparse
import dataclasses
from functools import partial
from typing import Any

import torch

import geodyn.manifolds as gm

from . import run
from .cases import Case, baselines, geodyn_cases
from .models import mlp

MANIFOLDS = {"Oblique rows": "Oblique", "NormBall": "NormBall", "LpSphere p=3": "LpSphere",
             "CircleLift": "CircleLift", "Stiefel qr": "Stiefel",
             "Stiefel newton-schulz": "Stiefel"}


def _fresh(kind: type) -> type:
    """``kind`` with a fast path that is handed no scratch (``fresh``: every op allocates)."""

    def fused_momentum_step(self: Any, *args: Any, scratch: Any = None, **kw: Any) -> Any:
        return kind.fused_momentum_step(self, *args, **kw)

    return type(kind.__name__, (kind,), {"fused_momentum_step": fused_momentum_step})


def _allocating(case: Case) -> Case:
    manifold = case.name.split(" | ")[0]
    attribute = MANIFOLDS[manifold]

    def build(make: Any, original: Any = case.build) -> Any:
        kept = getattr(gm, attribute)
        setattr(gm, attribute, _fresh(kept))  # the case builds its manifold from gm
        try:
            return original(make)
        finally:
            setattr(gm, attribute, kept)

    return dataclasses.replace(case, name=case.name.replace(manifold, manifold + " fresh"),
                               build=build)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=8)
    args = parser.parse_args()
    torch.set_num_threads(2)
    torch.manual_seed(0)
    kept = geodyn_cases(tuple(MANIFOLDS), ("RSGD",))
    cases = [c for c in baselines() if c.name == "torch SGD"] + kept + [
        _allocating(c) for c in kept
    ]
    make = partial(run._on(torch.device("cpu"), torch.float32, mlp),
                   sizes=(784, 1024, 1024, 10), batch=128)
    records, _ = run.run_workload(make, cases, warmup=3, rounds=args.rounds, steps=5,
                                  log=lambda line: None)
    for rec in records:
        print(f"{rec['case']:30s} step {rec.get('step_ms', float('nan')):7.2f} ms   "
              f"optimizer step {rec.get('opt_step_ms', float('nan')):6.2f} ms",
              rec.get("error", ""))


if __name__ == "__main__":
    main()
