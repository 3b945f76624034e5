"""The sampler matrix: every sampling integrator x every built-in constraint set.

Each cell runs :func:`geodyn.testing.check_sampler` on one reference problem. The
family-wise significance level ``alpha`` is split over the cells (Bonferroni), so a
correct matrix fails with probability below ``alpha`` in all. ``scale`` multiplies
the number of chains (the long mode: more chains, smaller detectable bias).

Step sizes: h = 0.1 for the splitting words (bias O(h^2)), h = 0.004 for the
overdamped scheme (bias O(h)), h = 0.25 with 3 RATTLE steps for constrained HMC
(no bias). Each cell records ``time`` units of dynamics after ``burn`` units.
"""

from __future__ import annotations

import time as _time
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from geodyn.integrators import ConstrainedHMC, Overdamped, Splitting

from .chains import IntegratorFactory
from .problems import PROBLEMS, Problem
from .sampler import check_sampler

__all__ = ["MATRIX_PROBLEMS", "SAMPLERS", "SamplerSpec", "format_matrix", "run_matrix"]


@dataclass(frozen=True)
class SamplerSpec:
    """A sampling integrator of the matrix: its factory, step size and run lengths (time)."""

    factory: IntegratorFactory
    h: float
    time: float
    burn: float


def _splitting(word: str) -> IntegratorFactory:
    def make(params: list[torch.Tensor], h: float) -> torch.optim.Optimizer:
        return Splitting(params, lr=h, gamma=1.0, tau=1.0, scheme=word, seed=0)

    return make


def _overdamped(params: list[torch.Tensor], h: float) -> torch.optim.Optimizer:
    return Overdamped(params, lr=h, tau=1.0, seed=0)


def _hmc(params: list[torch.Tensor], h: float) -> torch.optim.Optimizer:
    return ConstrainedHMC(params, lr=h, steps=3, tau=1.0, seed=0)


SAMPLERS: dict[str, SamplerSpec] = {
    "BAOAB": SamplerSpec(_splitting("BAOAB"), 0.1, 6.0, 2.0),
    "OBABO": SamplerSpec(_splitting("OBABO"), 0.1, 6.0, 2.0),
    "ABOBA": SamplerSpec(_splitting("ABOBA"), 0.1, 6.0, 2.0),
    "Overdamped": SamplerSpec(_overdamped, 0.004, 1.2, 0.2),
    "ConstrainedHMC": SamplerSpec(_hmc, 0.25, 8.0, 1.0),
}
"""The sampling integrators (HMC's time is in proposals x h)."""

MATRIX_PROBLEMS: tuple[str, ...] = (
    "gaussian", "sphere", "vmf2", "vmf4", "double-well", "oblique", "haar-o3", "stiefel-5-2",
    "ball", "ball-linear", "circle-lift", "lp3", "lp1.5", "product", "torus",
)
"""One reference law per built-in constraint set (and a potential on several)."""

# The implicit manifold solves by vmap-ed Newton steps (slow per step): fewer chains.
_CHAINS = {"torus": 200}
# Stiefel(5, 2)'s and the implicit torus's SHAKE Newton fail for HMC's full momentum draws
# at h = 0.25 often enough that locating the failed chains (by halving the batch)
# dominates: a smaller step there.
_STEP = {("ConstrainedHMC", "stiefel-5-2"): 0.1, ("ConstrainedHMC", "torus"): 0.1}


def run_matrix(
    *,
    scale: float = 1.0,
    alpha: float = 0.01,
    chains: int = 500,
    samplers: tuple[str, ...] | None = None,
    problems: tuple[str, ...] | None = None,
    progress: Callable[[dict[str, Any]], None] | None = None,
) -> list[dict[str, Any]]:
    """Run the matrix; one report of :func:`check_sampler` per cell, plus its wall time.

    Every cell is tested at level alpha / (number of cells of the whole matrix) and
    seeded by its names, so a subset reproduces the same cells of the full run.

    Args:
        scale: multiplies the number of chains.
        alpha: family-wise significance level over the whole matrix.
        chains: chains per cell before ``scale``.
        samplers, problems: subsets (names of :data:`SAMPLERS`, :data:`MATRIX_PROBLEMS`).
        progress: called with each cell's report as it finishes.
    """
    names = samplers or tuple(SAMPLERS)
    cells = [(s, p) for p in (problems or MATRIX_PROBLEMS) for s in names]
    level = alpha / (len(SAMPLERS) * len(MATRIX_PROBLEMS))
    built: dict[str, Problem] = {}
    out = []
    for sname, pname in cells:
        spec = SAMPLERS[sname]
        h = _STEP.get((sname, pname), spec.h)
        problem = built.setdefault(pname, PROBLEMS[pname]())
        steps, burn = max(1, round(spec.time / h)), round(spec.burn / h)
        n = max(50, round(_CHAINS.get(pname, chains) * scale))
        start = _time.perf_counter()
        report = check_sampler(
            spec.factory, problem.manifold, problem.potential, problem.reference,
            h=h, chains=n, steps=steps, burn=burn, alpha=level,
            seed=zlib.crc32(f"{sname}/{pname}".encode()),
            raise_on_failure=False,
        )
        report.update(sampler=sname, problem=problem.name, key=pname,
                      seconds=_time.perf_counter() - start)
        out.append(report)
        if progress is not None:
            progress(report)
    return out


def format_matrix(rows: list[dict[str, Any]]) -> str:
    """The matrix as a markdown table (one row per cell)."""
    lines = [
        "| integrator | constraint set / law | h | chains x steps | observables | "
        "worst observable: mean (exact) | max abs z | p-value | pass |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        worst = max(r["observables"], key=lambda o: abs(o["z"]))
        lines.append(
            f"| {r['sampler']} | {r['problem']} | {r['h']:g} | {r['chains']} x {r['steps']} | "
            f"{r['dof']} | {_cell(worst['name'])}: {worst['mean']:.4f} ({worst['exact']:.4f}) | "
            f"{r['max_abs_z']:.1f} | {r['p_value']:.2g} | {'yes' if r['passed'] else 'NO'} |"
        )
    return "\n".join(lines)


def _cell(text: str) -> str:
    """``text`` inside a markdown table cell (its ``|`` escaped)."""
    return text.replace("|", "\\|")
