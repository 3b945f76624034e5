"""NormBall.drift: the billiard flow, and the sampled law of BAOAB built on it."""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor

from geodyn import NormBall

F64 = torch.float64
Drift = Callable[[Tensor, Tensor, float], tuple[Tensor, Tensor]]


def test_drift_reflects_elastically_along_a_diameter() -> None:
    # from 0 with p = e1 the path bounces at +-r: at t = 1.5 it is at 0.5 moving back,
    # at t = 3.5 (two hits) at -0.5 moving forward
    ball = NormBall(1.0)
    x = torch.zeros(2, 2, dtype=F64)
    p = torch.tensor([[1.0, 0.0], [0.0, 2.0]], dtype=F64)
    y, q = ball.drift(x, p, 1.5)
    torch.testing.assert_close(y, torch.tensor([[0.5, 0.0], [0.0, -1.0]], dtype=F64))
    torch.testing.assert_close(q, torch.tensor([[-1.0, 0.0], [0.0, -2.0]], dtype=F64))
    y, q = ball.drift(x[:1], p[:1], 3.5)
    torch.testing.assert_close(y, torch.tensor([[-0.5, 0.0]], dtype=F64))
    torch.testing.assert_close(q, p[:1])


def test_drift_is_reversible_keeps_speed_and_stays_in_the_ball() -> None:
    ball = NormBall(2.0)
    g = torch.Generator().manual_seed(0)
    x = ball.random_point(200, 3, dtype=F64, generator=g)
    p = 3 * torch.randn(200, 3, dtype=F64, generator=g)
    y, q = ball.drift(x, p, 1.7)  # several chords per row
    assert float(ball.residual(y)) == 0.0
    torch.testing.assert_close(q.norm(dim=-1), p.norm(dim=-1), rtol=1e-12, atol=0)
    back, p_back = ball.drift(y, -q, 1.7)
    torch.testing.assert_close(back, x, rtol=0, atol=1e-10)
    torch.testing.assert_close(p_back, -p, rtol=0, atol=1e-10)
    # rows are independent: one row alone moves as in the batch
    alone, _ = ball.drift(x[:1], p[:1], 1.7)
    torch.testing.assert_close(alone, y[:1], rtol=0, atol=1e-13)


def _bounce_by_bounce(x: Tensor, p: Tensor, h: float, r: float) -> tuple[Tensor, Tensor]:
    """Reference: follow the billiard one chord at a time (one row, float64)."""
    left = h
    while True:
        a, b, c = float(p @ p), float(x @ p), float(x @ x) - r * r
        t = (-b + math.sqrt(max(b * b - a * c, 0.0))) / a
        if t >= left:
            return x + left * p, p
        x = x + t * p
        x = x * (r / float(x.norm()))
        p = p - 2 * float(x @ p) / (r * r) * x
        left -= t


def test_drift_equals_the_bounce_by_bounce_billiard_for_many_hits() -> None:
    ball = NormBall(1.5)
    g = torch.Generator().manual_seed(1)
    x = ball.random_point(50, 3, dtype=F64, generator=g)
    p = 2 * torch.randn(50, 3, dtype=F64, generator=g)
    y, q = ball.drift(x, p, 20.0)  # tens of wall hits per row
    for i in range(50):
        y_ref, q_ref = _bounce_by_bounce(x[i], p[i], 20.0, 1.5)
        torch.testing.assert_close(y[i], y_ref, rtol=0, atol=1e-8)
        torch.testing.assert_close(q[i], q_ref, rtol=0, atol=1e-8)


def test_drift_of_a_grazing_path_slides_along_the_wall() -> None:
    # from the wall with a tangent momentum: every chord has zero length, and the limit
    # of the billiard is the great circle at the same speed
    ball = NormBall(1.0)
    x = torch.tensor([[1.0, 0.0, 0.0]], dtype=F64)
    p = torch.tensor([[0.0, 2.0, 0.0]], dtype=F64)
    y, q = ball.drift(x, p, 0.25)
    torch.testing.assert_close(y, torch.tensor([[math.cos(0.5), math.sin(0.5), 0.0]], dtype=F64))
    turned = torch.tensor([[-math.sin(0.5), math.cos(0.5), 0.0]], dtype=F64)
    torch.testing.assert_close(q, 2 * turned)
    for dtype in (torch.float32, torch.bfloat16):
        y, _ = ball.drift(x.to(dtype), p.to(dtype), 0.25)  # no loop to exhaust in low precision
        assert bool(torch.isfinite(y).all()) and float(y.float().norm()) <= 1.0 + 1e-2


def _inelastic(ball: NormBall) -> Drift:
    """The SHAKE/RATTLE drift: the wall keeps a point but removes its outward momentum."""

    def drift(x: Tensor, p: Tensor, h: float) -> tuple[Tensor, Tensor]:
        y = ball.shake(x, x + h * p)
        return y, ball.rattle(y, (y - x) / h)

    return drift


def _baoab_mean_sq_norm(
    ball: NormBall, drift: Drift, chains: int, steps: int, burn: int, h: float
) -> tuple[float, float]:
    """BAOAB with U = 0, gamma = tau = 1 from the uniform law: E|x|^2 and its standard error.

    Chains are independent, so the spread of the per-chain time averages gives the
    standard error with the autocorrelation inside each chain accounted for.
    """
    g = torch.Generator().manual_seed(0)
    x = ball.random_point(chains, 3, dtype=F64, generator=g)
    p = torch.zeros_like(x)
    c = math.exp(-h)
    sigma = math.sqrt(1 - c * c)
    total = torch.zeros(chains, dtype=F64)
    for step in range(steps):
        x, p = drift(x, p, h / 2)
        p = ball.proj_tangent(x, c * p + sigma * torch.randn(x.shape, dtype=F64, generator=g))
        x, p = drift(x, p, h / 2)
        if step >= burn:
            total += (x * x).sum(-1)
    means = total / (steps - burn)
    return float(means.mean()), float(means.std() / math.sqrt(chains))


def test_baoab_with_the_elastic_wall_samples_the_uniform_ball() -> None:
    # uniform on the ball in R^3: E|x|^2 = d / (d + 2) = 3/5; with the inelastic wall 0.80
    ball = NormBall(1.0)
    args = {"chains": 1000, "steps": 400, "burn": 100, "h": 0.05}
    mean, se = _baoab_mean_sq_norm(ball, ball.drift, **args)
    assert abs(mean - 0.6) < 4 * se, (mean, se)
    # the same statistic rejects the inelastic wall: the check has power
    biased, se_biased = _baoab_mean_sq_norm(ball, _inelastic(ball), **args)
    assert abs(biased - 0.6) > 4 * se_biased, (biased, se_biased)
