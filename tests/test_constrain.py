"""Binding manifolds to module parameters: geometry, init modes, persistence."""

from __future__ import annotations

import copy
import io
import pathlib

import geoopt
import pytest
import torch
from doc_examples import run_python_blocks
from hypothesis import given
from hypothesis import strategies as st
from torch import nn

from geodyn.constraints import (
    circle,
    constrain,
    constrain_model,
    constrained_parameters,
    lp_sphere,
    max_norm,
    orthogonal,
    residuals,
    unit_norm_neurons,
)
from geodyn.manifolds import Euclidean, Oblique, Reshaped, Sphere, default_atol

F64 = torch.float64


def _mlp(dtype=F64, seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(5, 7), nn.ReLU(), nn.Linear(7, 3)).to(dtype)


def _convnet(dtype=F64, seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Conv2d(2, 4, 3), nn.ReLU(), nn.Conv2d(4, 3, 2), nn.Flatten(), nn.LazyLinear(2)
    ).to(dtype)


def test_linear_weight_becomes_manifold_parameter_on_m():
    layer = nn.Linear(6, 4).to(F64)
    p = constrain(layer, "weight", Oblique(2.0))
    assert isinstance(p, geoopt.ManifoldParameter)
    assert layer.weight is p
    assert p.manifold == Oblique(2.0)
    assert torch.allclose(p.norm(dim=-1), torch.full((4,), 2.0, dtype=F64), atol=1e-12)
    assert type(layer.bias) is nn.Parameter  # biases stay free


def test_project_is_nearest_point_of_current_weight():
    layer = nn.Linear(6, 4).to(F64)
    w = layer.weight.detach().clone()
    constrain(layer, "weight", Oblique(), init="project")
    assert torch.allclose(layer.weight, w / w.norm(dim=-1, keepdim=True), atol=1e-14)


def test_conv_kernel_is_constrained_as_out_by_fan_in_rows():
    conv = nn.Conv2d(3, 5, (2, 4)).to(F64)
    p = constrain(conv, "weight", Oblique(1.5))
    assert p.shape == (5, 3, 2, 4)
    assert isinstance(p.manifold, Reshaped)
    assert p.manifold.view_shape == (5, 24)
    norms = p.detach().reshape(5, -1).norm(dim=-1)
    assert torch.allclose(norms, torch.full((5,), 1.5, dtype=F64), atol=1e-12)
    out = conv(torch.randn(1, 3, 6, 6, dtype=F64))  # the module still runs
    assert out.shape == (1, 5, 5, 3)


def test_keep_accepts_points_on_m_and_rejects_others():
    layer = nn.Linear(4, 3).to(F64)
    with pytest.raises(ValueError, match="init='keep'"):
        constrain(layer, "weight", Oblique(), init="keep")
    assert type(layer.weight) is nn.Parameter  # nothing half-done on failure
    with torch.no_grad():
        layer.weight.copy_(Oblique().project(layer.weight))
    w = layer.weight.detach().clone()
    constrain(layer, "weight", Oblique(), init="keep")
    assert torch.equal(layer.weight.detach(), w)


def test_random_init_is_seedable_and_on_m():
    def draw():
        layer = nn.Linear(4, 3).to(F64)
        g = torch.Generator().manual_seed(3)
        return constrain(layer, "weight", Oblique(), init="random", generator=g).detach()

    a, b = draw(), draw()
    assert torch.equal(a, b)
    assert float(Oblique().residual(a)) < default_atol(F64)


def test_bad_input_is_named():
    layer = nn.Linear(4, 3)
    with pytest.raises(ValueError, match="init must be"):
        constrain(layer, "weight", Oblique(), init="nearest")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="no parameter 'kernel'"):
        constrain(layer, "kernel", Oblique())
    with pytest.raises(ValueError, match="geodyn Manifold"):
        constrain(layer, "weight", object())  # type: ignore[arg-type]
    constrain(layer, "weight", Oblique())
    with pytest.raises(ValueError, match="constrain it once"):
        constrain(layer, "weight", Oblique())


def test_state_dict_round_trip_into_fresh_model_keeps_binding_and_values():
    model = _mlp()
    constrain_model(model, unit_norm_neurons, radius=0.5)
    with torch.no_grad():  # move off the initial point, staying on M
        for p in constrained_parameters(model).values():
            p.copy_(p.manifold.retract(p, p.manifold.random_tangent(p)))
    buffer = io.BytesIO()
    torch.save(model.state_dict(), buffer)
    fresh = _mlp(seed=1)
    constrain_model(fresh, unit_norm_neurons, radius=0.5)
    buffer.seek(0)
    fresh.load_state_dict(torch.load(buffer, weights_only=True))
    for (name, p), (name2, q) in zip(
        model.named_parameters(), fresh.named_parameters(), strict=True
    ):
        assert name == name2 and type(p) is type(q) and torch.equal(p, q)
        if isinstance(p, geoopt.ManifoldParameter):
            assert q.manifold == p.manifold


def test_to_dtype_and_deepcopy_keep_binding():
    model = _convnet(torch.float32)
    model(torch.randn(1, 2, 6, 6))  # materialise the lazy layer
    constrain_model(model, "unit_norm_neurons", radius=2.0)
    names = set(constrained_parameters(model))
    assert names == {"0.weight", "2.weight", "4.weight"}
    model.to(F64)
    after = constrained_parameters(model)
    assert set(after) == names
    assert all(p.dtype == F64 for p in after.values())
    clone = copy.deepcopy(model)
    cloned = constrained_parameters(clone)
    for name, p in after.items():
        q = cloned[name]
        assert q.manifold == p.manifold and torch.equal(p, q)
        assert q.data_ptr() != p.data_ptr()


