"""geoopt interop: geodyn manifolds train under geoopt's optimizers; geoopt points pass geodyn."""

import geoopt
import pytest
import torch

from geodyn.manifolds import (
    CircleLift,
    Euclidean,
    GeooptAdapter,
    LpSphere,
    NormBall,
    Oblique,
    Sphere,
    Stiefel,
    as_geodyn,
    default_atol,
)

F64 = torch.float64

CASES = [
    (Sphere(), (4, 5)),
    (Oblique(dim=-2), (5, 4)),
    (Stiefel(), (6, 3)),
    (Stiefel("cayley"), (3, 6)),
    (LpSphere(1.5), (4, 5)),
    (NormBall(0.5), (4, 5)),
    (CircleLift(0.2), (7, 2)),
]


@pytest.mark.parametrize("optimizer", [geoopt.optim.RiemannianSGD, geoopt.optim.RiemannianAdam])
@pytest.mark.parametrize(("manifold", "shape"), CASES)
def test_geoopt_optimizers_train_on_geodyn_manifolds(manifold, shape, optimizer):
    g = torch.Generator().manual_seed(0)
    target = torch.randn(shape, dtype=F64, generator=g)
    param = geoopt.ManifoldParameter(
        manifold.random_point(*shape, dtype=F64, generator=g), manifold=manifold
    )
    opt = optimizer([param], lr=0.05)

    def loss_fn():
        return (param - target).square().sum()

    start = float(loss_fn())
    for _ in range(30):
        opt.zero_grad()
        loss_fn().backward()
        opt.step()
        assert float(manifold.residual(param.data)) <= default_atol(F64)
    assert float(loss_fn()) < start


@pytest.mark.parametrize(
    ("theirs", "shape"),
    [(geoopt.Stiefel(), (6, 3)), (geoopt.CanonicalStiefel(), (2, 5, 5)), (geoopt.Sphere(), (4, 3))],
)
def test_geoopt_points_pass_geodyn_check_point(theirs, shape):
    ours = as_geodyn(theirs)
    x = theirs.random(shape, dtype=F64)
    ok, reason = ours.check_point(x)
    assert ok, reason
    off = x + 0.1
    assert not ours.check_point(off)[0]


def test_as_geodyn_maps_geoopt_manifolds():
    assert as_geodyn(geoopt.Euclidean()) == Euclidean()
    assert as_geodyn(geoopt.Sphere()) == Sphere()
    assert as_geodyn(geoopt.Stiefel()) == Stiefel()
    assert as_geodyn(geoopt.CanonicalStiefel()) == Stiefel()
    ours = Stiefel("polar")
    assert as_geodyn(ours) is ours
    subspace = geoopt.Sphere(intersection=torch.eye(4, 2, dtype=F64))
    assert isinstance(as_geodyn(subspace), GeooptAdapter)


def test_adapter_forwards_and_shake_is_a_projection():
    theirs = geoopt.PoincareBall()
    m = as_geodyn(theirs)
    assert isinstance(m, GeooptAdapter) and m.ndim == 1
    g = torch.Generator().manual_seed(1)
    x = m.random_point(3, 4, dtype=F64, generator=g)
    assert m.check_point(x)[0]
    u = torch.randn(3, 4, dtype=F64, generator=g)
    torch.testing.assert_close(m.egrad2rgrad(x, u), theirs.egrad2rgrad(x, u))
    torch.testing.assert_close(m.retract(x, 0.1 * u), theirs.retr(x, 0.1 * u))
    far = 10 * u
    torch.testing.assert_close(m.shake(x, far), theirs.projx(far))
    assert m.constraint(far).shape == (3, 4)
    assert float(m.residual(m.shake(x, far))) < 1e-12


def _least_squares(param, optimizer, target, steps):
    for _ in range(steps):
        optimizer.zero_grad()
        ((param - target) ** 2).sum().backward()
        optimizer.step()
    return param.detach()


@pytest.mark.parametrize("amsgrad", [False, True])
def test_riemannian_adam_on_a_product_matches_geoopts_product_manifold(amsgrad):
    # one second moment per factor, as geoopt's ProductManifold keeps them
    from geodyn.manifolds import Product

    ours = Product((Sphere(), (3,)), (Stiefel(), (4, 2)))
    theirs = geoopt.ProductManifold((geoopt.Sphere(), 3), (geoopt.EuclideanStiefel(), (4, 2)))
    g = torch.Generator().manual_seed(0)
    x0 = ours.random_point(5, 11, dtype=F64, generator=g)
    target = torch.randn(5, 11, dtype=F64, generator=g)
    runs = []
    for manifold in (ours, theirs):
        param = geoopt.ManifoldParameter(x0.clone(), manifold=manifold)
        opt = geoopt.optim.RiemannianAdam([param], lr=0.05, amsgrad=amsgrad)
        runs.append(_least_squares(param, opt, target, 300))
    torch.testing.assert_close(runs[0], runs[1], rtol=0, atol=1e-10)


def test_product_verbs_broadcast_their_arguments_like_geoopt():
    from geodyn.manifolds import Product

    ours = Product((Sphere(), (3,)), (Euclidean(), (1,)))
    theirs = geoopt.ProductManifold((geoopt.Sphere(), 3), (geoopt.Euclidean(ndim=1), 1))
    g = torch.Generator().manual_seed(1)
    x = ours.project(torch.randn(4, 4, dtype=F64, generator=g))
    v = torch.randn(4, dtype=F64, generator=g)
    torch.testing.assert_close(ours.proj_tangent(x, v), theirs.proju(x, v), rtol=0, atol=1e-14)
    torch.testing.assert_close(
        ours.component_inner(x, v), theirs.component_inner(x, v), rtol=0, atol=1e-14
    )
    torch.testing.assert_close(ours.inner(x, v), theirs.inner(x, v), rtol=0, atol=1e-14)


def test_capabilities_are_declared_and_products_compute_them():
    from geodyn.manifolds import Product

    spheres = Product((Sphere(), (3,)), (Oblique(dim=-2), (4, 2)), (Stiefel(), (3, 2)))
    assert spheres.linear_transport  # gets the folded fast paths
    assert not NormBall().linear_transport and not CircleLift(0.3).linear_transport
    assert not GeooptAdapter(geoopt.Sphere()).linear_transport
    mixed = Product((Sphere(), (3,)), (NormBall(), (2,)))
    assert mixed.is_inequality and not mixed.linear_transport
    x = mixed.random_point(4, 5, dtype=F64)
    assert mixed.inequality_mask(x).tolist() == [[False, True]] * 4
    assert CircleLift(0.3).lifted and CircleLift(0.3).bound == 0.3 and not Sphere().lifted
    assert Oblique(dim=-2).coupled_dims == (-2,) and Stiefel().coupled_dims == (-2, -1)
