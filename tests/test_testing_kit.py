"""The law suite can fail: deliberately broken manifolds are rejected, law by law."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from geodyn.manifolds import NormBall, Sphere
from geodyn.testing import (
    SYMMETRIES,
    batch_shapes,
    check_manifold,
    constraint_jacobian,
    points,
    step_sizes,
    symmetries_of,
    tangent_vectors,
)

F64 = torch.float64
FEW = 25  # examples per law: each broken manifold fails on almost every example


class ForgetfulSphere(Sphere):
    """proj_tangent forgets to divide by |x|^2 (invisible on the unit sphere only)."""

    def proj_tangent(self, x, v):
        return v - x * (x * v).sum(-1, keepdim=True)


class ZerothOrderRetraction(Sphere):
    """R_x(v) = r (x + 2 v) / |x + 2 v|: lands on M but dR_x(0) = 2 id."""

    def retract(self, x, v):
        return super().retract(x, 2 * v)


class ShakeOffManifold(Sphere):
    """SHAKE returns y unchanged: the step is never pulled back onto the sphere."""

    def shake(self, x, y):
        return y


class ShakeAlongNewNormal(Sphere):
    """SHAKE by radial projection of y: on M, but the multiplier is along y, not x."""

    def shake(self, x, y):
        return self.project(y)


class DriftingProjection(Sphere):
    """project lands on M but mixes coordinates, so project(project(y)) != project(y)."""

    def project(self, x):
        return super().project(x + 0.3 * x.roll(1, dims=-1))


class LeakyRattle(Sphere):
    """rattle keeps half of the normal component of the momentum."""

    def rattle(self, x, p):
        return 0.5 * (p + self.proj_tangent(x, p))


class StickyBall(NormBall):
    """At the boundary, proj_tangent also removes inward velocities (a sticky wall)."""

    def proj_tangent(self, x, v):
        normal = x * ((x * v).sum(-1, keepdim=True) / (x * x).sum(-1, keepdim=True))
        return torch.where(self.on_boundary(x), v - normal, v)


class AnisotropicRetraction(Sphere):
    """Declares rotation symmetry, but its (valid, first-order) retraction favours axis 0."""

    def retract(self, x, v):
        bend = torch.zeros_like(v)
        bend[..., 0] = (v * v).sum(-1)
        return super().retract(x, v + bend)


class Exploding(Sphere):
    """retract raises on every call."""

    def retract(self, x, v):
        raise RuntimeError("no retraction here")


@pytest.mark.parametrize(
    ("manifold", "law"),
    [
        (ForgetfulSphere(2.0), "proj_tangent"),
        (ZerothOrderRetraction(), "retract is first-order"),
        (ShakeOffManifold(), "shake lands on M"),
        (ShakeAlongNewNormal(), "shake moves along the normal space"),
        (DriftingProjection(), "project is idempotent"),
        (LeakyRattle(), "rattle is tangent"),
        (StickyBall(), "proj_tangent is the cone projection"),
        (AnisotropicRetraction(), "retract is equivariant under orthogonal_last"),
        (Exploding(), "retract"),
    ],
    ids=lambda p: type(p).__name__ if not isinstance(p, str) else "",
)
def test_broken_manifold_is_rejected(manifold, law):
    with pytest.raises(AssertionError, match=f"law '{law}") as info:
        check_manifold(manifold, (3, 4), F64, max_examples=FEW)
    message = str(info.value)
    assert repr(manifold) in message and "(3, 4)" in message and "float64" in message


def test_forgetful_sphere_is_invisible_on_the_unit_sphere():
    # the law is about the formula, not a tolerance: on |x| = 1 the bug changes nothing
    report = check_manifold(ForgetfulSphere(1.0), (3,), F64, max_examples=FEW)
    assert report["worst"]["proj_tangent Jacobian"] < report["tolerance"]["identity"]


def test_unknown_symmetry_is_a_value_error():
    with pytest.raises(ValueError, match="unknown"):
        check_manifold(Sphere(), (3,), symmetries=("rotation",), max_examples=1)
    bad = Sphere()
    bad.symmetries = ("reflections",)
    with pytest.raises(ValueError, match="unknown symmetries"):
        symmetries_of(bad)
    assert set(symmetries_of(Sphere())) <= set(SYMMETRIES)


def test_constraint_jacobian_matches_the_sphere_normal():
    x = Sphere(2.0).random_point(5, 3, dtype=F64, generator=torch.Generator().manual_seed(0))
    jac = constraint_jacobian(Sphere(2.0), x)
    # c = (|x|^2 - r^2) / (2 r^2)  =>  J = x^T / r^2
    torch.testing.assert_close(jac, (x / 4.0).unsqueeze(-2), rtol=0, atol=1e-15)


@settings(max_examples=30)
@given(data=st.data(), batch=batch_shapes(), step=step_sizes(-6, -2))
def test_strategies_reproduce_and_respect_the_manifold(data, batch, step):
    sphere = Sphere(1.5)
    shape = (*batch, 4)
    x = data.draw(points(sphere, shape, F64))
    assert x.shape == shape and x.dtype == F64
    assert float(sphere.residual(x)) < 1e-12
    v = data.draw(tangent_vectors(sphere, x, relative_norm=step))
    torch.testing.assert_close(sphere.proj_tangent(x, v), v, rtol=0, atol=1e-13)
    torch.testing.assert_close(v.norm(dim=-1), torch.full(batch, 1.5 * step, dtype=F64))
    y = data.draw(points(sphere, shape, torch.float32, perturbation=0.5))
    assert y.dtype == torch.float32
    assert 2.0**-6 <= step <= 2.0**-2
    assert float(sphere.residual(y.double())) > 0  # pushed off M


def test_inequality_points_reach_interior_and_boundary():
    ball = NormBall()

    @settings(max_examples=10)
    @given(
        inner=points(ball, (3,), F64, where="interior"),
        edge=points(ball, (3,), F64, where="boundary"),
    )
    def run(inner, edge):
        assert float(inner.norm()) < 0.5
        assert abs(float(edge.norm()) - 1.0) < 1e-12

    run()


def test_a_product_with_an_inequality_factor_passes_the_laws():
    # the mask says which constraints are inequalities: the sphere's stay equalities
    from geodyn.manifolds import Product

    product = Product((Sphere(), (3,)), (NormBall(), (2,)))
    report = check_manifold(product, (6, 5), max_examples=30)
    assert report["points"]["boundary"] > 0 and report["points"]["interior"] > 0
