"""geodyn.constraints.Implicit against the built-in Sphere and Stiefel, and its variants."""

from __future__ import annotations

import math

import numpy as np
import pytest
import sympy
import torch

from geodyn.constraints import Implicit
from geodyn.manifolds import ConvergenceError, Sphere, Stiefel

F64 = torch.float64


def sphere_c(x):
    return (x @ x - 1) / 2


def stiefel_c(x):
    gram = x.mT @ x - torch.eye(x.shape[-1], dtype=x.dtype, device=x.device)
    i, j = torch.triu_indices(x.shape[-1], x.shape[-1], device=x.device)
    return gram[i, j]


def torus_c(x, big=2.0, small=0.5):
    return (x[:2].norm() - big) ** 2 + x[2] ** 2 - small**2


def sympy_sphere(n):
    xs = sympy.symbols(f"x0:{n}")
    return Implicit.from_sympy([(sum(s**2 for s in xs) - 1) / 2], xs)


def sympy_stiefel(n, p):
    sym = sympy.Matrix(n, p, lambda i, j: sympy.Symbol(f"x{i}_{j}"))
    gram = sym.T * sym - sympy.eye(p)
    return Implicit.from_sympy([gram[i, j] for i in range(p) for j in range(i, p)], sym)


def sympy_torus(big=2.0, small=0.5):
    x, y, z = sympy.symbols("x y z")
    return Implicit.from_sympy((sympy.sqrt(x**2 + y**2) - big) ** 2 + z**2 - small**2, [x, y, z])


def gen(seed):
    return torch.Generator().manual_seed(seed)


SPHERES = {
    "autograd": lambda n: Implicit(sphere_c, n=n),
    "batched": lambda n: Implicit(lambda x: (x * x).sum(-1) / 2 - 0.5, n=n, batched=True),
    "user jacobian": lambda n: Implicit(sphere_c, n=n, jacobian=lambda x: x.unsqueeze(0)),
    "sympy": sympy_sphere,
}


@pytest.mark.parametrize("kind", SPHERES)
@pytest.mark.parametrize("shape", [(7, 5), (2, 3, 4), (2,)])
def test_implicit_sphere_agrees_with_sphere(kind, shape):
    implicit, builtin = SPHERES[kind](shape[-1]), Sphere()
    g = gen(0)
    x = builtin.random_point(*shape, dtype=F64, generator=g)
    far = 3 * torch.randn(shape, dtype=F64, generator=g)
    v = torch.randn(shape, dtype=F64, generator=g)
    y = x + 0.05 * v
    torch.testing.assert_close(implicit.project(far), builtin.project(far), rtol=0, atol=1e-10)
    torch.testing.assert_close(
        implicit.proj_tangent(x, v), builtin.proj_tangent(x, v), rtol=0, atol=1e-10
    )
    torch.testing.assert_close(implicit.shake(x, y), builtin.shake(x, y), rtol=0, atol=1e-10)
    torch.testing.assert_close(implicit.rattle(x, v), builtin.rattle(x, v), rtol=0, atol=1e-10)
    assert implicit.constraint(far).shape == (*shape[:-1], 1)


STIEFELS = {
    "autograd": lambda n, p: Implicit(stiefel_c, point_shape=(n, p)),
    "sympy": sympy_stiefel,
}


