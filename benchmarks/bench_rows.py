"""The rows' fused Riemannian SGD step against the generic one, in one process.

Run ``python -m benchmarks.bench_rows [--rounds 12] [--threads 2]``.

W1 (MLP 784-1024-1024-10, batch 128, float32), hidden weights on unit rows, momentum
0.9: torch SGD (foreach), geoopt's RiemannianSGD on ``geoopt.Sphere`` rows, geodyn's
RiemannianSGD on ``Oblique`` rows (its default: the fused step) and on an ``Oblique``
that declares no fast path (the generic step). Medians of interleaved rounds of five
full training steps; ratios to SGD and the optimizer step alone.
"""

from __future__ import annotations

import argparse
import statistics
import time

import geoopt
import torch
from torch import nn

from geodyn.integrators import RiemannianSGD
from geodyn.manifolds import Oblique
from geodyn.manifolds.base import Manifold

KINDS = ("torch SGD", "geoopt RSGD Sphere", "geodyn RSGD fused", "geodyn RSGD generic")


class GenericOblique(Oblique):
    """Oblique rows without the fast path: RiemannianSGD takes the generic step."""

    fused_momentum_step = Manifold.fused_momentum_step


def _build(kind: str) -> tuple[nn.Module, torch.optim.Optimizer]:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(784, 1024), nn.ReLU(), nn.Linear(1024, 1024), nn.ReLU(),
                          nn.Linear(1024, 10))
    hidden = [model[0], model[2]]
    with torch.no_grad():
        for layer in hidden:
            layer.weight.div_(layer.weight.norm(dim=-1, keepdim=True))
    if kind == "torch SGD":
        return model, torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, foreach=True)
    if kind == "geoopt RSGD Sphere":
        for layer in hidden:
            layer.weight = geoopt.ManifoldParameter(layer.weight.data, manifold=geoopt.Sphere())
        return model, geoopt.optim.RiemannianSGD(model.parameters(), lr=0.01, momentum=0.9)
    weights = [layer.weight for layer in hidden]
    rest = [p for p in model.parameters() if all(p is not w for w in weights)]
    manifold = Oblique() if kind == "geodyn RSGD fused" else GenericOblique()
    groups = [{"params": weights, "manifold": manifold}, {"params": rest}]
    return model, RiemannianSGD(groups, lr=0.01, momentum=0.9)


def main(argv: list[str] | None = None) -> dict[str, dict[str, float]]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=12)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    data = torch.randn(128, 784, generator=torch.Generator().manual_seed(1))
    labels = torch.randint(0, 10, (128,), generator=torch.Generator().manual_seed(2))
    built = {k: _build(k) for k in KINDS}

    def step(model: nn.Module, opt: torch.optim.Optimizer) -> float:
        opt.zero_grad(set_to_none=True)
        nn.functional.cross_entropy(model(data), labels).backward()
        start = time.perf_counter()
        opt.step()
        return time.perf_counter() - start

    full: dict[str, list[float]] = {k: [] for k in KINDS}
    inner: dict[str, list[float]] = {k: [] for k in KINDS}
    for k in KINDS:
        for _ in range(5):
            step(*built[k])
    for _ in range(args.rounds):
        for k in KINDS:
            start = time.perf_counter()
            inner[k].append(sum(step(*built[k]) for _ in range(5)) / 5)
            full[k].append((time.perf_counter() - start) / 5)
    sgd = statistics.median(full["torch SGD"])
    out = {}
    for k in KINDS:
        model = built[k][0]
        with torch.no_grad():
            res = max(float((m.weight.norm(dim=-1) - 1).abs().max()) for m in (model[0], model[2]))
        out[k] = {"step_ms": 1e3 * statistics.median(full[k]),
                  "ratio": statistics.median(full[k]) / sgd,
                  "optimizer_ms": 1e3 * statistics.median(inner[k]), "residual": res}
        print(f"{k:22s} step / SGD {out[k]['ratio']:.3f}  step {out[k]['step_ms']:7.2f} ms  "
              f"optimizer {out[k]['optimizer_ms']:6.2f} ms  residual {res:.1e}")
    return out


if __name__ == "__main__":
    main()
