"""Every sampling integrator x every built-in constraint set hits its exact law.

Each cell is :func:`geodyn.testing.check_sampler` at level 0.01 / (number of cells)
(Bonferroni: the whole matrix has family-wise error 0.01). GEODYN_SAMPLER_MATRIX=long
runs 10x the chains (``benchmarks/sampler_matrix.py`` writes the table for the docs).
"""

import os

import pytest

from geodyn.testing.matrix import MATRIX_PROBLEMS, SAMPLERS, run_matrix

SCALE = 10.0 if os.environ.get("GEODYN_SAMPLER_MATRIX") == "long" else 1.0
CELLS = [(s, p) for p in MATRIX_PROBLEMS for s in SAMPLERS]


@pytest.mark.parametrize(("sampler", "problem"), CELLS, ids=[f"{s}-{p}" for s, p in CELLS])
def test_sampler_hits_its_law(sampler, problem):
    (report,) = run_matrix(scale=SCALE, samplers=(sampler,), problems=(problem,))
    worst = max(report["observables"], key=lambda o: abs(o["z"]))
    assert report["passed"], (
        f"{sampler} on {report['problem']}: p-value {report['p_value']:.2e} "
        f"< {report['alpha']:.1e};"
        f" {worst['name']} = {worst['mean']:.4f} +- {worst['se']:.4f}, exact {worst['exact']:.4f}"
    )
