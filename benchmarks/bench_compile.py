r"""Eager geodyn step against torch's SGD and a compiled functional step, on oblique weights.

Run ``python -m benchmarks.bench_compile [--repeats 30] [--threads 2]``.

The two hidden weights of the MLP 784-1024-1024-10 (shapes (1024, 784) and
(1024, 1024), float32) lie on the oblique manifold (unit-norm rows). One step of
Riemannian SGD with momentum mu and step size eta is

$$d = P_x(g), \qquad b' = \mu b + d, \qquad x' = R_x(-\eta\, b'), \qquad b'' = P_{x'}(b'),$$

timed three ways in one process, in interleaved rounds (a drift in machine load hits
all alike), median of ``repeats`` after warm-up:

* ``geodyn.RiemannianSGD(momentum=0.9)``, eager;
* ``torch.optim.SGD(momentum=0.9, foreach=True)`` on the same weights (the baseline);
* :func:`riemannian_momentum_step` compiled with ``torch.compile``: the manifold's own
  verbs in a pure function ``(x, b, g) -> (x', b'')``, the copies into the parameters
  and buffers outside it.

Ratios are to SGD. On a shared machine the numbers are approximate.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable

import torch
from torch import Tensor

from geodyn.integrators import RiemannianSGD
from geodyn.manifolds import Manifold, Oblique

from .measure import Timer

SHAPES = ((1024, 784), (1024, 1024))
LR = 1e-2
MOMENTUM = 0.9


def riemannian_momentum_step(
    manifold: Manifold, x: Tensor, buf: Tensor, g: Tensor, lr: float, momentum: float
) -> tuple[Tensor, Tensor]:
    r"""One heavy-ball step on M, without mutation: returns $(x', b'')$ as above.

    With ``buf`` zero this is also :class:`~geodyn.integrators.RiemannianSGD`'s first
    step (its buffer starts as the first Riemannian gradient).
    """
    b = momentum * buf + manifold.proj_tangent(x, g)
    return manifold.retr_transp(x, -lr * b, b)


def compiled_step(manifold: Manifold) -> Callable[..., tuple[list[Tensor], list[Tensor]]]:
    """``torch.compile`` of :func:`riemannian_momentum_step` over lists of tensors."""

    def step(
        xs: list[Tensor], bufs: list[Tensor], grads: list[Tensor], lr: float, momentum: float
    ) -> tuple[list[Tensor], list[Tensor]]:
        out = [
            riemannian_momentum_step(manifold, x, b, g, lr, momentum)
            for x, b, g in zip(xs, bufs, grads, strict=True)
        ]
        return [x for x, _ in out], [b for _, b in out]

    return torch.compile(step)


def _weights(manifold: Manifold) -> list[torch.nn.Parameter]:
    gen = torch.Generator().manual_seed(0)
    params = []
    for shape in SHAPES:
        p = torch.nn.Parameter(manifold.random_point(*shape, generator=gen))
        p.grad = 1e-2 * torch.randn(shape, generator=gen)
        params.append(p)
    return params


def jobs(manifold: Manifold) -> dict[str, Callable[[], None]]:
    """One optimizer step per call: eager geodyn, torch SGD, compiled functional geodyn."""
    geodyn_params, sgd_params, compiled_params = (_weights(manifold) for _ in range(3))
    rsgd = RiemannianSGD([{"params": geodyn_params, "manifold": manifold}], lr=LR,
                         momentum=MOMENTUM)
    sgd = torch.optim.SGD(sgd_params, lr=LR, momentum=MOMENTUM, foreach=True)
    step = compiled_step(manifold)
    bufs = [torch.zeros_like(p) for p in compiled_params]
    xs = [p.detach() for p in compiled_params]
    grads = [p.grad for p in compiled_params]

    @torch.no_grad()
    def compiled() -> None:
        new_x, new_b = step(xs, bufs, grads, LR, MOMENTUM)
        torch._foreach_copy_(xs + bufs, new_x + new_b)

    return {"geodyn eager": rsgd.step, "torch SGD": sgd.step, "geodyn compiled": compiled}


def run(repeats: int, warmup: int = 5) -> dict[str, float]:
    """Median step time (ms) of each job, interleaved; printed with ratios to SGD."""
    device = torch.device("cpu")
    timers = {name: Timer(job, device) for name, job in jobs(Oblique(dim=-1)).items()}
    for timer in timers.values():
        timer.run(warmup, record=False)  # compiles the compiled step
    for _ in range(repeats):
        for timer in timers.values():
            timer.run(1)
    medians = {name: timer.median_ms for name, timer in timers.items()}
    base = medians["torch SGD"]
    print(f"oblique rows, shapes {SHAPES}, float32, {torch.get_num_threads()} threads, "
          f"median of {repeats}")
    print(f"{'step':<16} {'ms':>8} {'/ SGD':>7}")
    for name, ms in medians.items():
        print(f"{name:<16} {ms:>8.2f} {ms / base:>7.2f}")
    return medians


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    if args.repeats < 1 or args.threads < 1:
        raise ValueError("--repeats and --threads must be >= 1")
    torch.set_num_threads(args.threads)
    run(args.repeats)


if __name__ == "__main__":
    main()
