"""geodyn.functional: the pure steps equal the optimizer classes, vmap over independent
problems, and compile with torch.compile(fullgraph=True) on CPU."""

from __future__ import annotations

import pytest
import torch
import torch._dynamo

import geodyn.functional as F
from geodyn.integrators import Overdamped, RiemannianSGD, Splitting
from geodyn.manifolds import Euclidean, Sphere, Stiefel

DT = torch.float64


def _target(shape, seed=0):
    return torch.randn(shape, dtype=DT, generator=torch.Generator().manual_seed(seed))


def _grad(x, t):
    return (x - t) + 0.4 * x**3  # gradient of |x - t|^2 / 2 + 0.1 |x|^4


def _run_optimizer(opt, param, t, n):
    out = []
    for _ in range(n):
        opt.zero_grad()
        param.grad = _grad(param.detach(), t)
        opt.step()
        out.append(param.detach().clone())
    return out


@pytest.mark.parametrize(
    ("manifold", "kw"),
    [
        (Sphere(), dict(momentum=0.9)),  # folded linear-transport path
        (Sphere(), dict(momentum=0.9, nesterov=True, weight_decay=0.1)),
        (Stiefel("polar"), dict(momentum=0.5, dampening=0.1)),
        (Stiefel(), dict()),
        (Euclidean(), dict(momentum=0.9, nesterov=True)),
    ],
)
def test_rsgd_step_equals_riemannian_sgd(manifold, kw):
    x0 = manifold.random_point(4, 3, dtype=DT, generator=torch.Generator().manual_seed(1))
    t = _target(x0.shape)
    param = torch.nn.Parameter(x0.clone())
    ref = _run_optimizer(RiemannianSGD([param], lr=0.05, manifold=manifold, **kw), param, t, 6)
    x, buf = x0, None
    for expected in ref:
        x, buf = F.rsgd_step(manifold, x, _grad(x, t), buf, lr=0.05, **kw)
        torch.testing.assert_close(x, expected, rtol=1e-13, atol=1e-13)


def test_baoab_of_sub_steps_equals_splitting():
    manifold = Sphere()
    x0 = manifold.random_point(3, 4, dtype=DT, generator=torch.Generator().manual_seed(2))
    t = _target(x0.shape)
    h, gamma, steps = 0.05, 2.0, 5
    param = torch.nn.Parameter(x0.clone())
    opt = Splitting([param], lr=h, gamma=gamma, tau=0.0, scheme="BAOAB", manifold=manifold)
    ref = _run_optimizer(opt, param, t, steps)
    x, p = x0, torch.zeros_like(x0)
    for expected in ref:
        p = F.kick(manifold, x, p, _grad(x, t), h / 2)
        x, p = F.drift(manifold, x, p, h / 2)
        p = F.thermostat(manifold, x, p, None, h=h, gamma=gamma, tau=0.0)
        x, p = F.drift(manifold, x, p, h / 2)
        p = F.kick(manifold, x, p, _grad(x, t), h / 2)
        torch.testing.assert_close(x, expected, rtol=1e-12, atol=1e-12)
    param.grad = _grad(param.detach(), t)
    opt.finalize()
    torch.testing.assert_close(opt.state[param]["momentum"], p, rtol=1e-12, atol=1e-12)


def test_overdamped_step_equals_overdamped_with_the_same_noise():
    manifold = Sphere()
    x0 = manifold.random_point(3, 4, dtype=DT, generator=torch.Generator().manual_seed(3))
    t = _target(x0.shape)
    param = torch.nn.Parameter(x0.clone())
    opt = Overdamped([param], lr=0.01, tau=0.5, weight_decay=0.1, manifold=manifold, seed=7)
    ref = _run_optimizer(opt, param, t, 4)
    noise = torch.Generator().manual_seed(7)  # the optimizer's generator, replayed
    x = x0
    for expected in ref:
        xi = torch.randn(x.shape, dtype=DT, generator=noise)
        x = F.overdamped_step(manifold, x, _grad(x, t), xi, h=0.01, tau=0.5, weight_decay=0.1)
        torch.testing.assert_close(x, expected, rtol=1e-13, atol=1e-13)


