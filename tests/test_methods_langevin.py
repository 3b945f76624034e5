"""Weight-constrained Langevin recipes: circle and orthogonality constraints."""

from __future__ import annotations

import copy
import io
import math
import pathlib

import geoopt
import pytest
import torch
from doc_examples import run_python_blocks
from torch import nn

from geodyn.constraints import constrained_parameters, residuals
from geodyn.integrators import Overdamped, Splitting
from geodyn.manifolds import CircleLift, Stiefel
from geodyn.methods import circle_model, gamma_from_momentum, orthogonal_model

F32, F64 = torch.float32, torch.float64
DOC = pathlib.Path(__file__).resolve().parents[1] / "docs" / "methods" / "langevin.md"


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny models: one intra-op thread avoids oversubscription on a busy machine."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _data(n_in, n_out, dtype, seed=0, n=128):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, n_in, dtype=dtype, generator=g)
    y = torch.randint(0, n_out, (n,), generator=g)
    return x, y


def _train(model, opt, x, y, steps, each=None, batch=16):
    g = torch.Generator().manual_seed(1)
    for t in range(steps):
        i = torch.randint(0, x.shape[0], (batch,), generator=g)
        opt.zero_grad()
        nn.functional.cross_entropy(model(x[i]), y[i]).backward()
        opt.step()
        if each is not None:
            each(t)


# ---------------------------------------------------------------------- circle constraint
def test_circle_defaults_are_the_papers_mlp_setting():
    model = nn.Sequential(nn.Linear(784, 1000), nn.ReLU(), nn.Linear(1000, 10))
    model, opt = circle_model(model)
    assert isinstance(opt, Splitting)
    group = opt.param_groups[0]
    assert (group["lr"], group["gamma"], group["tau"], group["scheme"]) == (0.3, 1.0, 0.0, "BAOAB")
    radii = [p.manifold.radius for p in constrained_parameters(model).values()]
    assert radii == [0.05, 0.1]
    assert type(model[0].bias) is nn.Parameter and type(model[2].bias) is nn.Parameter
    z = model[0].parametrizations.weight.original
    assert z.shape == (1000, 784, 2) and torch.equal(model[0].weight, z[..., 0])


def test_circle_bound_every_step_and_no_drift_after_1e4_float32_steps():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 8, bias=False), nn.Tanh(), nn.Linear(8, 3, bias=False))
    radii = (0.05, 0.1)
    model, opt = circle_model(model, radii=radii)
    x, y = _data(6, 3, F32)
    excess = torch.zeros(())

    def bound(t):
        for layer, r in zip((model[0], model[2]), radii, strict=True):
            torch.maximum(excess, layer.weight.detach().abs().max() / r - 1, out=excess)

    _train(model, opt, x, y, 10_000, each=bound)
    assert float(excess) <= 1e-6, f"|w| exceeded r by {float(excess):.2e} (relative)"
    for p in constrained_parameters(model).values():
        r2 = p.manifold.radius ** 2
        drift = float(((p.detach().square().sum(-1) - r2) / r2).abs().max())
        assert drift <= 1e-6, f"q^2 + xi^2 = r^2 violated by {drift:.2e} (relative)"


def _rotate(z, p, h, r):
    """Exact flow of the free particle on the circle for time h: rotate z and p by omega h."""
    q, xi = z[..., 0], z[..., 1]
    omega = (xi * p[..., 0] - q * p[..., 1]) / r**2
    c, s = torch.cos(omega * h), torch.sin(omega * h)
    q1 = q * c + xi * s
    xi1 = xi * c - q * s
    z1 = torch.stack([q1, xi1], -1)
    return z1, omega.unsqueeze(-1) * torch.stack([xi1, -q1], -1)


def _rotate_defective(z, p, h, r):
    """The reference code's drift: xi updated with the already-updated q."""
    q, xi = z[..., 0], z[..., 1]
    omega = (xi * p[..., 0] - q * p[..., 1]) / r**2
    c, s = torch.cos(omega * h), torch.sin(omega * h)
    q1 = q * c + xi * s
    xi1 = xi * c - q1 * s
    z1 = torch.stack([q1, xi1], -1)
    return z1, omega.unsqueeze(-1) * torch.stack([xi1, -q1], -1)


def _tangent(z, v, r):
    return v - z * (z * v).sum(-1, keepdim=True) / r**2


