"""Landing against POGO (pogo-torch) and Riemannian SGD: cost per step and distance to M.

Run ``python -m benchmarks.bench_landing [--steps 500] [--batch 8] [--p 64] [--n 256]
[--dtype float32] [--repeats 20]``.

The problem is orthogonal Procrustes on a batch of wide frames (p x n, X X^T = I, the
layout POGO steps): f(X) = |X - M|_F^2 / 2 with M Gaussian, rows of norm about 1,
minimised over the frames by the polar factor of M. Every method takes plain gradient
steps of the same size lr:

* geodyn ``Landing`` (retraction-free, safe step within ``eps``),
* ``pogo.POGO`` with its SGD base optimizer (retraction-free, one fixed-point landing
  correction per step), when pogo-torch is installed,
* geodyn ``RiemannianSGD`` on ``Stiefel("qr")`` (a retraction per step), the reference.

Step times are medians over interleaved rounds (reference, landing, pogo, ...) in one
process; the table gives them as ratios to the reference, with the final residual
max |X X^T - I| and the objective gap f(X) - f(X*). Nothing is asserted: this is a
measurement.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import Tensor

from geodyn.integrators import Landing, RiemannianSGD
from geodyn.manifolds import Stiefel

try:  # an optional peer
    import pogo
    import pogo.base
except ImportError:  # pragma: no cover - reported in the table
    pogo = None


@dataclass
class Method:
    """One optimizer on its own copy of the start frames."""

    name: str
    param: torch.nn.Parameter
    step: Callable[[], None]
    times: list[float] = field(default_factory=list)


def _grad(x: Tensor, target: Tensor) -> Tensor:
    return x - target


def _methods(x0: Tensor, target: Tensor, lr: float) -> list[Method]:
    out = []

    def make(name: str, build: Callable[[torch.nn.Parameter], torch.optim.Optimizer]) -> None:
        param = torch.nn.Parameter(x0.clone())
        opt = build(param)

        def step() -> None:
            param.grad = _grad(param.detach(), target)
            opt.step()

        out.append(Method(name, param, step))

    make("RiemannianSGD Stiefel(qr)", lambda p: RiemannianSGD([p], lr=lr, manifold=Stiefel()))
    make("geodyn Landing", lambda p: Landing([p], lr=lr, attraction=1.0, eps=0.5,
                                             manifold=Stiefel()))
    if pogo is not None:
        make("pogo POGO (SGD)", lambda p: pogo.POGO([p], base_optimizer=pogo.base.SGD(), lr=lr))
    return out


def run(steps: int, batch: int, p: int, n: int, dtype: torch.dtype, lr: float,
        repeats: int) -> list[dict[str, float | str]]:
    gen = torch.Generator().manual_seed(0)
    target = torch.randn(batch, p, n, dtype=dtype, generator=gen) / n**0.5  # rows of norm ~1
    x0 = Stiefel().random_point(batch, p, n, dtype=dtype, generator=gen)
    u, _, vh = torch.linalg.svd(target.double(), full_matrices=False)
    best = 0.5 * float(((u @ vh) - target.double()).square().sum())
    methods = _methods(x0, target, lr)
    timed_from = max(steps - repeats, 0)
    for k in range(steps):
        for m in methods:  # interleaved: one step of each in turn
            start = time.perf_counter()
            m.step()
            if k >= timed_from:
                m.times.append(time.perf_counter() - start)
    reference = statistics.median(methods[0].times)
    rows = []
    for m in methods:
        x = m.param.detach().double()
        eye = torch.eye(p, dtype=torch.float64)
        rows.append({
            "method": m.name,
            "step_ms": 1e3 * statistics.median(m.times),
            "ratio": statistics.median(m.times) / reference,
            "residual": float((x @ x.mT - eye).abs().max()),
            "gap": 0.5 * float((x - target.double()).square().sum()) - best,
        })
    return rows


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=500)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--p", type=int, default=64)
    parser.add_argument("--n", type=int, default=256)
    parser.add_argument("--dtype", default="float32", choices=("float32", "float64"))
    parser.add_argument("--lr", type=float, default=0.1)
    parser.add_argument("--repeats", type=int, default=50, help="timed steps (the last ones)")
    args = parser.parse_args(argv)
    rows = run(args.steps, args.batch, args.p, args.n, getattr(torch, args.dtype), args.lr,
               args.repeats)
    print(f"Procrustes on {args.batch} frames {args.p} x {args.n} ({args.dtype}), lr {args.lr}, "
          f"{args.steps} steps; times: median of the last {args.repeats}")
    print(f"{'method':28s} {'ms/step':>9s} {'ratio':>6s} {'max|XX^T-I|':>12s} {'f - f*':>10s}")
    for r in rows:
        print(f"{r['method']:28s} {r['step_ms']:9.3f} {r['ratio']:6.2f} {r['residual']:12.2e} "
              f"{r['gap']:10.2e}")
    if pogo is None:
        print("pogo POGO: not installed (pip install pogo-torch), not compared")


if __name__ == "__main__":
    main()
