"""Cost of a user-defined (Implicit) manifold against the built-in one it re-implements.

Run ``python -m benchmarks.bench_implicit [--dtype float64] [--repeats 30] [--device cpu]``.

For the sphere (rows of a (256, 64) weight) and Stiefel (8 matrices of shape (64, 16))
it times, in one process and in interleaved rounds (built-in, implicit, built-in, ...),

* the verbs of one constrained step: ``proj_tangent(x, g)``, ``shake(x, x + h v)``
  and ``rattle(x', p)``;
* one full integrator step: ``Splitting`` (BAOAB, tau > 0) on a parameter of that shape;

and prints the median times, the ratio implicit / built-in and, for the step, how
many times c (and its Jacobian, evaluated with it) is evaluated per step.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import Tensor

from geodyn.constraints import Implicit
from geodyn.integrators import Splitting
from geodyn.manifolds import Manifold, Sphere, Stiefel

EVALUATIONS = {"count": 0}  # calls of the constraint functions below (one per batch)


def sphere_c(x: Tensor) -> Tensor:
    EVALUATIONS["count"] += 1
    return (x @ x - 1) / 2


def stiefel_c(x: Tensor) -> Tensor:
    EVALUATIONS["count"] += 1
    gram = x.mT @ x - torch.eye(x.shape[-1], dtype=x.dtype, device=x.device)
    i, j = torch.triu_indices(x.shape[-1], x.shape[-1], device=x.device)
    return gram[i, j]


@dataclass
class Case:
    """One manifold on one tensor shape, and the median-able times of its jobs."""

    label: str
    manifold: Manifold
    reference: Manifold  # the built-in manifold that draws the starting points
    shape: tuple[int, ...]
    times: dict[str, list[float]] = field(default_factory=dict)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _timed(fn: Callable[[], object], device: torch.device) -> float:
    _sync(device)
    start = time.perf_counter()
    fn()
    _sync(device)
    return time.perf_counter() - start


def _verbs_job(case: Case, dtype: torch.dtype, device: torch.device) -> Callable[[], object]:
    gen = torch.Generator(device=device).manual_seed(0)
    m = case.manifold
    x = case.reference.random_point(*case.shape, dtype=dtype, device=device, generator=gen)
    g = torch.randn(case.shape, dtype=dtype, device=device, generator=gen)
    step = 1e-2 * m.proj_tangent(x, g)
    x_new = m.shake(x, x + step)

    def job() -> object:
        v = m.proj_tangent(x, g)
        moved = m.shake(x, x + step)
        return v, moved, m.rattle(x_new, g)

    return job


def _step_job(case: Case, dtype: torch.dtype, device: torch.device) -> Callable[[], object]:
    gen = torch.Generator(device=device).manual_seed(1)
    m = case.manifold
    start = case.reference.random_point(*case.shape, dtype=dtype, device=device, generator=gen)
    param = torch.nn.Parameter(start)
    param.grad = torch.randn(case.shape, dtype=dtype, device=device, generator=gen)
    opt = Splitting([{"params": [param], "manifold": m}], lr=1e-2, gamma=1.0, tau=1e-2, seed=0)
    return opt.step


def run(dtype: torch.dtype, device: torch.device, repeats: int, warmup: int = 3) -> None:
    sphere, stiefel = Sphere(), Stiefel()
    pairs = [
        (
            Case("Sphere", sphere, sphere, (256, 64)),
            Case("Implicit sphere", Implicit(sphere_c, n=64), sphere, (256, 64)),
        ),
        (
            Case("Stiefel", stiefel, stiefel, (8, 64, 16)),
            Case("Implicit Stiefel", Implicit(stiefel_c, point_shape=(64, 16)), stiefel,
                 (8, 64, 16)),
        ),
    ]
    makers = {"verbs": _verbs_job, "BAOAB step": _step_job}
    print(f"device {device}, {dtype}, {torch.get_num_threads()} threads, {repeats} repeats")
    print(f"{'job':<11} {'manifold':<17} {'shape':<14} {'built-in ms':>11} {'implicit ms':>11} "
          f"{'ratio':>7} {'c evals':>7}")
    for builtin, implicit in pairs:
        for name, make in makers.items():
            jobs = [make(case, dtype, device) for case in (builtin, implicit)]
            for job in jobs:
                for _ in range(warmup):
                    job()
            for case in (builtin, implicit):
                case.times[name] = []
            for _ in range(repeats):  # interleaved: a drift in machine load hits both alike
                for case, job in zip((builtin, implicit), jobs, strict=True):
                    case.times[name].append(_timed(job, device))
            t_b = 1e3 * statistics.median(builtin.times[name])
            t_i = 1e3 * statistics.median(implicit.times[name])
            EVALUATIONS["count"] = 0
            jobs[1]()
            print(f"{name:<11} {builtin.label:<17} {str(builtin.shape):<14} {t_b:>11.3f} "
                  f"{t_i:>11.3f} {t_i / t_b:>7.1f} {EVALUATIONS['count']:>7d}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dtype", choices=["float64", "float32"], default="float64")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--repeats", type=int, default=30)
    args = parser.parse_args(argv)
    run(getattr(torch, args.dtype), torch.device(args.device), args.repeats)


if __name__ == "__main__":
    main()
