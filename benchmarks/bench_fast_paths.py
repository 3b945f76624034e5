"""Every declared fast path against the generic step, optimizer step alone.

Run ``python -m benchmarks.bench_fast_paths [--steps 30] [--threads 2]``.

One (1024, 784) float32 weight per manifold (the circle lift: its (1024, 784, 2) lift),
``RiemannianSGD(lr=0.1, momentum=0.9)`` on the manifold (its fast path,
``fused_momentum_step``, eager and with ``compiled=True``) and on a subclass that declares
none (the generic step), each timed interleaved with torch SGD-momentum (foreach) on a
tensor of the same size. Prints the medians in ms and the ratios to SGD.

Then ``Constrained(torch.optim.Adam(lr=1e-3, foreach=True))`` on Oblique rows with its
in-place gradient projection and put-back (``fused_proj_tangent_``, ``fused_put_back``)
and on the subclass without them, interleaved with torch Adam on a tensor of the same
size.

Then ``Splitting`` (BAOAB, lr=0.01, tau=1e-4) on Oblique rows and the ball: with the
drift's fast path (``fused_drift``), writing into its kept memory; the same
allocating every letter's result afresh; and on the subclass without fast paths,
interleaved with torch SGD-momentum plus drawing one normal tensor of the same size.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from typing import Any

import torch

from geodyn.integrators import Constrained, RiemannianSGD, Splitting
from geodyn.manifolds import CircleLift, LpSphere, Manifold, NormBall, Oblique

from .measure import setup

SHAPE = (1024, 784)
Case = tuple[type[Manifold], tuple[float, ...], Callable[[Manifold], torch.Tensor]]


def _lifted(m: Manifold) -> torch.Tensor:
    return m.lift(0.4 * (2 * torch.rand(SHAPE) - 1))


def _cases() -> dict[str, Case]:
    return {
        "Oblique rows": (Oblique, (), lambda m: m.random_point(*SHAPE)),
        "NormBall": (NormBall, (1.0,), lambda m: m.random_point(*SHAPE)),
        "LpSphere p=3": (LpSphere, (3.0,), lambda m: m.random_point(*SHAPE)),
        "CircleLift": (CircleLift, (0.5,), _lifted),
    }


def _generic(cls: type[Manifold]) -> type[Manifold]:
    """``cls`` without its fast paths (the base class's: none declared)."""
    verbs = ("fused_momentum_step", "fused_proj_tangent_", "fused_put_back", "fused_drift")
    return type(f"Generic{cls.__name__}", (cls,), {v: getattr(Manifold, v) for v in verbs})


def _time(steps: int, *optimizers: torch.optim.Optimizer) -> list[float]:
    """Median ms of ``step()`` of each optimizer, interleaved."""
    times: list[list[float]] = [[] for _ in optimizers]
    for _ in range(steps):
        for t, opt in zip(times, optimizers, strict=True):
            start = time.perf_counter()
            opt.step()
            t.append(time.perf_counter() - start)
    return [1e3 * statistics.median(t) for t in times]


def main() -> None:
    args = setup(__doc__, steps=30)
    print(f"{'manifold':14s} {'fast path':>10s} {'compiled':>10s} {'generic':>10s} "
          f"{'torch SGD':>10s}   ratios to SGD")
    for name, (cls, params, point) in _cases().items():
        optimizers = []
        for manifold, compiled in ((cls(*params), False), (cls(*params), True),
                                   (_generic(cls)(*params), False)):
            p = torch.nn.Parameter(point(manifold))
            p.grad = 0.01 * torch.randn_like(p)
            optimizers.append(RiemannianSGD([p], lr=0.1, momentum=0.9, manifold=manifold,
                                            compiled=compiled))
        flat = torch.nn.Parameter(torch.randn(optimizers[0].param_groups[0]["params"][0].shape))
        flat.grad = 0.01 * torch.randn_like(flat)
        optimizers.append(torch.optim.SGD([flat], lr=0.1, momentum=0.9, foreach=True))
        _time(3, *optimizers)  # warm-up: buffers allocated, kernels compiled
        fused, compiled, generic, sgd = _time(args.steps, *optimizers)
        print(f"{name:14s} {fused:8.2f}ms {compiled:8.2f}ms {generic:8.2f}ms {sgd:8.2f}ms   "
              f"{fused / sgd:.2f}x / {compiled / sgd:.2f}x / {generic / sgd:.2f}x")
    _constrained_adam(args.steps)
    _splitting(args.steps)


def _constrained_adam(steps: int) -> None:
    """Constrained(Adam) on Oblique rows, in place and generic, against torch Adam."""
    optimizers: list[torch.optim.Optimizer] = []
    for manifold in (Oblique(), _generic(Oblique)()):
        p = torch.nn.Parameter(manifold.random_point(*SHAPE))
        base = torch.optim.Adam([{"params": [p], "manifold": manifold}], lr=1e-3, foreach=True)
        optimizers.append(Constrained(base))
    optimizers.append(torch.optim.Adam([torch.nn.Parameter(torch.randn(SHAPE))], lr=1e-3,
                                       foreach=True))
    _with_gradients(optimizers)
    _time(3, *optimizers)
    fused, generic, adam = _time(steps, *optimizers)
    print(f"\n{'Constrained(Adam)':18s} {'in place':>10s} {'generic':>10s} {'torch Adam':>10s}"
          "   ratios to Adam")
    print(f"{'Oblique rows':18s} {fused:8.2f}ms {generic:8.2f}ms {adam:8.2f}ms   "
          f"{fused / adam:.2f}x / {generic / adam:.2f}x")


def _with_gradients(optimizers: list[torch.optim.Optimizer]) -> None:
    """A small random gradient on every parameter of ``optimizers``."""
    for opt in optimizers:
        for group in opt.param_groups:
            for p in group["params"]:
                p.grad = 0.01 * torch.randn_like(p)


class _FreshSplitting(Splitting):
    """Splitting that takes fresh memory for every letter's result."""

    def _memory(self, phase: Any, role: str, like: torch.Tensor) -> torch.Tensor:
        return torch.empty_like(like)


class _NoisySGD(torch.optim.SGD):
    """SGD-momentum plus one standard normal tensor per parameter: BAOAB's reference."""

    generator = torch.Generator().manual_seed(0)

    def step(self, closure: Any = None) -> Any:
        for group in self.param_groups:
            for p in group["params"]:
                torch.randn(p.shape, generator=self.generator)
        return super().step(closure)


def _splitting(steps: int) -> None:
    """BAOAB on rows and the ball: in place in kept memory, allocating, generic; against
    SGD-momentum plus the noise."""
    print(f"\n{'BAOAB':18s} {'in place':>10s} {'fresh':>10s} {'generic':>10s} "
          f"{'SGD+noise':>10s}   ratios to SGD + noise")
    for name, (cls, params, point) in _cases().items():
        if cls not in (Oblique, NormBall):
            continue
        optimizers: list[torch.optim.Optimizer] = []
        for kind, manifold in ((Splitting, cls(*params)), (_FreshSplitting, cls(*params)),
                               (Splitting, _generic(cls)(*params))):
            p = torch.nn.Parameter(point(manifold))
            optimizers.append(kind([p], lr=0.01, tau=1e-4, manifold=manifold, seed=0))
        flat = torch.nn.Parameter(torch.randn(SHAPE))
        optimizers.append(_NoisySGD([flat], lr=0.01, momentum=0.9, foreach=True))
        _with_gradients(optimizers)
        _time(3, *optimizers)
        kept, fresh, generic, sgd = _time(steps, *optimizers)
        print(f"{name:18s} {kept:8.2f}ms {fresh:8.2f}ms {generic:8.2f}ms {sgd:8.2f}ms   "
              f"{kept / sgd:.2f}x / {fresh / sgd:.2f}x / {generic / sgd:.2f}x")


if __name__ == "__main__":
    main()
