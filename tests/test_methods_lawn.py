"""LAWN: unconstrained warm-up, then norms frozen at the switch for any base optimizer."""

from __future__ import annotations

import copy
import io
import pathlib

import pytest
import torch
from doc_examples import run_python_blocks
from torch import nn

from geodyn.manifolds import NeuronSpheres, Reshaped, Sphere
from geodyn.methods import Lawn
from geodyn.testing import check_manifold

DOC = pathlib.Path(__file__).resolve().parents[1] / "docs" / "methods" / "lawn.md"
WARMUP = 6
STEPS = 30


def _problem(dtype, seed=0):
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(5, 16), nn.ReLU(), nn.Linear(16, 4)).to(dtype)
    x = torch.randn(64, 5, dtype=dtype)
    y = torch.randint(0, 4, (64,))
    return model, x, y


def _step(model, opt, x, y, t):
    i = torch.arange(t % 2, x.shape[0], 2)
    opt.zero_grad()
    nn.functional.cross_entropy(model(x[i]), y[i]).backward()
    opt.step()


OPTIMIZERS = {
    "SGD": lambda ps: torch.optim.SGD(ps, lr=0.5, momentum=0.9, weight_decay=1e-2),
    "Adam": lambda ps: torch.optim.Adam(ps, lr=0.05),
    "AdamW": lambda ps: torch.optim.AdamW(ps, lr=0.05, weight_decay=0.1),
}


@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
def test_frozen_neuron_norms_hold_after_every_step(name):
    model, x, y = _problem(torch.float32)
    opt = Lawn(OPTIMIZERS[name](model.parameters()), model, warmup_steps=WARMUP)
    w = model[2].weight
    norms = [w.detach().norm(dim=-1).clone()]
    for t in range(WARMUP):
        _step(model, opt, x, y, t)
        norms.append(w.detach().norm(dim=-1).clone())
    assert not opt.switched
    assert float((norms[-1] - norms[0]).abs().max()) > 1e-3  # warm-up is unconstrained
    frozen = norms[-1]
    before = w.detach().clone()
    worst = 0.0
    for t in range(WARMUP, STEPS):
        _step(model, opt, x, y, t)
        rel = ((w.detach().norm(dim=-1) - frozen).abs() / frozen).max()
        worst = max(worst, float(rel))
    assert opt.switched
    torch.testing.assert_close(opt.radii[0], frozen, rtol=0, atol=0)
    assert worst <= 1e-6, f"{name}: frozen norm drifted by {worst:.2e} (relative)"
    assert float((w.detach() - before).abs().max()) > 1e-3  # the directions still train


def test_weight_decay_is_off_on_lawn_layers_only():
    model, x, y = _problem(torch.float64)
    opt = Lawn(OPTIMIZERS["AdamW"](model.parameters()), model, warmup_steps=0)
    assert len(opt.param_groups) == 2
    _step(model, opt, x, y, 0)
    lawn_group = [g for g in opt.param_groups if g["params"][0] is model[2].weight]
    assert lawn_group[0]["weight_decay"] == 0.0
    assert all(g["weight_decay"] == 0.1 for g in opt.param_groups if g is not lawn_group[0])


def test_per_layer_conv_selected_by_name_keeps_frobenius_norm():
    torch.manual_seed(1)
    model = nn.Sequential(
        nn.Conv2d(2, 4, 3), nn.ReLU(), nn.Conv2d(4, 3, 3), nn.Flatten(), nn.Linear(12, 2)
    ).to(torch.float64)
    x = torch.randn(8, 2, 6, 6, dtype=torch.float64)
    y = torch.randint(0, 2, (8,))
    opt = Lawn(torch.optim.Adam(model.parameters(), lr=0.05), model, warmup_steps=2,
               layers=["2", model[4]], per="layer")
    conv = model[2].weight
    for t in range(12):
        _step(model, opt, x, y, t)
        if t == 1:
            frozen = conv.detach().norm()
            rows = conv.detach().reshape(3, -1).norm(dim=-1)
    assert isinstance(opt.groups[0]["manifold"], Reshaped)
    assert abs(float(conv.detach().norm() / frozen) - 1) < 1e-12
    assert float((conv.detach().reshape(3, -1).norm(dim=-1) - rows).abs().max()) > 1e-4


@pytest.mark.parametrize("switched", [False, True])
def test_state_dict_round_trip_continues_identically(switched):
    model, x, y = _problem(torch.float64)
    opt = Lawn(torch.optim.Adam(model.parameters(), lr=0.05), model, warmup_steps=4)
    done = 6 if switched else 2
    for t in range(done):
        _step(model, opt, x, y, t)
    buffer = io.BytesIO()
    torch.save(opt.state_dict(), buffer)
    twin = copy.deepcopy(model)
    twin_opt = Lawn(torch.optim.Adam(twin.parameters(), lr=0.05), twin, warmup_steps=4)
    buffer.seek(0)
    twin_opt.load_state_dict(torch.load(buffer, weights_only=True))  # plain tensors only
    assert twin_opt.switched == switched and twin_opt.steps == done
    for t in range(done, 12):
        _step(model, opt, x, y, t)
        _step(twin, twin_opt, x, y, t)
    for p, q in zip(model.parameters(), twin.parameters(), strict=True):
        assert torch.equal(p, q)
    torch.testing.assert_close(twin_opt.radii[0], opt.radii[0], rtol=0, atol=0)


def test_bad_arguments_are_named():
    model, _, _ = _problem(torch.float64)
    with pytest.raises(ValueError, match="per must be"):
        Lawn(torch.optim.SGD(model.parameters(), lr=0.1), model, 0, per="row")  # type: ignore
    with pytest.raises(ValueError, match="not a submodule"):
        Lawn(torch.optim.SGD(model.parameters(), lr=0.1), model, 0, layers=["head"])
    with pytest.raises(ValueError, match="not among the optimizer's parameters"):
        Lawn(torch.optim.SGD(model[0].parameters(), lr=0.1), model, 0)
    with pytest.raises(ValueError, match="no nn.Linear"):
        conv = nn.Conv2d(1, 1, 1)
        Lawn(torch.optim.SGD(conv.parameters(), lr=0.1), conv, 0)
    with pytest.raises(ValueError, match="positive finite"):
        NeuronSpheres(torch.tensor([1.0, 0.0]))


def test_neuron_spheres_obey_the_manifold_laws():
    radii = torch.tensor([0.5, 1.0, 2.0], dtype=torch.float64)
    report = check_manifold(NeuronSpheres(radii), shape=(2, 3, 4), max_examples=15)
    assert report["examples"]
    m = Reshaped(NeuronSpheres(radii), (3, 2, 2), (3, 4))
    x = m.random_point(3, 2, 2, dtype=torch.float64)
    torch.testing.assert_close(x.reshape(3, 4).norm(dim=-1), radii)
    assert Reshaped(Sphere(2.0), (3, 4), (12,)) == Reshaped(Sphere(2.0), (3, 4), (12,))


def test_docs_example_runs():
    run_python_blocks(DOC)
