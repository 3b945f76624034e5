"""Faults leave everything untouched; seeds and checkpoints reproduce runs bit for bit;
steps commute with rotations; geoopt parameters and manifolds are stepped."""

import io
import warnings

import geoopt
import pytest
import torch

from geodyn.integrators import (
    NonFiniteError,
    Overdamped,
    RiemannianSGD,
    Splitting,
    manifold_of,
)
from geodyn.manifolds import ConvergenceError, Euclidean, Sphere, Stiefel

DT = torch.float64


def model(seed=0):
    g = torch.Generator().manual_seed(seed)
    a = torch.nn.Parameter(Sphere().random_point(6, 4, dtype=DT, generator=g))
    b = torch.nn.Parameter(Stiefel().random_point(5, 3, dtype=DT, generator=g))
    c = torch.nn.Parameter(torch.randn(7, dtype=DT, generator=g))
    return [a, b, c]


def groups(params):
    a, b, c = params
    return [
        {"params": [a], "manifold": Sphere()},
        {"params": [b], "manifold": Stiefel()},
        {"params": [c]},
    ]


def loss_fn(params):
    a, b, c = params
    return (a[:, 0] ** 3).sum() + (b * b.flip(0)).sum() + ((c - 1) ** 2).sum()


def train(opt, params, n):
    for _ in range(n):
        opt.zero_grad()
        loss_fn(params).backward()
        opt.step()


def snapshot(opt, params):
    state = {
        k: v.clone() if torch.is_tensor(v) else v for p in params for k, v in opt.state[p].items()
    }
    return [p.detach().clone() for p in params], state, opt.generator.get_state().clone()


def assert_same(before, after):
    for x, y in zip(before[0], after[0], strict=True):
        assert torch.equal(x, y)
    assert before[1].keys() == after[1].keys()
    for k in before[1]:
        v, w = before[1][k], after[1][k]
        assert torch.equal(v, w) if torch.is_tensor(v) else v == w
    assert torch.equal(before[2], after[2])


def make(kind, params):
    if kind == "baoab":
        return Splitting(groups(params), lr=0.05, tau=0.3, seed=0)
    if kind == "overdamped":
        return Overdamped(groups(params), lr=0.05, tau=0.3, seed=0)
    return RiemannianSGD(groups(params), lr=0.05, momentum=0.9)


# ---------------------------------------------------------------------------------- faults
@pytest.mark.parametrize("kind", ["baoab", "overdamped", "rsgd"])
@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_nonfinite_gradient_raises_or_skips_and_changes_nothing(kind, bad):
    params = model()
    opt = make(kind, params)
    train(opt, params, 3)
    opt.zero_grad()
    loss_fn(params).backward()
    params[1].grad[2, 1] = bad
    before = snapshot(opt, params)
    with pytest.raises(NonFiniteError, match="gradient"):
        opt.step()
    assert_same(before, snapshot(opt, params))
    opt.nonfinite = "skip"
    with pytest.warns(RuntimeWarning, match="skipped"):
        opt.step()
    assert_same(before, snapshot(opt, params))


class FailingSphere(Sphere):
    """A sphere whose SHAKE fails on demand (fault injection)."""

    fail = False

    def shake(self, x, y):
        if FailingSphere.fail:
            raise ConvergenceError("injected", residual=1.0, iterations=3)
        return super().shake(x, y)


@pytest.mark.parametrize("kind", ["baoab", "overdamped"])
def test_failed_shake_raises_or_skips_and_changes_nothing(kind):
    params = model()
    opt = make(kind, params)
    opt.param_groups[0]["manifold"] = FailingSphere()
    train(opt, params, 3)
    opt.zero_grad()
    loss_fn(params).backward()
    before = snapshot(opt, params)
    FailingSphere.fail = True
    try:
        with pytest.raises(ConvergenceError):
            opt.step()
        assert_same(before, snapshot(opt, params))
        opt.nonfinite = "skip"
        with pytest.warns(RuntimeWarning, match="injected"):
            opt.step()
        assert_same(before, snapshot(opt, params))
    finally:
        FailingSphere.fail = False
    opt.step()
    assert not torch.equal(before[0][0], params[0].detach())


@pytest.mark.parametrize(
    "kwargs, word",
    [
        (dict(lr=0.0), "lr"),
        (dict(lr=0.1, gamma=-1.0), "gamma"),
        (dict(lr=0.1, tau=float("nan")), "tau"),
        (dict(lr=0.1, drift="euler"), "drift"),
        (dict(lr=0.1, nonfinite="ignore"), "nonfinite"),
        (dict(lr=0.1, seed=1, generator=torch.Generator()), "seed"),
    ],
)
def test_bad_hyperparameters_are_named(kwargs, word):
    with pytest.raises(ValueError, match=word):
        Splitting([torch.nn.Parameter(torch.zeros(3))], **kwargs)


# ------------------------------------------------------------------------ reproducibility
def test_same_seed_is_bit_identical():
    runs = []
    for _ in range(2):
        params = model()
        train(Splitting(groups(params), lr=0.05, tau=0.5, seed=7), params, 20)
        runs.append([p.detach().clone() for p in params])
    for x, y in zip(*runs, strict=True):
        assert torch.equal(x, y)
    params = model()
    train(Splitting(groups(params), lr=0.05, tau=0.5, seed=8), params, 20)
    assert not torch.equal(runs[0][0], params[0].detach())


