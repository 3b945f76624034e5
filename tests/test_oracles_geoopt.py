"""Outside oracle: geoopt's optimizers on geodyn manifolds follow geoopt's own manifolds.

The same geoopt optimizer (RiemannianSGD with momentum, RiemannianAdam) runs the same
least-squares problem twice, once on a geodyn manifold and once on geoopt's equivalent
manifold; in float64 the iterates agree to 1e-12 at every step.
"""

from __future__ import annotations

from collections.abc import Callable

import geoopt
import pytest
import torch

from geodyn import Product, Sphere, Stiefel

F64 = torch.float64
STEPS = 60

Factory = Callable[[list[torch.nn.Parameter]], torch.optim.Optimizer]
OPTIMIZERS: dict[str, Factory] = {
    "RiemannianSGD": lambda ps: geoopt.optim.RiemannianSGD(ps, lr=0.05, momentum=0.9),
    "RiemannianAdam": lambda ps: geoopt.optim.RiemannianAdam(ps, lr=0.02),
}

# name -> (geodyn manifold, geoopt manifold, point shape, tangent starting buffers)
PAIRS = {
    "Sphere": (Sphere(), geoopt.Sphere(), (5, 4), False),
    "EuclideanStiefel": (Stiefel("qr"), geoopt.EuclideanStiefel(), (3, 6, 2), False),
    # exact transport along expmap is only defined for tangent vectors: the first
    # gradient, which RiemannianSGD copies into its buffer, is made tangent
    "EuclideanStiefelExact": (Stiefel("exp"), geoopt.EuclideanStiefelExact(), (3, 6, 2), True),
    "ProductManifold": (
        Product((Sphere(), (3,)), (Stiefel(), (4, 2))),
        geoopt.ProductManifold((geoopt.Sphere(), 3), (geoopt.EuclideanStiefel(), (4, 2))),
        (4, 11),
        False,
    ),
}


def loss(x: torch.Tensor, target: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """sum w (x - target)^2: a least-squares problem with a different scale per entry."""
    return (weights * (x - target) ** 2).sum()


def run(manifold: geoopt.Manifold, optimizer: str, x0: torch.Tensor, tangent_start: bool,
        target: torch.Tensor, weights: torch.Tensor) -> list[torch.Tensor]:
    p = geoopt.ManifoldParameter(x0.clone(), manifold=manifold)
    opt = OPTIMIZERS[optimizer]([p])
    path = []
    for step in range(STEPS):
        opt.zero_grad()
        loss(p, target, weights).backward()
        if tangent_start and step == 0:
            with torch.no_grad():
                p.grad.copy_(manifold.proju(p, p.grad))
        opt.step()
        path.append(p.detach().clone())
    return path


@pytest.mark.parametrize("optimizer", list(OPTIMIZERS))
@pytest.mark.parametrize("pair", list(PAIRS))
def test_geoopt_optimizer_on_geodyn_manifold_equals_geoopt_manifold(
    pair: str, optimizer: str
) -> None:
    ours, theirs, shape, tangent_start = PAIRS[pair]
    g = torch.Generator().manual_seed(0)
    x0 = ours.random_point(*shape, dtype=F64, generator=g)
    target = torch.randn(shape, dtype=F64, generator=g)
    weights = torch.rand(shape, dtype=F64, generator=g) * 4 + 0.1
    assert bool(theirs.check_point_on_manifold(x0))
    path_ours = run(ours, optimizer, x0, tangent_start, target, weights)
    path_theirs = run(theirs, optimizer, x0, tangent_start, target, weights)
    assert float((path_ours[-1] - x0).abs().max()) > 0.05  # the problem moves the point
    for step, (a, b) in enumerate(zip(path_ours, path_theirs, strict=True)):
        err = float((a - b).abs().max())
        assert err <= 1e-12, f"step {step}: iterates differ by {err:.2e}"
