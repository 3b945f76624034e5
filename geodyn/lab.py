"""``geodyn schemes``: measure the weak order and bias of scheme words (the integrator lab).

For each word (``--schemes BAOAB,OBABO,ABOBA,BAOOAB``, any word over A, B, O, or
``overdamped``) and each problem, ``geodyn.testing.weak_order`` measures the bias of
the problem's observable at each step size and fits its order. Writes ``schemes.md``
(word, problem, order and interval, bias at each h) and ``bias.png`` (log-log |bias|
against h with the fitted slopes), and the exact sampler's acceptance rate,
reversibility and solve failures against h.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

__all__ = ["add_parser", "main"]

PROBLEM_NAMES = ("gaussian", "pendulum", "vmf")


def add_parser(sub: Any) -> argparse.ArgumentParser:
    """Register ``geodyn schemes`` on the CLI's sub-command parsers."""
    s = sub.add_parser(
        "schemes", help="measure the weak order and bias of scheme words",
        description="Measure the bias of configurational averages of scheme words against "
        "the step size on reference problems, fit the weak order with its interval, and "
        "measure the exact sampler (constrained HMC).", allow_abbrev=False,
    )
    s.add_argument("--schemes", default="BAOAB,OBABO,ABOBA,overdamped",
                   help="comma-separated words over A, B, O, or 'overdamped' "
                   "(default: BAOAB,OBABO,ABOBA,overdamped)")
    s.add_argument("--problems", default=",".join(PROBLEM_NAMES),
                   help=f"comma-separated problems from {', '.join(PROBLEM_NAMES)}")
    s.add_argument("--chains", type=int, default=None,
                   help="chains per step size (default: each problem's own)")
    s.add_argument("--time", type=float, default=8.0, help="recorded time per chain")
    s.add_argument("--gamma", type=float, default=1.0, help="friction of the splitting words")
    s.add_argument("--out", type=Path, default=Path("schemes"), help="results folder")
    s.add_argument("--no-hmc", dest="hmc", action="store_false",
                   help="skip the exact sampler's acceptance table")
    return s


def main(args: argparse.Namespace) -> int:
    """Run ``geodyn schemes``; the exit status (2 on a bad setting)."""
    words = [w.strip() for w in args.schemes.split(",") if w.strip()]
    names = [p.strip() for p in args.problems.split(",") if p.strip()]
    try:
        unknown = [p for p in names if p not in PROBLEM_NAMES]
        if unknown or not names or not words:
            raise ValueError(f"--problems: unknown {unknown}; choose from "
                             f"{', '.join(PROBLEM_NAMES)} (and give at least one --schemes word)")
        if (args.chains is not None and args.chains < 10) or args.time <= 0:
            raise ValueError("--chains must be >= 10 and --time > 0")
        from geodyn.integrators import compile_scheme

        for w in words:
            if w.lower() != "overdamped":
                compile_scheme(w)
        from geodyn.testing.lab import run  # the law suite's statistics (needs hypothesis)

        text = run(words, names, chains=args.chains, duration=args.time, gamma=args.gamma,
                   out=args.out, hmc=args.hmc)
    except ValueError as err:
        print(f"geodyn schemes: error: {err}", file=sys.stderr)
        return 2
    print(text)
    return 0