def _baoab_circle(drift, steps, dtype, r=0.5, h=0.3, gamma=1.0):
    """tau = 0 BAOAB on L = 1/2 |q - t|^2 with t outside the box; returns max relative drift."""
    g = torch.Generator().manual_seed(0)
    target = 2 * r * torch.randn(64, dtype=dtype, generator=g)
    z = CircleLift(r).lift(r * (2 * torch.rand(64, dtype=dtype, generator=g) - 1))
    p = torch.zeros_like(z)
    c = math.exp(-gamma * h)
    worst = torch.zeros((), dtype=dtype)
    for _ in range(steps):
        grad = torch.stack([z[..., 0] - target, torch.zeros_like(target)], -1)
        p = _tangent(z, p - h * grad, r)
        z, p = drift(z, p, h / 2, r)
        p = c * p
        z, p = drift(z, p, h / 2, r)
        torch.maximum(worst, ((z.square().sum(-1) - r**2) / r**2).abs().max(), out=worst)
    return float(worst)


def test_reference_codes_drift_violates_the_circle_while_the_exact_rotation_does_not():
    def geodyn_rotation(z, p, h, r):
        return CircleLift(r).retr_transp(z, h * p, p)

    exact = _baoab_circle(geodyn_rotation, 10_000, F32)
    defective = _baoab_circle(_rotate_defective, 10_000, F32)
    assert exact <= 1e-6, f"geodyn's rotation drifted by {exact:.2e}"
    assert defective >= 1e-2, f"the foil should drift, got {defective:.2e}"
    # the foil's error is the algorithm's, not rounding: it is there in float64 too
    assert _baoab_circle(_rotate_defective, 200, F64) >= 1e-3


def _hand_baoab(z0, t, k, h, gamma, r, steps, stale):
    """BAOAB with merged kicks (one gradient per step), written from the equations."""
    z, p = z0.clone(), torch.zeros_like(z0)
    c = math.exp(-gamma * h)
    z_prev = z0
    for n in range(steps):
        at = z_prev if (stale and n > 0) else z  # stale: the gradient of the step before
        grad = torch.stack([k * (at[..., 0] - t), torch.zeros_like(t)], -1)
        p = _tangent(z, p - (h / 2 if n == 0 else h) * grad, r)
        z_prev = z
        z, p = _rotate(z, p, h / 2, r)
        p = c * p
        z, p = _rotate(z, p, h / 2, r)
    return z


def test_kick_uses_the_current_gradient_not_a_stale_one():
    r, k, h, gamma = 0.8, 3.0, 0.3, 1.0
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 2, bias=False)).to(F64)
    model, opt = circle_model(model, radii=r, lr=h, gamma=gamma)
    t = torch.tensor([[0.9, -0.2, 0.5], [-1.0, 0.3, 0.0]], dtype=F64)
    z0 = model[0].parametrizations.weight.original.detach().clone()
    for _ in range(4):
        opt.zero_grad()
        (0.5 * k * (model[0].weight - t).square().sum()).backward()
        opt.step()
    z = model[0].parametrizations.weight.original.detach()
    current = _hand_baoab(z0, t, k, h, gamma, r, 4, stale=False)
    stale = _hand_baoab(z0, t, k, h, gamma, r, 4, stale=True)
    torch.testing.assert_close(z, current, rtol=0, atol=1e-12)
    assert float((z - stale).abs().max()) > 1e-3


def test_circle_gradient_wrt_xi_is_exactly_zero():
    model = nn.Sequential(nn.Linear(4, 3)).to(F64)
    circle_model(model, radii=0.3)
    x, _ = _data(4, 3, F64)
    model(x).square().sum().backward()
    grad = model[0].parametrizations.weight.original.grad
    assert torch.equal(grad[..., 1], torch.zeros_like(grad[..., 1]))
    assert float(grad[..., 0].abs().max()) > 0


def test_overdamped_circle_keeps_the_bound():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 8), nn.Tanh(), nn.Linear(8, 3))
    model, opt = circle_model(model, radii=(0.05, 0.1), lr=0.05, tau=1e-4, form="overdamped",
                              seed=0)
    assert isinstance(opt, Overdamped)
    x, y = _data(6, 3, F32)
    _train(model, opt, x, y, 300)
    assert max(residuals(model).values()) <= 1e-6
    assert float(model[0].weight.detach().abs().max()) <= 0.05 * (1 + 1e-6)