def test_thermostat_is_the_ornstein_uhlenbeck_step():
    manifold = Sphere()
    x = manifold.random_point(6, 3, dtype=DT)
    p = manifold.random_tangent(x)
    xi = torch.randn(x.shape, dtype=DT)
    out = F.thermostat(manifold, x, p, xi, h=0.1, gamma=3.0, tau=2.0)
    c = torch.exp(torch.tensor(-0.3, dtype=DT))
    expected = c * p + torch.sqrt((1 - c**2) * 2.0) * manifold.proj_tangent(x, xi)
    torch.testing.assert_close(out, expected)
    with pytest.raises(ValueError, match="noise"):
        F.thermostat(manifold, x, p, None, h=0.1, gamma=1.0, tau=1.0)


# ---------------------------------------------------------------- vmap and compile
SPHERE = Sphere()
NS = Stiefel("newton-schulz")


def _sphere_args():
    gen = torch.Generator().manual_seed(4)
    x = SPHERE.random_point(5, 2, 3, generator=gen)  # 5 independent problems of 2 points
    g = torch.randn(x.shape, generator=gen)
    return x, g


def _matrix_args():
    gen = torch.Generator().manual_seed(5)
    x = NS.random_point(5, 4, 3, generator=gen)  # 5 independent 4 x 3 problems
    g = torch.randn(x.shape, generator=gen)
    return x, g


# each step with its point and gradient; msign in float32 (dtype=None) so that vmapped
# and looped products round alike
STEPS = {
    "rsgd_step": (lambda x, g: F.rsgd_step(SPHERE, x, g, g, lr=0.1, momentum=0.9)[0], _sphere_args),
    "rsgd_step-nesterov": (
        lambda x, g: F.rsgd_step(SPHERE, x, g, g, lr=0.1, momentum=0.9, nesterov=True)[0],
        _sphere_args,
    ),
    "kick": (lambda x, g: F.kick(SPHERE, x, SPHERE.proj_tangent(x, g), g, 0.1), _sphere_args),
    "drift": (lambda x, g: F.drift(SPHERE, x, SPHERE.proj_tangent(x, g), 0.1)[0], _sphere_args),
    "thermostat": (
        lambda x, g: F.thermostat(
            SPHERE, x, SPHERE.proj_tangent(x, g), g, h=0.1, gamma=1.0, tau=0.5
        ),
        _sphere_args,
    ),
    "overdamped_step": (
        lambda x, g: F.overdamped_step(SPHERE, x, g, g, h=0.01, tau=1.0), _sphere_args
    ),
    "landing_step": (lambda x, g: F.landing_step(SPHERE, x, g, lr=0.5, eps=0.05), _sphere_args),
    "muon_step": (lambda x, g: F.muon_step(None, x, g, g, lr=0.1, dtype=None)[0], _matrix_args),
    "muon_step-stiefel": (
        lambda x, g: F.muon_step(NS, x, g, g, lr=0.1, dtype=None)[0], _matrix_args
    ),
    "hyperball_step": (
        lambda x, g: F.hyperball_step(x, g, g, lr=0.1, radius=2.0, dtype=None)[0], _matrix_args
    ),
}
# compiled: tiny shapes, the manifold-free or sphere form of each step function
COMPILED = [k for k in STEPS if k not in ("muon_step-stiefel", "rsgd_step-nesterov")]


@pytest.mark.parametrize("name", list(STEPS))
def test_vmap_over_independent_problems(name):
    step, make = STEPS[name]
    x, g = make()
    batched = torch.func.vmap(step)(x, g)
    looped = torch.stack([step(xi, gi) for xi, gi in zip(x, g, strict=True)])
    torch.testing.assert_close(batched, looped, rtol=1e-6, atol=1e-6)
    assert not torch.equal(batched, x)  # the step moved


@pytest.mark.parametrize("name", COMPILED)
def test_compiles_with_fullgraph(name):
    step, make = STEPS[name]
    x, g = make()
    torch._dynamo.reset()
    compiled = torch.compile(step, fullgraph=True)
    torch.testing.assert_close(compiled(x[:1], g[:1]), step(x[:1], g[:1]), rtol=1e-5, atol=1e-5)
    torch._dynamo.reset()


def test_steps_do_not_modify_their_inputs():
    x, g = _sphere_args()
    x0, g0 = x.clone(), g.clone()
    buf = g.clone()
    F.rsgd_step(SPHERE, x, g, buf, lr=0.1, momentum=0.9, weight_decay=0.1)
    F.landing_step(SPHERE, x, g, lr=0.1)
    w, h = _matrix_args()
    w0 = w.clone()
    F.muon_step(None, w, h, h, lr=0.1, weight_decay=0.1)
    assert torch.equal(x, x0) and torch.equal(g, g0) and torch.equal(buf, g0)
    assert torch.equal(w, w0)
