"""What the circle lift's layout costs: the W1 training step with planar or interleaved pairs.

Run ``python -m benchmarks.bench_lift_layout [--steps 30] [--threads 2]``.

The W1 MLP (784-1024-1024-10, batch 128, float32) with its two hidden weights on the
circle lift, stepped by ``RiemannianSGD`` (momentum 0.9, its fast path), the pairs
stored planar (as ``CircleLift.lift`` makes them: each half contiguous) or interleaved
(q, xi next to each other: each half a stride-2 view); torch SGD on the plain MLP beside
them. Interleaved rounds; medians in ms of the forward and backward and of the optimizer
step.
"""

from __future__ import annotations

import statistics
import time

import torch

from .cases import baselines, geodyn_cases
from .measure import setup
from .models import Workload, mlp

SIZES = (784, 1024, 1024, 10)
BATCH = 128


def _interleave(wl: Workload) -> Workload:
    """The workload with its lifted weights stored interleaved (the same values)."""
    with torch.no_grad():
        for layer in wl.hidden:
            layer.weight.data = layer.weight.data.contiguous()
    return wl


def main() -> None:
    args = setup(__doc__, steps=30)
    (lift_case,) = geodyn_cases(("CircleLift",), ("RSGD",))
    (sgd_case,) = [c for c in baselines() if c.name == "torch SGD"]
    built = {
        "torch SGD, plain weights": sgd_case.build(lambda lift: mlp(SIZES, BATCH, lift)),
        "CircleLift RSGD, planar": lift_case.build(lambda lift: mlp(SIZES, BATCH, lift)),
        "CircleLift RSGD, interleaved": lift_case.build(
            lambda lift: _interleave(mlp(SIZES, BATCH, lift))
        ),
    }
    times: dict[str, tuple[list[float], list[float]]] = {name: ([], []) for name in built}
    for step in range(5 + args.steps):
        for name, b in built.items():
            start = time.perf_counter()
            b.optimizer.zero_grad(set_to_none=True)
            b.workload.loss().backward()
            middle = time.perf_counter()
            b.optimizer.step()
            end = time.perf_counter()
            if step >= 5:
                times[name][0].append(middle - start)
                times[name][1].append(end - middle)
    for name, (backward, step_times) in times.items():
        residual = built[name].residual()
        print(f"{name:30s} forward + backward {1e3 * statistics.median(backward):6.2f} ms  "
              f"optimizer step {1e3 * statistics.median(step_times):6.2f} ms  "
              f"residual {0.0 if residual is None else residual:.1e}")


if __name__ == "__main__":
    main()
