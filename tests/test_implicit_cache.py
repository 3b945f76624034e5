"""c(x) and its Jacobian are evaluated once per point within an integrator step."""

from __future__ import annotations

import torch
from torch import Tensor

from geodyn.constraints import Implicit
from geodyn.constraints._evaluations import EvaluationCache
from geodyn.integrators import Splitting
from geodyn.manifolds import Sphere


class Counted:
    """The unit-sphere constraint c(x) = (x.x - 1) / 2, counting its evaluations."""

    def __init__(self) -> None:
        self.calls = 0

    def __call__(self, x: Tensor) -> Tensor:
        self.calls += 1  # vmap and jacrev trace c once per batched evaluation
        return (x @ x - 1) / 2


def _baoab_evaluations(cache_size: int, steps: int = 4) -> tuple[list[int], Tensor]:
    c = Counted()
    m = Implicit(c, n=8)
    m._evaluations = EvaluationCache(cache_size)
    gen = torch.Generator().manual_seed(0)
    p = torch.nn.Parameter(Sphere().random_point(4, 8, dtype=torch.float64, generator=gen))
    opt = Splitting([{"params": [p], "manifold": m}], lr=1e-2, gamma=1.0, tau=1e-2, seed=0)
    counts = []
    for _ in range(steps):
        p.grad = torch.randn(p.shape, dtype=p.dtype, generator=gen)
        c.calls = 0
        opt.step()
        counts.append(c.calls)
    return counts, p.detach().clone()


def test_a_baoab_step_evaluates_each_point_once() -> None:
    uncached, x_uncached = _baoab_evaluations(cache_size=0)
    cached, x_cached = _baoab_evaluations(cache_size=4)
    # B, A (SHAKE: x, two Newton iterates; RATTLE at x'), O, A (x', two iterates; RATTLE):
    # without the cache x and x' are evaluated again by SHAKE and by O's projection
    assert uncached == [9, 9, 9, 9]
    # with it only the distinct points: two Newton iterates and the new point per drift,
    # the step's starting point coming from the previous step's RATTLE
    assert cached == [7, 6, 6, 6]
    torch.testing.assert_close(x_cached, x_uncached, rtol=0, atol=0)


def test_an_in_place_change_of_x_is_never_served_from_the_cache() -> None:
    c = Counted()
    m = Implicit(c, n=3)
    x = Sphere().random_point(5, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    v = torch.ones_like(x)
    first = m.proj_tangent(x, v)
    again = m.proj_tangent(x, v)
    assert c.calls == 1 and torch.equal(first, again)
    with torch.no_grad():
        x.mul_(-1)  # another point of the sphere, same storage and tensor object
    moved = m.proj_tangent(x, v)
    assert c.calls == 2
    fresh = Implicit(lambda z: (z @ z - 1) / 2, n=3).proj_tangent(x.clone(), v)
    torch.testing.assert_close(moved, fresh, rtol=0, atol=0)
    torch.testing.assert_close(m.constraint(x), (x * x).sum(-1, keepdim=True).sub(1).div(2))


def test_the_cache_is_bypassed_while_autograd_records_x() -> None:
    m = Implicit(Counted(), n=3)
    x = Sphere().random_point(2, 3, dtype=torch.float64).requires_grad_()
    m.proj_tangent(x.detach(), torch.ones(2, 3, dtype=torch.float64))
    values = m.constraint(x)
    assert values.requires_grad
    (grad,) = torch.autograd.grad(values.sum(), x)
    torch.testing.assert_close(grad, x.detach())
