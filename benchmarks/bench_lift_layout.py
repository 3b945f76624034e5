"""What the circle lift's layout costs the layer, before any optimizer step.

Run ``python -m benchmarks.bench_lift_layout [--steps 30] [--threads 2]``.

Forward and backward of the W1 MLP (784-1024-1024-10, batch 128, float32) with the two
hidden weights stored three ways: plain tensors; ``CircleLift`` pairs (..., 2) read
through ``CircleLift.weight`` (a contiguous copy of q, whose gradient comes back into the
pairs); and planar, q as its own tensor (beside a separate xi the layer never reads).
Interleaved, medians in ms.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F

from geodyn.manifolds import CircleLift

from .measure import setup

SIZES = (784, 1024, 1024, 10)
BATCH = 128


def _jobs() -> dict[str, Callable[[], None]]:
    inputs = torch.randn(BATCH, SIZES[0])
    labels = torch.randint(0, SIZES[-1], (BATCH,))
    plain = [
        (torch.randn(n_out, n_in) * n_in**-0.5).requires_grad_()
        for n_in, n_out in zip(SIZES[:-1], SIZES[1:], strict=True)
    ]
    lift = CircleLift(0.05)
    pairs = [lift.lift(w.detach().clamp(-0.04, 0.04)).requires_grad_() for w in plain[:-1]]
    planar = [w.detach().clone().requires_grad_() for w in plain[:-1]]

    def train(weights: list[torch.Tensor]) -> None:
        h = inputs
        for k, w in enumerate(weights):
            h = h @ w.T
            if k < len(weights) - 1:
                h = torch.relu(h)
        F.cross_entropy(h, labels).backward()

    return {
        "plain": lambda: train(plain),
        "lifted (..., 2)": lambda: train([lift.weight(z) for z in pairs] + plain[-1:]),
        "planar": lambda: train(planar + plain[-1:]),
    }


def main() -> None:
    args = setup(__doc__, steps=30)
    jobs = _jobs()
    times: dict[str, list[float]] = {name: [] for name in jobs}
    for step in range(5 + args.steps):
        for name, job in jobs.items():
            start = time.perf_counter()
            job()
            if step >= 5:
                times[name].append(time.perf_counter() - start)
    for name, samples in times.items():
        print(f"{name:16s} {1e3 * statistics.median(samples):7.2f} ms forward + backward")


if __name__ == "__main__":
    main()
