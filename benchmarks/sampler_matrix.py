"""The sampler matrix table for docs/sampler-matrix.md.

    python -m benchmarks.sampler_matrix [--scale 10] [--out docs/sampler-matrix-table.md]

Runs every sampling integrator on every reference problem (geodyn.testing.matrix) and
writes the markdown table: law, sample size, worst observable, max |z|, p-value, pass.
"""

from __future__ import annotations

import argparse
import time

import torch

from geodyn.testing.matrix import format_matrix, run_matrix


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", type=float, default=1.0, help="multiplies the chains")
    parser.add_argument("--out", default=None, help="write the table to this file")
    args = parser.parse_args()
    torch.set_num_threads(1)
    start = time.perf_counter()

    def show(r: dict) -> None:
        print(f"{r['sampler']:15s} {r['problem']:28s} p={r['p_value']:.3g} "
              f"max|z|={r['max_abs_z']:.1f} {'ok' if r['passed'] else 'FAIL'} "
              f"{r['seconds']:.1f}s", flush=True)

    rows = run_matrix(scale=args.scale, progress=show)
    wall = time.perf_counter() - start
    table = format_matrix(rows)
    failed = sum(not r["passed"] for r in rows)
    footer = (f"\n\n{len(rows)} cells, {failed} rejected, family-wise alpha 0.01, "
              f"scale {args.scale:g}, {wall:.0f} s on one thread.\n")
    print(table + footer)
    if args.out:
        with open(args.out, "w") as f:
            f.write(table + footer)


if __name__ == "__main__":
    main()
