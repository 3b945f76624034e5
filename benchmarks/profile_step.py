"""Count what one optimizer step does: kernels, memory passes, GEMMs, host syncs.

Run ``python -m benchmarks.profile_step [--cases NAME ...] [--steps 3]``.

On the benchmark's MLP (784-1024-1024-10, batch 128) each named case (see
``python -m benchmarks.run``'s table) is stepped a few times under
``torch.profiler``; for the optimizer step alone it prints, per step,

* kernels: leaf aten operators called (a ``_foreach_*`` call counts once);
* passes: weight-sized memory traffic in units of "all hidden weights once": every
  operand of at least ``BIG`` elements of an outermost aten operator (of each tensor
  of a ``_foreach_*`` call) read, plus one
  write for an in-place or elementwise out-of-place operator (reductions and GEMMs
  write small results; views and aliases move nothing and are not counted); a composite
  operator's internal temporaries are not seen.
  torch SGD with momentum does param, grad and buffer reads and param and buffer
  writes: 5 at the least, 8 with its three foreach kernels;
* GEMMs (mm, bmm, addmm, baddbmm; linalg solves and factorisations counted apart)
  and host syncs (``item``, ``_local_scalar_dense``, ``is_nonzero``);
* the operators that take the most self CPU time.

Counts do not depend on machine load, unlike wall times; use them to plan fusions.
"""

from __future__ import annotations

import argparse
import math
from collections import Counter
from functools import partial

import torch
from torch.profiler import ProfilerActivity, profile

from .cases import Built, baselines, geodyn_cases
from .models import mlp

__all__ = ["count_step", "main"]

BIG = 500_000  # elements: the hidden weights have 0.80 M and 1.05 M
GEMM = ("aten::mm", "aten::bmm", "aten::addmm", "aten::baddbmm")
SYNC = ("aten::item", "aten::_local_scalar_dense", "aten::is_nonzero")
# views and aliases move no data: not passes
VIEWS = ("aten::detach", "aten::reshape", "aten::view", "aten::unsqueeze", "aten::squeeze",
         "aten::_reshape_alias", "aten::as_strided", "aten::expand", "aten::transpose",
         "aten::t", "aten::permute", "aten::select", "aten::slice", "aten::split",
         "aten::alias", "aten::view_as", "aten::flatten", "aten::unflatten", "aten::lift_fresh")
REDUCTIONS = ("sum", "norm", "max", "min", "all", "any", "amax", "amin", "mean", "dot",
              "vdot", "equal", "allclose", "isclose")
DEFAULT_CASES = (
    "torch SGD", "torch Adam", "floor: SGD + row projection + normalise",
    "emerging ObliqueSGD", "geoopt RSGD Sphere",
    "Oblique rows | RSGD", "Oblique rows | BAOAB", "Oblique rows | Constrained(Adam)",
    "CircleLift | RSGD",
    "floor: SGD + X sym(X^T G) + Cholesky-QR", "Stiefel qr | RSGD", "Stiefel qr | BAOAB",
    "Stiefel qr | Constrained(Adam)",
)


def _numels(shapes: object) -> list[int]:
    """Element counts of the tensor operands in a profiler ``input_shapes`` entry."""
    out: list[int] = []
    for s in shapes if isinstance(shapes, list) else []:
        if isinstance(s, list) and s and all(isinstance(d, int) for d in s):
            out.append(math.prod(s))
        elif isinstance(s, list) and s and isinstance(s[0], list):  # a TensorList
            out += _numels(s)
    return out


def _writes(name: str) -> bool:
    op = name.removeprefix("aten::")
    if name in GEMM or op.startswith("linalg") or any(r in op for r in REDUCTIONS):
        return op.endswith("_") or op.startswith("_foreach") and op.endswith("_")
    return True


def _linalg(name: str) -> bool:
    """A factorisation or solve (norms are reductions, not counted here)."""
    if "norm" in name:
        return False
    return name.startswith("aten::linalg") or "cholesky" in name or "triangular" in name


def _inside(e: object, names: tuple[str, ...]) -> bool:
    """Whether an enclosing aten operator is one of ``names`` or a linalg operator."""
    parent = getattr(e, "cpu_parent", None)
    while parent is not None:
        if parent.name in names or _linalg(parent.name):
            return True
        parent = parent.cpu_parent
    return False


def count_step(built: Built, steps: int = 3, warmup: int = 2) -> dict:
    """Per-step counts of the optimizer step of a built benchmark case."""
    wl, opt = built.workload, built.optimizer
    hidden = sum(layer.weight.numel() for layer in wl.hidden)

    def one() -> None:
        opt.zero_grad(set_to_none=True)
        wl.loss().backward()

    for _ in range(warmup):
        one()
        opt.step()
    events = []
    for _ in range(steps):
        one()
        with profile(activities=[ProfilerActivity.CPU], record_shapes=True) as prof:
            opt.step()
        events += [e for e in prof.events() if e.name.startswith("aten::")]
    leaves = [e for e in events if not any(c.name.startswith("aten::") for c in e.cpu_children)]
    outer = [e for e in events
             if e.cpu_parent is None or not e.cpu_parent.name.startswith("aten::")]
    passes = 0.0
    while outer:
        e = outer.pop()
        if e.name.startswith("aten::_foreach"):  # its TensorList shapes are not recorded
            outer += [c for c in e.cpu_children if c.name.startswith("aten::")]
            continue
        big = [n for n in _numels(e.input_shapes) if n >= BIG]
        if big and e.name not in VIEWS:
            passes += sum(big) + (max(big) if _writes(e.name) else 0)
    self_time: Counter[str] = Counter()
    for e in events:
        self_time[e.name] += e.self_cpu_time_total
    top = ", ".join(f"{n.removeprefix('aten::')} {100 * t / max(1, sum(self_time.values())):.0f}%"
                    for n, t in self_time.most_common(6))
    return {
        "kernels": len(leaves) / steps,
        "passes": passes / hidden / steps,
        "gemms": sum(e.name in GEMM and not _inside(e, GEMM) for e in events) / steps,
        "linalg": sum(_linalg(e.name) and not _inside(e, ()) for e in events) / steps,
        "syncs": sum(e.name in SYNC for e in events) / steps,
        "top": top,
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", nargs="*", default=list(DEFAULT_CASES))
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    from .cases import GEODYN_OPTIMIZERS, MANIFOLDS

    cases = {c.name: c for c in baselines() + geodyn_cases(MANIFOLDS, GEODYN_OPTIMIZERS)}
    make = partial(mlp, sizes=(784, 1024, 1024, 10), batch=128)
    print(f"{'case':42s} {'kernels':>7s} {'passes':>6s} {'GEMMs':>5s} {'linalg':>6s} "
          f"{'syncs':>5s}  top self CPU")
    for name in args.cases:
        case = cases.get(name)
        if case is None or case.absent is not None:
            why = "unknown case" if case is None else case.absent
            print(f"{name:42s} absent: {why}")
            continue
        c = count_step(case.build(lambda lift: make(lift=lift)), steps=args.steps)
        print(f"{name:42s} {c['kernels']:7.0f} {c['passes']:6.1f} {c['gemms']:5.0f} "
              f"{c['linalg']:6.0f} {c['syncs']:5.0f}  {c['top']}")


if __name__ == "__main__":
    main()
