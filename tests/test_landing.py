"""Landing: no retraction, iterates within eps of M, the residual down to rounding, and the
same optimum as Riemannian SGD (orthogonal Procrustes; a user's implicit sphere)."""

from __future__ import annotations

import pytest
import torch

import geodyn.functional as F
from geodyn import Implicit, Landing, RiemannianSGD
from geodyn.manifolds import Stiefel

DT = torch.float64


class _NoRetraction(Stiefel):
    """Stiefel whose retraction, projection and SHAKE must never run."""

    def retract(self, x, v):
        raise AssertionError("landing called retract")

    def project(self, x):
        raise AssertionError("landing called project")

    def shake(self, x, y):
        raise AssertionError("landing called shake")


def _polar(m):
    u, _, vh = torch.linalg.svd(m, full_matrices=False)
    return u @ vh


def _run(opt, param, grad_fn, steps, record=None):
    for _ in range(steps):
        param.grad = grad_fn(param.detach())
        opt.step()
        if record is not None:
            record.append(float(Stiefel().residual(param.detach())))


def test_procrustes_optimum_without_retraction_equals_rsgd():
    gen = torch.Generator().manual_seed(0)
    target = torch.randn(8, 3, dtype=DT, generator=gen)  # min |X - M|^2 / 2: X* = polar(M)
    x0 = Stiefel().random_point(8, 3, dtype=DT, generator=gen)
    landed = torch.nn.Parameter(x0.clone())
    residuals: list[float] = []
    opt = Landing([landed], lr=0.2, attraction=1.0, eps=0.1, manifold=_NoRetraction())
    _run(opt, landed, lambda x: x - target, 400, residuals)
    rsgd = torch.nn.Parameter(x0.clone())
    _run(RiemannianSGD([rsgd], lr=0.2, manifold=Stiefel()), rsgd, lambda x: x - target, 400)
    optimum = _polar(target)
    assert float((landed.detach() - optimum).abs().max()) < 1e-12
    assert float((rsgd.detach() - optimum).abs().max()) < 1e-12
    assert max(residuals) <= 0.1  # within eps all along
    assert residuals[-1] < 1e-14  # to the rounding floor


def test_safe_step_keeps_iterates_within_eps():
    gen = torch.Generator().manual_seed(1)
    target = 30 * torch.randn(4, 6, 3, dtype=DT, generator=gen)
    x0 = Stiefel().random_point(4, 6, 3, dtype=DT, generator=gen)
    eps = 0.02
    # the bound binds: a full step from the start leaves the eps-tube
    field = F.landing_field(Stiefel(), x0, x0 - target, attraction=0.5)
    assert float(Stiefel().residual(x0 - field)) > eps
    x = torch.nn.Parameter(x0.clone())
    residuals: list[float] = []
    opt = Landing([x], lr=1.0, attraction=0.5, eps=eps, manifold=Stiefel())
    _run(opt, x, lambda z: z - target, 50, residuals)
    assert max(residuals) <= eps
    assert float((x.detach() - x0).abs().max()) > 0.1  # and it moved


def test_traced_ladder_equals_the_eager_halvings():
    gen = torch.Generator().manual_seed(2)
    x = Stiefel().random_point(5, 6, 3, dtype=DT, generator=gen)
    g = 20 * torch.randn(x.shape, dtype=DT, generator=gen)
    eager = F.landing_step(Stiefel(), x, g, lr=1.0, eps=0.05)
    traced = torch.func.vmap(lambda a, b: F.landing_step(Stiefel(), a, b, lr=1.0, eps=0.05))(x, g)
    torch.testing.assert_close(traced, eager, rtol=1e-12, atol=1e-12)
    assert float(Stiefel().residual(eager)) <= 0.05


def test_landing_on_an_implicit_sphere_reaches_the_minimiser():
    sphere = Implicit(lambda z: (z * z).sum() - 1.0, n=3, name="unit sphere")
    a = torch.tensor([1.0, -2.0, 0.5], dtype=DT)
    x = torch.nn.Parameter(torch.tensor([[0.6, 0.8, 0.1]], dtype=DT))
    opt = Landing([x], lr=0.1, attraction=1.0, eps=0.3, manifold=sphere)
    for _ in range(600):
        x.grad = a.expand_as(x).clone()  # minimise <a, x>: x* = -a / |a|
        opt.step()
    assert float((x.detach() + a / a.norm()).abs().max()) < 1e-12
    assert float(sphere.residual(x.detach())) < 1e-14


def test_bad_hyperparameters():
    w = torch.nn.Parameter(torch.eye(3))
    for kw in (dict(attraction=0.0), dict(eps=-1.0), dict(halvings=-1), dict(lr=0.0)):
        with pytest.raises(ValueError):
            Landing([w], **{"lr": 0.1, **kw}, manifold=Stiefel())
