r"""Worst constraint residual per manifold and parameter dtype over a run of steps.

    python -m benchmarks.residuals_dtype [--steps 200] [--rows 256] [--cols 128]

Each manifold x integrator (RiemannianSGD with momentum, BAOAB at tau > 0) is run on
random gradients (rows of norm about 1) for ``--steps`` steps in float64, float32,
bfloat16 and float16. The residual max |c(x)| of the stored parameter is evaluated in
float64 after every step; the table shows its maximum over the run. The last row is
the bound for one rounding of an on-manifold point, u = eps/2 for the dtype
(spheres: u + u^2/2; Stiefel, whose c = X^T X - I has no factor 1/2: 2u + u^2).
"""

from __future__ import annotations

import argparse
from collections.abc import Callable

import torch
from torch import nn

import geodyn

DTYPES = (torch.float64, torch.float32, torch.bfloat16, torch.float16)

MANIFOLDS: dict[str, Callable[[int, int], tuple[geodyn.Manifold, tuple[int, ...]]]] = {
    "Sphere": lambda n, p: (geodyn.Sphere(), (n, p)),
    "Stiefel": lambda n, p: (geodyn.Stiefel(), (n, p)),
    "LpSphere(3)": lambda n, p: (geodyn.LpSphere(3.0), (n, p)),
    "NormBall": lambda n, p: (geodyn.NormBall(1.0), (n, p)),
    "CircleLift(0.5)": lambda n, p: (geodyn.CircleLift(0.5), (n, p, 2)),
}

INTEGRATORS: dict[str, Callable[[list[dict]], torch.optim.Optimizer]] = {
    "RiemannianSGD": lambda groups: geodyn.RiemannianSGD(groups, lr=0.05, momentum=0.9),
    "BAOAB": lambda groups: geodyn.Splitting(groups, lr=0.05, gamma=1.0, tau=1e-3, seed=0),
}


def worst_residual(
    manifold: geodyn.Manifold,
    shape: tuple[int, ...],
    make: Callable,
    dtype: torch.dtype,
    steps: int,
) -> float:
    """max over ``steps`` steps of max |c(x)| (in float64) of a ``dtype`` parameter."""
    g = torch.Generator().manual_seed(0)
    x = nn.Parameter(manifold.random_point(*shape, dtype=torch.float64, generator=g).to(dtype))
    opt = make([{"params": [x], "manifold": manifold}])
    scale = shape[-1] ** -0.5
    worst = float(manifold.residual(x.detach().double()))
    for _ in range(steps):
        x.grad = (scale * torch.randn(shape, dtype=torch.float64, generator=g)).to(dtype)
        opt.step()
        worst = max(worst, float(manifold.residual(x.detach().double())))
    return worst


def one_rounding(dtype: torch.dtype, stiefel: bool) -> float:
    u = torch.finfo(dtype).eps / 2
    return 2 * u + u * u if stiefel else u + u * u / 2


def table(rows: int, cols: int, steps: int, log: Callable[[str], None] = print) -> list[str]:
    """The markdown table of worst residuals, one line per manifold x integrator."""
    names = [str(dt).removeprefix("torch.") for dt in DTYPES]
    lines = [
        "| manifold | integrator | " + " | ".join(names) + " |",
        "|---|---|" + "---:|" * len(DTYPES),
    ]
    for mname, build in MANIFOLDS.items():
        manifold, shape = build(rows, cols)
        for iname, make in INTEGRATORS.items():
            cells = [worst_residual(manifold, shape, make, dt, steps) for dt in DTYPES]
            lines.append(f"| {mname} | {iname} | " + " | ".join(f"{c:.1e}" for c in cells) + " |")
            log(lines[-1])
    for label, stiefel in (("sphere-like", False), ("Stiefel", True)):
        bound = " | ".join(f"{one_rounding(dt, stiefel):.1e}" for dt in DTYPES)
        lines.append(f"| one rounding, u = eps/2 | {label} | {bound} |")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--rows", type=int, default=256)
    parser.add_argument("--cols", type=int, default=128)
    parser.add_argument("--threads", type=int, default=2, help="torch.set_num_threads")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    lines = table(args.rows, args.cols, args.steps, log=lambda _: None)
    print(f"worst residual max |c(x)| over {args.steps} steps, {args.rows}x{args.cols}")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
