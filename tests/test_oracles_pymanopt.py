"""Outside oracle: pymanopt's numpy manifolds agree with geodyn's to 1e-12 in float64.

Compared: the tangent projection, the retractions (QR and polar on Stiefel, the
normalisation on spheres and oblique matrices), the exponential maps, and the projection
onto M, which pymanopt writes as a retraction from the origin: R_0(y) = normalise(y)
on spheres, the polar factor of y on Stiefel.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from pymanopt.manifolds import Oblique as PymanoptOblique
from pymanopt.manifolds import Sphere as PymanoptSphere
from pymanopt.manifolds import Stiefel as PymanoptStiefel

from geodyn import Oblique, Sphere, Stiefel

F64 = torch.float64
TOL = 1e-12


def close(ours: torch.Tensor, theirs: np.ndarray) -> None:
    np.testing.assert_allclose(ours.numpy(), theirs, rtol=0, atol=TOL)


def data(shape: tuple[int, ...], seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(shape, dtype=F64, generator=g), torch.randn(shape, dtype=F64, generator=g)


@pytest.mark.parametrize("retraction", ["qr", "polar"])
@pytest.mark.parametrize(("n", "p"), [(6, 3), (4, 4), (5, 1)])
def test_stiefel(n: int, p: int, retraction: str) -> None:
    k = 3
    ours = Stiefel(retraction)
    theirs = PymanoptStiefel(n, p, k=k, retraction=retraction)
    y, w = data((k, n, p), n + p)
    x = ours.project(y)
    polar = PymanoptStiefel(n, p, k=k, retraction="polar")
    close(x, polar.retraction(np.zeros((k, n, p)), y.numpy()))
    v = ours.proj_tangent(x, w)
    close(v, theirs.projection(x.numpy(), w.numpy()))
    close(ours.retract(x, 0.3 * v), theirs.retraction(x.numpy(), 0.3 * v.numpy()))
    close(Stiefel("exp").expmap(x, 0.3 * v), theirs.exp(x.numpy(), 0.3 * v.numpy()))


@pytest.mark.parametrize("n", [2, 5])
def test_sphere(n: int) -> None:
    ours, theirs = Sphere(), PymanoptSphere(n)
    y, w = data((4, n), n)
    x = ours.project(y)
    v = ours.proj_tangent(x, w)
    for i in range(4):  # pymanopt's Sphere(n) holds one vector
        xi, vi = x[i].numpy(), v[i].numpy()
        close(x[i], theirs.retraction(np.zeros(n), y[i].numpy()))
        close(v[i], theirs.projection(xi, w[i].numpy()))
        close(ours.retract(x[i], 0.7 * v[i]), theirs.retraction(xi, 0.7 * vi))
        close(ours.expmap(x[i], 0.7 * v[i]), theirs.exp(xi, 0.7 * vi))


@pytest.mark.parametrize(("m", "n"), [(3, 5), (1, 4)])
def test_oblique_columns(m: int, n: int) -> None:
    # pymanopt's Oblique(m, n): m x n matrices with unit-norm columns
    ours, theirs = Oblique(dim=-2), PymanoptOblique(m, n)
    y, w = data((m, n), m * n)
    x = ours.project(y)
    v = ours.proj_tangent(x, w)
    xn, vn = x.numpy(), v.numpy()
    close(x, theirs.retraction(np.zeros((m, n)), y.numpy()))
    close(v, theirs.projection(xn, w.numpy()))
    close(ours.retract(x, 0.7 * v), theirs.retraction(xn, 0.7 * vn))
    close(ours.expmap(x, 0.7 * v), theirs.exp(xn, 0.7 * vn))
