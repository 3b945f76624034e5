"""The integrator lab behind ``geodyn schemes``: weak order and bias of scheme words.

For each word (``--schemes BAOAB,OBABO,ABOBA,BAOOAB``, any word over A, B, O, or
``overdamped``) and each problem, :func:`geodyn.testing.weak_order` measures the bias
of the problem's observable at each step size and fits its order. Writes
``schemes.md`` (word, problem, order and interval, bias at each h), ``bias.png``
(log-log |bias| against h, with the fitted slopes) and, for constrained HMC, the
acceptance rate, reversibility and solve failures and the bias z-score against h.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from geodyn.integrators import ConstrainedHMC, Overdamped, Splitting, compile_scheme
from geodyn.manifolds import ConvergenceError

from .chains import IntegratorFactory, run_chains
from .order import weak_order
from .problems import DT, Problem, gaussian, pendulum, von_mises_fisher

__all__ = ["LAB_PROBLEMS", "LabProblem", "factory", "run"]


@dataclass(frozen=True)
class LabProblem:
    """A reference problem, the observable whose bias is measured, and the step sizes and
    chains per step size that resolve the bias: for the splitting words and for the
    overdamped scheme."""

    make: Callable[[], Problem]
    observable: str
    steps: tuple[float, ...]
    overdamped_steps: tuple[float, ...]
    chains: int = 10000
    overdamped_chains: int = 10000

    def design(self, word: str) -> tuple[tuple[float, ...], int]:
        """The step sizes and chains of ``word``."""
        if word.lower() == "overdamped":
            return self.overdamped_steps, self.overdamped_chains
        return self.steps, self.chains


LAB_PROBLEMS: dict[str, LabProblem] = {
    "gaussian": LabProblem(lambda: gaussian(2), "E|x|^2", (0.2, 0.4, 0.6), (0.05, 0.1, 0.2)),
    "pendulum": LabProblem(lambda: pendulum(1.0), "E q", (0.7, 1.0, 1.3, 1.6),
                           (0.05, 0.1, 0.2), chains=100_000, overdamped_chains=20_000),
    "vmf": LabProblem(lambda: von_mises_fisher(3, 10.0), "E mu.x", (0.08, 0.11, 0.14, 0.17),
                      (0.0025, 0.005, 0.01)),
}
"""The lab's problems: a harmonic (Gaussian), an anharmonic (pendulum) and a curved (vMF) one.