def test_circle_radii_must_match_layers():
    model = nn.Sequential(nn.Linear(3, 3), nn.Linear(3, 2), nn.Linear(2, 1))
    with pytest.raises(ValueError, match="one radius per layer"):
        circle_model(model, radii=(0.1, 0.2))
    assert type(model[0].weight) is nn.Parameter  # nothing constrained on failure
    with pytest.raises(ValueError, match="form must be"):
        circle_model(model, radii=0.1, form="langevin")  # type: ignore[arg-type]


# ---------------------------------------------------------------------- orthogonality
def _convnet(dtype):
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(2, 4, 3, padding=1),  # first layer: left free
        nn.ReLU(),
        nn.Conv2d(4, 6, 3),  # wide: 6 x 36, W W^T = I
        nn.ReLU(),
        nn.Flatten(),
        nn.Linear(6 * 4 * 4, 24),  # wide
        nn.ReLU(),
        nn.Linear(24, 40),  # tall: 40 x 24, W^T W = I
        nn.ReLU(),
        nn.Linear(40, 3),
    ).to(dtype)


def test_orthogonal_defaults_and_initial_orthonormality():
    model, opt = orthogonal_model(_convnet(F64))
    group = opt.param_groups[0]
    assert group["lr"] == 0.1 and group["tau"] == 0.0
    assert math.exp(-group["gamma"] * group["lr"]) == pytest.approx(0.9, rel=1e-12)
    assert gamma_from_momentum(0.9, 0.1) == pytest.approx(-math.log(0.9) / 0.1)
    assert type(model[0].weight) is nn.Parameter  # first layer excluded
    assert set(constrained_parameters(model)) == {"2.weight", "5.weight", "7.weight", "9.weight"}
    wide = model[2].weight.detach().reshape(6, -1)
    torch.testing.assert_close(wide @ wide.T, torch.eye(6, dtype=F64), rtol=0, atol=1e-12)
    tall = model[7].weight.detach()
    torch.testing.assert_close(tall.T @ tall, torch.eye(24, dtype=F64), rtol=0, atol=1e-12)
    assert isinstance(model[7].weight.manifold, Stiefel)


@pytest.mark.parametrize("form", ["underdamped", "overdamped"])
def test_orthogonal_residuals_after_1000_float32_steps(form):
    model, opt = orthogonal_model(_convnet(F32), form=form, tau=1e-5, seed=0)
    x = torch.randn(64, 2, 6, 6, generator=torch.Generator().manual_seed(0))
    y = torch.randint(0, 3, (64,), generator=torch.Generator().manual_seed(1))
    w0 = model[5].weight.detach().clone()
    _train(model, opt, x, y, 1000)
    res = residuals(model)
    assert len(res) == 4
    assert max(res.values()) <= 1e-5, f"{form}: residuals {res}"
    assert float((model[5].weight.detach() - w0).abs().max()) > 1e-3  # it did train


def test_state_dict_round_trip_keeps_binding_values_and_dynamics():
    model, opt = orthogonal_model(_convnet(F64))
    x = torch.randn(16, 2, 6, 6, dtype=F64, generator=torch.Generator().manual_seed(0))
    y = torch.randint(0, 3, (16,), generator=torch.Generator().manual_seed(1))
    _train(model, opt, x, y, 5)
    buffer = io.BytesIO()
    torch.save({"model": model.state_dict(), "opt": opt.state_dict()}, buffer)
    fresh, fresh_opt = orthogonal_model(_convnet(F64))
    buffer.seek(0)
    saved = torch.load(buffer, weights_only=True)
    fresh.load_state_dict(saved["model"])
    fresh_opt.load_state_dict(saved["opt"])
    for (n, p), (m, q) in zip(model.named_parameters(), fresh.named_parameters(), strict=True):
        assert n == m and type(p) is type(q) and torch.equal(p, q)
        if isinstance(p, geoopt.ManifoldParameter):
            assert p.manifold == q.manifold
    twin = copy.deepcopy(model)
    assert constrained_parameters(twin).keys() == constrained_parameters(model).keys()
    _train(model, opt, x, y, 5)
    _train(fresh, fresh_opt, x, y, 5)
    for p, q in zip(model.parameters(), fresh.parameters(), strict=True):
        assert torch.equal(p, q)


def test_docs_example_runs():
    run_python_blocks(DOC)
