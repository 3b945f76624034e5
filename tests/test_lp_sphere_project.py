"""LpSphere.project at every distance: on M, the Lagrange condition, rows independent, nearest."""

from __future__ import annotations

import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from geodyn import LpSphere
from geodyn.manifolds import default_atol

EXPONENTS = (1.1, 1.5, 2.5, 3.0, 7.0, 15.0, 20.0, 40.0)


def parallel_error(manifold: LpSphere, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Per row, |part of x - y orthogonal to n(y)| / (|x - y| + |y|): 0 for the Lagrange
    condition. Rounding y to its dtype moves it by about eps |y| in any direction, which
    reaches the orthogonal part whatever |x - y|; hence |y| in the scale."""
    x, y = x.double(), y.double()
    d = x - y
    n = manifold.normal(y)
    perp = d - n * ((n * d).sum(-1, keepdim=True) / (n * n).sum(-1, keepdim=True))
    return perp.norm(dim=-1) / (d.norm(dim=-1) + y.norm(dim=-1)).clamp_min(1e-300)


@settings(max_examples=25)
@given(
    p=st.sampled_from(EXPONENTS),
    log_distance=st.floats(-2.0, 6.0),
    radius=st.sampled_from((0.5, 1.0, 3.0)),
    dtype=st.sampled_from((torch.float32, torch.float64)),
    n=st.integers(2, 6),
    seed=st.integers(0, 2**16),
)
def test_project_at_any_distance(
    p: float, log_distance: float, radius: float, dtype: torch.dtype, n: int, seed: int
) -> None:
    manifold = LpSphere(p, radius)
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(8, n, dtype=torch.float64, generator=g)
    # ||x_i||_p / r from 1e-2 (inside) to 1e6 (far outside), one distance per row
    distance = 10 ** (log_distance - torch.rand(8, 1, dtype=torch.float64, generator=g))
    x = (x * (radius * distance / manifold._norm_p(x))).to(dtype)
    y = manifold.project(x)
    eps = torch.finfo(dtype).eps
    assert y.dtype == dtype
    assert float(manifold.residual(y)) <= 64 * eps
    # x - y is normal at y (both the nearest point and the stationary points inside)
    assert float(parallel_error(manifold, x, y).max()) <= 64 * p * eps
    # each row is projected on its own (up to the rounding of batched reductions)
    alone = torch.cat([manifold.project(x[i : i + 1]) for i in range(x.shape[0])])
    torch.testing.assert_close(alone, y, rtol=4 * eps, atol=4 * eps * radius)
    # homogeneity: P_r(x) = r P_1(x / r)
    unit = LpSphere(p).project((x.double() / radius).to(dtype)) * radius
    torch.testing.assert_close(unit, y, rtol=64 * p * eps, atol=0)
    # nearest: no farther from x than random points of M (outside, or p <= 2, where the
    # projection is the global minimiser)
    w = manifold.random_point(64, 8, n, dtype=torch.float64, generator=g)
    dist = (x.double() - y.double()).norm(dim=-1)
    others = (x.double() - w).norm(dim=-1).amin(0)
    checked = (distance.squeeze(-1) > 1) | (p <= 2)
    slack = 1 + 64 * eps
    assert bool((dist[checked] <= others[checked] * slack).all())
    assert float(manifold.residual(y)) <= default_atol(dtype)


def test_far_points_in_float32_reproducer() -> None:
    manifold = LpSphere(7.0, 1.0)
    x = torch.tensor([[-2e6, -1.8e5, 6e5, -1.7e6, 8e5]])
    y = manifold.project(x)
    assert float(manifold.residual(y)) <= 64 * torch.finfo(torch.float32).eps
    assert float(parallel_error(manifold, x, y).max()) <= 64 * 7 * torch.finfo(torch.float32).eps