The pendulum's curvature is bounded (U'' <= 1) and its drift is an exact rotation, so
every h < 2 is stable: large steps where BAOAB's small bias is resolved.
"""


def factory(word: str, gamma: float) -> IntegratorFactory:
    """The integrator of a word: a Splitting scheme, or ``overdamped``."""
    if word.lower() == "overdamped":
        return lambda ps, h: Overdamped(ps, lr=h, tau=1.0, seed=0)
    compile_scheme(word)  # a clear error for a bad word
    return lambda ps, h: Splitting(ps, lr=h, gamma=gamma, tau=1.0, scheme=word, seed=0)


def _fmt(b: float, s: float) -> str:
    return f"{b:+.2e} ± {s:.0e}"


def run(
    words: list[str],
    names: list[str],
    *,
    chains: int | None = None,
    duration: float = 8.0,
    gamma: float = 1.0,
    out: Path = Path("schemes"),
    hmc: bool = True,
) -> str:
    """Fit every word on every problem; write ``schemes.md`` and ``bias.png`` into ``out``.

    ``chains`` per step size (default: each problem's own, :attr:`LabProblem.chains`).
    Returns the markdown text (the weak-order table, then the exact sampler's table).
    """
    unknown = [p for p in names if p not in LAB_PROBLEMS]
    if unknown:
        raise ValueError(f"--problems: unknown {unknown}; choose from {', '.join(LAB_PROBLEMS)}")
    makers = {w: factory(w, gamma) for w in words}
    torch.set_num_threads(1)
    out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    results = []
    for name in names:
        lab = LAB_PROBLEMS[name]
        problem = lab.make()
        for word in words:
            steps, n = lab.design(word)
            n = chains or n
            try:
                r = weak_order(makers[word], problem, steps, observable=lab.observable,
                               chains=n, time=duration)
            except ConvergenceError as err:  # a constraint solve failed: the word's limit
                print(f"{word:10s} {name:9s} failed: {err}", flush=True)
                continue
            r["word"], r["chains"] = word, n
            results.append(r)
            lo, hi = r["interval"]
            print(f"{word:10s} {name:9s} order {r['order']:.2f} [{lo:.2f}, {hi:.2f}]", flush=True)
    lines = ["| word | problem | observable | chains | order [99% interval] | bias at h |",
             "|---|---|---|---|---|---|"]
    for r in results:
        lo, hi = r["interval"]
        biases = "; ".join(f"h={h:g}: {_fmt(b, s)}"
                           for h, b, s in zip(r["step_sizes"], r["bias"], r["se"], strict=True))
        lines.append(f"| {r['word']} | {r['problem']} | {r['observable']} | {r['chains']} | "
                     f"{r['order']:.2f} [{lo:.2f}, {hi:.2f}] | {biases} |")
    text = "\n".join(lines)
    if hmc:
        first = LAB_PROBLEMS[names[0]]
        text += "\n\n" + _hmc_table(first, chains or first.chains)
    wall = time.perf_counter() - start
    text += (f"\n\n{len(results)} fits, {duration:g} time units per h; "
             f"{wall:.0f} s on one thread.\n")
    (out / "schemes.md").write_text(text)
    _plot(results, out / "bias.png")
    return text


def _hmc_table(lab: LabProblem, chains: int) -> str:
    """Constrained HMC against h: acceptance, reverse and solve failures, bias z-score."""
    problem = lab.make()
    ref = problem.reference
    j = ref.names.index(lab.observable)
    rows = ["| exact sampler | h | acceptance | reverse failures | solve failures | "
            f"bias of {lab.observable} | z |", "|---|---|---|---|---|---|---|"]
    for h in (*lab.steps, 2 * lab.steps[-1]):
        run_ = run_chains(lambda ps, hh: ConstrainedHMC(ps, lr=hh, steps=4, seed=0),
                          problem.manifold, problem.potential, ref, h=h,
                          chains=max(100, chains // 10), steps=40, burn=5)
        est = run_.estimate()
        opt = run_.optimizer
        n = opt.stats["proposals"]
        b, s = float(est.mean[j]) - ref.expected[j], float(est.se[j])
        rev, solve = opt.stats["reverse_failures"] / n, opt.stats["solve_failures"] / n
        z = b / s if s > 0 else math.nan
        rows.append(f"| ConstrainedHMC (L=4), {problem.name} | {h:g} | "
                    f"{opt.acceptance_rate:.3f} | {rev:.2e} | {solve:.2e} | {_fmt(b, s)} | "
                    f"{z:+.1f} |")
    return "\n".join(rows)


def _plot(results: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    problems = sorted({r["problem"] for r in results})
    fig, axes = plt.subplots(1, len(problems), figsize=(4.5 * len(problems), 4), squeeze=False)
    for ax, name in zip(axes[0], problems, strict=True):
        for r in (r for r in results if r["problem"] == name):
            h = torch.tensor(r["step_sizes"], dtype=DT)
            b = torch.tensor(r["bias"], dtype=DT).abs()
            s = torch.tensor(r["se"], dtype=DT)
            line = ax.errorbar(h, b, yerr=s, fmt="o", capsize=2,
                               label=f"{r['word']}: slope {r['order']:.2f}")
            if math.isfinite(r["order"]):
                fit = abs(r["constant"]) * h ** r["order"]
                ax.plot(h, fit, "-", color=line[0].get_color())
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("h")
        ax.set_ylabel("|bias|")
        ax.set_title(name)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