@pytest.mark.parametrize("kind", STIEFELS)
@pytest.mark.parametrize("shape", [(4, 5, 3), (3, 3), (2, 2, 4, 2)])
def test_implicit_stiefel_agrees_with_stiefel(kind, shape):
    implicit, builtin = STIEFELS[kind](*shape[-2:]), Stiefel()
    g = gen(1)
    x = builtin.random_point(*shape, dtype=F64, generator=g)
    far = torch.randn(shape, dtype=F64, generator=g)
    v = torch.randn(shape, dtype=F64, generator=g)
    y = x + 0.1 * v
    torch.testing.assert_close(implicit.project(far), builtin.project(far), rtol=0, atol=1e-10)
    torch.testing.assert_close(
        implicit.proj_tangent(x, v), builtin.proj_tangent(x, v), rtol=0, atol=1e-10
    )
    torch.testing.assert_close(implicit.shake(x, y), builtin.shake(x, y), rtol=0, atol=1e-10)
    p = shape[-1]
    assert implicit.constraint(far).shape == (*shape[:-2], p * (p + 1) // 2)


def test_sympy_jacobian_equals_autograd_jacobian():
    compiled, traced = sympy_torus(), Implicit(torus_c, n=3)
    x = 2 * torch.randn(50, 3, dtype=F64, generator=gen(2))
    c1, j1 = compiled._values_and_jacobian(x)
    c2, j2 = traced._values_and_jacobian(x)
    torch.testing.assert_close(c1, c2, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(j1, j2, rtol=1e-12, atol=1e-12)


def test_sympy_constant_jacobian_entries_broadcast():
    """A linear constraint has a constant Jacobian: lambdify returns numbers, not tensors."""
    xs = sympy.symbols("a b c")
    plane = Implicit.from_sympy([xs[0] + 2 * xs[1] - xs[2] - 1], xs)
    x = plane.random_point(4, 2, 3, dtype=torch.float32, generator=gen(3))
    assert x.dtype == torch.float32 and x.shape == (4, 2, 3)
    normal = torch.tensor([1.0, 2.0, -1.0])
    assert float((x @ normal - 1).abs().max()) < 1e-5
    v = plane.proj_tangent(x, torch.ones_like(x))
    assert float((v @ normal).abs().max()) < 1e-5


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_dtype_and_shape_preserved(dtype):
    m = Implicit(torus_c, n=3)
    x = m.random_point(2, 3, 3, dtype=dtype, generator=gen(4))
    v = m.random_tangent(x, generator=gen(5))
    for out in (x, v, m.retract(x, 0.1 * v), m.shake(x, x + 0.1 * v), m.project(x + 0.1)):
        assert out.dtype == dtype and out.shape == (2, 3, 3)
    tol = 1e-5 if dtype == torch.float32 else 1e-10
    assert float(m.residual(x)) <= tol


def test_project_fixes_points_of_m_and_retract_is_identity_at_zero():
    m = Implicit(torus_c, n=3)
    x = m.random_point(20, 3, dtype=F64, generator=gen(6))
    torch.testing.assert_close(m.project(x), x, rtol=0, atol=1e-14)
    torch.testing.assert_close(m.retract(x, torch.zeros_like(x)), x, rtol=0, atol=1e-14)


def test_shake_newton_converges_quadratically_to_the_multiplier_nearest_zero():
    """On the sphere SHAKE has the closed form of Sphere.shake; Newton needs few iterations."""
    m = Implicit(sphere_c, n=6, shake_maxiter=4)
    g = gen(7)
    x = Sphere().random_point(100, 6, dtype=F64, generator=g)
    y = x + 0.1 * torch.randn(100, 6, dtype=F64, generator=g)
    torch.testing.assert_close(m.shake(x, y), Sphere().shake(x, y), rtol=0, atol=1e-13)


def test_shake_that_cannot_converge_raises_with_residual():
    m = Implicit(sphere_c, n=3, shake_maxiter=2)
    x = torch.tensor([[1.0, 0.0, 0.0]], dtype=F64)
    y = torch.tensor([[1.0, 3.0, 0.0]], dtype=F64)  # no point y + lambda x on the sphere
    with pytest.raises(ConvergenceError, match="reduce the step size") as info:
        m.shake(x, y)
    assert info.value.residual > 1e-10
    assert info.value.iterations == 2


def test_project_that_cannot_converge_raises_with_residual():
    m = Implicit(torus_c, n=3, project_maxiter=1)
    x = torch.tensor([[5.0, 4.0, 3.0]], dtype=F64)
    with pytest.raises(ConvergenceError, match="project_maxiter") as info:
        m.project(x)
    assert info.value.residual > 1e-10 and info.value.iterations == 1


def test_random_point_is_seeded():
    m = Implicit(torus_c, n=3)
    a = m.random_point(5, 3, dtype=F64, generator=gen(8))
    b = m.random_point(5, 3, dtype=F64, generator=gen(8))
    assert torch.equal(a, b)


def test_identity_and_repr():
    a = Implicit(torus_c, n=3, name="torus")
    assert a == Implicit(torus_c, point_shape=(3,), name="torus")
    assert a != Implicit(torus_c, n=3, shake_tol=1e-6)
    assert hash(a) == hash(Implicit(torus_c, n=3, name="torus"))
    assert sympy_torus() == sympy_torus()
    assert repr(a) == "Implicit('torus', point_shape=(3,))"
    assert a.ndim == 1 and Implicit(stiefel_c, point_shape=(4, 2)).ndim == 2


def test_geoopt_verbs_forward():
    m = Implicit(sphere_c, n=4)
    x = m.random_point(3, 4, dtype=F64, generator=gen(9))
    u = torch.randn(3, 4, dtype=F64, generator=gen(10))
    torch.testing.assert_close(m.proju(x, u), m.proj_tangent(x, u))
    torch.testing.assert_close(m.egrad2rgrad(x, u), m.proj_tangent(x, u))
    ok, reason = m.check_point_on_manifold(x, explain=True)
    assert ok and reason is None
    assert math.isclose(float(m.inner(x, x).sum()), 3.0, rel_tol=1e-12)


@pytest.mark.parametrize("batched", [False, True])
def test_empty_batch(batched):
    c = (lambda x: (x * x).sum(-1) / 2 - 0.5) if batched else sphere_c
    m = Implicit(c, n=3, batched=batched)
    x = torch.zeros(0, 3, dtype=F64)
    assert m.constraint(x).shape == (0, 1)
    for out in (m.proj_tangent(x, x), m.project(x), m.shake(x, x), m.random_point(0, 3)):
        assert out.shape == (0, 3)


def ellipsoid_nearest(y, axes):
    """The nearest point of the ellipsoid sum (z_i / a_i)^2 = 1 to y: z_i = a_i^2 y_i / (a_i^2 + t),
    with t > -min a_i^2 the root of sum (a_i y_i / (a_i^2 + t))^2 = 1 (Lagrange)."""
    from scipy.optimize import brentq

    a = axes.numpy()

    def nearest(point):
        def gap(t):
            return float(((a * point / (a**2 + t)) ** 2).sum() - 1)

        t = brentq(gap, -a.min() ** 2 * (1 - 1e-12), 1e6, xtol=1e-15)
        return a**2 * point / (a**2 + t)

    return torch.from_numpy(np.array([nearest(point) for point in y.numpy()]))


def test_project_is_the_nearest_point_of_an_ellipsoid_near_it_and_never_farther_than_the_foot():
    axes = torch.tensor([1.0, 2.0, 3.0], dtype=F64)
    m = Implicit(lambda x: ((x / axes) ** 2).sum() - 1, n=3)
    g = gen(7)
    on = m.random_point(100, 3, dtype=F64, generator=g)
    radial = torch.randn(100, 1, dtype=F64, generator=g)
    near = on * (1 + 0.1 * radial)  # outside and inside, distance x curvature < 1
    torch.testing.assert_close(m.project(near), ellipsoid_nearest(near, axes), rtol=0, atol=1e-8)
    far = on * (1 + 2 * radial.abs())  # beyond the convergence radius for some points
    p, foot = m.project(far), m._foot(far)
    assert float(m.constraint(p).abs().max()) <= 1e-10
    assert bool(((p - far).norm(dim=-1) <= (foot - far).norm(dim=-1)).all())
    assert float((p - far).norm(dim=-1).sum()) < float((foot - far).norm(dim=-1).sum())