def test_checkpoint_resume_is_bit_identical():
    params = model()
    opt = Splitting(groups(params), lr=0.05, tau=0.5, seed=3)
    train(opt, params, 30)
    reference = [p.detach().clone() for p in params]

    params = model()
    opt = Splitting(groups(params), lr=0.05, tau=0.5, seed=3)
    train(opt, params, 12)
    buffer = io.BytesIO()
    torch.save({"params": [p.detach() for p in params], "opt": opt.state_dict()}, buffer)
    del params, opt
    buffer.seek(0)
    saved = torch.load(buffer, weights_only=True)
    fresh = model(seed=99)
    with torch.no_grad():
        for p, v in zip(fresh, saved["params"], strict=True):
            p.copy_(v)
    opt = Splitting(groups(fresh), lr=0.05, tau=0.5, seed=12345)
    opt.load_state_dict(saved["opt"])
    train(opt, fresh, 18)
    for x, y in zip(reference, fresh, strict=True):
        assert torch.equal(x, y.detach())


# ---------------------------------------------------------------------------- equivariance
def random_orthogonal(n, g):
    q, r = torch.linalg.qr(torch.randn(n, n, dtype=DT, generator=g))
    return q * torch.sign(torch.diagonal(r))


def rotated_run(manifold, x0, grads, rotate, opt_factory, n=5):
    x = torch.nn.Parameter(rotate(x0).clone())
    opt = opt_factory([x], manifold)
    for k in range(n):
        x.grad = rotate(grads[k])
        opt.step()
    return x.detach()


FACTORIES = {
    "BAOAB": lambda ps, m: Splitting(ps, lr=0.1, gamma=0.7, manifold=m),
    "OBABO": lambda ps, m: Splitting(ps, lr=0.1, gamma=0.7, scheme="OBABO", manifold=m),
    "Overdamped": lambda ps, m: Overdamped(ps, lr=0.1, manifold=m),
    "RSGD": lambda ps, m: RiemannianSGD(ps, lr=0.1, momentum=0.8, manifold=m),
}


@pytest.mark.parametrize("method", list(FACTORIES))
@pytest.mark.parametrize("case", ["sphere", "stiefel"])
def test_steps_commute_with_rotations(method, case):
    g = torch.Generator().manual_seed(11)
    if case == "sphere":
        manifold, shape, q = Sphere(), (4, 5), random_orthogonal(5, g)

        def rotate(v):
            return v @ q.T  # each row x -> Q x
    else:
        manifold, shape, q = Stiefel(retraction="polar"), (5, 3), random_orthogonal(5, g)

        def rotate(v):
            return q @ v  # X -> Q X

    x0 = manifold.random_point(*shape, dtype=DT, generator=g)
    grads = [torch.randn(shape, dtype=DT, generator=g) for _ in range(5)]
    plain = rotated_run(manifold, x0, grads, lambda v: v, FACTORIES[method])
    turned = rotated_run(manifold, x0, grads, rotate, FACTORIES[method])
    torch.testing.assert_close(turned, rotate(plain), rtol=0, atol=1e-12)


def test_thermostat_noise_is_the_tangent_gaussian():
    """One O step with c ~ 0 from p = 0: p ~ N(0, tau P_x), P_x = I - x x^T on the sphere."""
    n, tau = 40_000, 0.7
    x0 = torch.tensor([0.6, 0.0, 0.8], dtype=DT)
    x = torch.nn.Parameter(x0.expand(n, 3).clone())
    x.grad = torch.zeros_like(x)
    opt = Splitting([x], lr=1.0, gamma=50.0, tau=tau, scheme="O", manifold=Sphere(), seed=2)
    opt.step()
    p = opt.state[x]["momentum"]
    cov = p.T @ p / n
    expected = tau * (torch.eye(3, dtype=DT) - torch.outer(x0, x0))
    # entries of a sample covariance have standard error <= tau sqrt(2/n); allow 5 of them
    torch.testing.assert_close(cov, expected, rtol=0, atol=5 * tau * (2 / n) ** 0.5)
    assert float((p @ x0).abs().max()) < 1e-12


# ------------------------------------------------------------------------- geoopt interop
@pytest.mark.parametrize("kind", ["baoab", "overdamped", "rsgd"])
@pytest.mark.parametrize("geo", [geoopt.Sphere(), geoopt.Stiefel()])
def test_integrators_step_geoopt_parameters(kind, geo):
    g = torch.Generator().manual_seed(0)
    x = geoopt.ManifoldParameter(
        geo.projx(torch.randn(4, 5, 3, dtype=DT, generator=g)), manifold=geo
    )
    assert manifold_of(x, {}).ndim == 2 if isinstance(geo, geoopt.Stiefel) else True
    opt = {
        "baoab": lambda: Splitting([x], lr=0.05, tau=0.5, seed=0),
        "overdamped": lambda: Overdamped([x], lr=0.02, tau=0.1, seed=0),
        "rsgd": lambda: RiemannianSGD([x], lr=0.05, momentum=0.9),
    }[kind]()
    start = x.detach().clone()
    for _ in range(20):
        opt.zero_grad()
        (x[..., 0, :] ** 3).sum().backward()
        opt.step()
    ok, reason = geo.check_point_on_manifold(x.detach(), atol=1e-10, explain=True)
    assert ok, reason
    assert float((x.detach() - start).abs().max()) > 1e-3


def test_manifold_of_defaults():
    p = torch.nn.Parameter(torch.zeros(3))
    assert manifold_of(p, {}) == Euclidean()
    assert manifold_of(p, {"manifold": Sphere(2.0)}) == Sphere(2.0)
    q = geoopt.ManifoldParameter(torch.ones(3) / 3**0.5, manifold=Sphere())
    assert manifold_of(q, {}) == Sphere()
    with pytest.raises(ValueError, match="manifold"):
        manifold_of(p, {"manifold": "sphere"})
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        manifold_of(q, {"manifold": None})