def test_constrain_model_excludes_by_name_and_by_module():
    model = _mlp()
    out = constrain_model(model, "unit_norm_neurons", exclude=["0"])
    assert set(out) == {"2"}
    model = _mlp()
    out = constrain_model(model, "unit_norm_neurons", exclude=[model[2]])
    assert set(out) == {"0"}
    with pytest.raises(ValueError, match="not a submodule"):
        constrain_model(_mlp(), "unit_norm_neurons", exclude=["first"])
    with pytest.raises(ValueError, match="preset must be one of"):
        constrain_model(_mlp(), "unit-norm")


def test_residuals_report_every_constrained_parameter():
    model = _mlp()
    constrain_model(model, "unit_norm_neurons")
    res = residuals(model)
    assert set(res) == {"0.weight", "2.weight"}
    assert max(res.values()) < default_atol(F64)
    with torch.no_grad():
        model[2].weight.mul_(1.1)  # |w|^2 = 1.21: c = (1.21 - 1) / 2
    assert residuals(model)["2.weight"] == pytest.approx(0.105, rel=1e-9)


def test_geoopt_optimizer_keeps_constrained_conv_on_m():
    torch.manual_seed(0)
    conv = nn.Conv2d(2, 3, 3).to(F64)
    constrain(conv, "weight", Oblique())
    opt = geoopt.optim.RiemannianSGD(conv.parameters(), lr=0.1, momentum=0.9)
    x = torch.randn(4, 2, 5, 5, dtype=F64)
    for _ in range(20):
        opt.zero_grad()
        conv(x).square().mean().backward()
        opt.step()
    assert residuals(conv)["weight"] < default_atol(F64)


@given(
    out=st.integers(1, 4),
    cin=st.integers(1, 3),
    k=st.integers(1, 3),
    batch=st.integers(0, 2),
    seed=st.integers(0, 2**31 - 1),
)
def test_reshaped_verbs_commute_with_the_view(out, cin, k, batch, seed):
    g = torch.Generator().manual_seed(seed)
    shape = (out, cin, k, k)
    view = (out, cin * k * k)
    m = Reshaped(Sphere(1.3), shape, view)
    lead = (2,) * batch
    x = m.random_point(*lead, *shape, dtype=F64, generator=g)
    v = torch.randn(x.shape, dtype=F64, generator=g)
    xv, vv = x.reshape(*lead, *view), v.reshape(*lead, *view)
    base = Sphere(1.3)
    assert float(m.residual(x)) < default_atol(F64)
    pv = m.proj_tangent(x, v)
    assert torch.allclose(pv.reshape(*lead, *view), base.proj_tangent(xv, vv), atol=1e-12)
    assert torch.allclose(m.proj_tangent(x, pv), pv, atol=1e-12)
    y = m.retract(x, pv)
    assert y.shape == x.shape and float(m.residual(y)) < default_atol(F64)
    assert torch.allclose(m.shake(x, x + 0.1 * v).reshape(*lead, *view),
                          base.shake(xv, xv + 0.1 * vv), atol=1e-12)
    ip = m.inner(x, v, keepdim=True)
    assert ip.shape == (*lead, 1, 1, 1, 1)
    assert torch.allclose(ip.flatten(), (v * v).reshape(*lead, -1).sum(-1).flatten())


def test_reshaped_rejects_wrong_shapes():
    with pytest.raises(ValueError, match="as many entries"):
        Reshaped(Sphere(), (2, 3), (7,))
    m = Reshaped(Sphere(), (2, 3, 1), (2, 3))
    with pytest.raises(ValueError, match="trailing dimensions"):
        m.project(torch.ones(3, 2, 1))


def test_euclidean_binding_is_identity():
    layer = nn.Linear(3, 2).to(F64)
    w = layer.weight.detach().clone()
    constrain(layer, "weight", Euclidean(), init="keep")
    assert torch.equal(layer.weight.detach(), w)


def test_docs_example_runs():
    doc = pathlib.Path(__file__).resolve().parents[1] / "docs" / "constraints.md"
    run_python_blocks(doc)


def test_every_preset_puts_a_conv_and_a_linear_on_its_set():
    torch.manual_seed(0)
    for preset, check in [
        (orthogonal, None),
        (lambda m: lp_sphere(m, p=3.0, radius=2.0),
         lambda w: (w.abs() ** 3).sum(-1) ** (1 / 3) - 2.0),
        (lambda m: max_norm(m, radius=0.1), lambda w: (w.norm(dim=-1) - 0.1).clamp(min=0)),
        (lambda m: circle(m, radius=0.01), lambda w: (w.abs() - 0.01).clamp(min=0)),
    ]:
        for layer in (nn.Conv2d(2, 3, 2), nn.Linear(5, 4), nn.Linear(3, 6)):
            layer = layer.to(F64)
            preset(layer)
            w = layer.weight.detach().reshape(layer.weight.shape[0], -1)
            if check is None:  # Stiefel: W W^T = I (wide) or W^T W = I (tall)
                gram = w @ w.T if w.shape[0] <= w.shape[1] else w.T @ w
                err = gram - torch.eye(gram.shape[0], dtype=F64)
            else:
                err = check(w)
            assert float(err.abs().max()) < 1e-9, (preset, layer)
            assert max(residuals(layer).values()) < default_atol(F64)
