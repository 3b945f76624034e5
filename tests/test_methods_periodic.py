"""PSWA / PWALKS / PSWM: the period-end swap, manifolds, base state, persistence."""

from __future__ import annotations

import copy
import pathlib

import geoopt
import pytest
import torch
from doc_examples import run_python_blocks
from torch import nn

from geodyn.constraints import constrain, residuals
from geodyn.manifolds import Oblique, default_atol
from geodyn.methods import PeriodicSampling

F64 = torch.float64
DOC = pathlib.Path(__file__).resolve().parents[1] / "docs" / "methods" / "periodic.md"


def _problem(seed=0):
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(4, 6), nn.Tanh(), nn.Linear(6, 2)).to(F64)
    x = torch.randn(32, 4, dtype=F64)
    y = torch.randn(32, 2, dtype=F64)
    return model, x, y


def _train(model, opt, x, y, steps, record=None):
    for t in range(steps):
        opt.zero_grad()
        n = x.shape[0]
        i = torch.arange(t % 4, n, 4)  # a fixed minibatch cycle: a noisy trajectory
        nn.functional.mse_loss(model(x[i]), y[i]).backward()
        opt.step()


def _recorder(base):
    """Weights right after every base step (before any swap), via a step post-hook."""
    seen: list[list[torch.Tensor]] = []

    def hook(optimizer, args, kwargs):
        seen.append([p.detach().clone() for g in optimizer.param_groups for p in g["params"]])

    base.register_step_post_hook(hook)
    return seen


@pytest.mark.parametrize("mode", ["pswa", "pwalks", "pswm"])
def test_constant_trajectory_is_unchanged(mode):
    model, x, y = _problem()
    w0 = [p.detach().clone() for p in model.parameters()]
    opt = PeriodicSampling(torch.optim.SGD(model.parameters(), lr=0.0), period=6, interval=2,
                           mode=mode, last_k=2)
    _train(model, opt, x, y, 13)
    for p, w in zip(model.parameters(), w0, strict=True):
        torch.testing.assert_close(p.detach(), w, rtol=1e-15, atol=0)


@pytest.mark.parametrize(
    "mode, combine",
    [
        ("pswa", lambda ws, beta: torch.stack(ws).mean(0)),
        ("pwalks", lambda ws, beta: torch.stack(ws[-2:]).mean(0)),
        ("pswm", None),
    ],
)
def test_period_end_weights_combine_the_snapshots(mode, combine):
    model, x, y = _problem()
    base = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    seen = _recorder(base)
    beta = 0.7
    opt = PeriodicSampling(base, period=8, interval=2, mode=mode, last_k=2, beta=beta, start=3)
    _train(model, opt, x, y, 3 + 16)
    # second period ends at step 3 + 16; its snapshots are after steps 3 + 8 + {2, 4, 6, 8}
    snaps = [seen[3 + 8 + k - 1] for k in (2, 4, 6, 8)]
    for j, p in enumerate(model.parameters()):
        ws = [s[j] for s in snaps]
        if mode == "pswm":
            expect = ws[0]
            for w in ws[1:]:
                expect = beta * expect + (1 - beta) * w
        else:
            expect = combine(ws, beta)
        torch.testing.assert_close(p.detach(), expect, rtol=1e-13, atol=1e-15)
        assert not torch.allclose(p.detach(), seen[-1][j])  # the swap did change the weights


def test_base_optimizer_state_is_untouched():
    model, x, y = _problem()
    plain = copy.deepcopy(model)
    opt = PeriodicSampling(torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9),
                           period=4, interval=1)
    ref = torch.optim.SGD(plain.parameters(), lr=0.05, momentum=0.9)
    _train(model, opt, x, y, 4)
    _train(plain, ref, x, y, 4)
    for p, q in zip(model.parameters(), plain.parameters(), strict=True):
        assert torch.equal(opt.state[p]["momentum_buffer"], ref.state[q]["momentum_buffer"])
        assert not torch.equal(p, q)


@pytest.mark.parametrize("mode", ["pswa", "pwalks", "pswm"])
def test_average_on_a_manifold_is_projected_onto_it(mode):
    model, x, y = _problem()
    constrain(model[0], "weight", Oblique(1.0))
    base = geoopt.optim.RiemannianSGD(model.parameters(), lr=0.2, momentum=0.5)
    seen = _recorder(base)
    opt = PeriodicSampling(base, period=6, interval=1, mode=mode, last_k=3)
    _train(model, opt, x, y, 6)
    w = model[0].weight.detach()
    assert residuals(model)["0.weight"] < default_atol(F64)
    snaps = [s[0] for s in seen]
    if mode == "pswm":
        mean = snaps[0]
        for s in snaps[1:]:
            mean = 0.9 * mean + 0.1 * s
    else:
        mean = torch.stack(snaps[-3:] if mode == "pwalks" else snaps).mean(0)
    assert float(Oblique().residual(mean)) > 1e-6  # the raw combination is off the manifold
    torch.testing.assert_close(w, Oblique().project(mean), rtol=1e-13, atol=1e-15)


def test_state_dict_round_trip_mid_period_continues_identically():
    model, x, y = _problem()
    opt = PeriodicSampling(torch.optim.Adam(model.parameters(), lr=0.01), period=6, interval=2,
                           mode="pwalks", last_k=2)
    _train(model, opt, x, y, 5)
    twin = copy.deepcopy(model)
    twin_opt = PeriodicSampling(torch.optim.Adam(twin.parameters(), lr=0.01), period=6,
                                interval=2, mode="pwalks", last_k=2)
    twin_opt.load_state_dict(copy.deepcopy(opt.state_dict()))
    assert twin_opt.steps == 5 and len(twin_opt.snapshots) == 2
    _train(model, opt, x, y, 7)
    _train(twin, twin_opt, x, y, 7)
    for p, q in zip(model.parameters(), twin.parameters(), strict=True):
        assert torch.equal(p, q)


def test_lr_scheduler_drives_the_base():
    model, _, _ = _problem()
    opt = PeriodicSampling(torch.optim.SGD(model.parameters(), lr=1.0), period=2)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.5)
    opt.step()
    sched.step()
    assert opt.base.param_groups[0]["lr"] == 0.5


def test_bad_arguments_are_named():
    model, _, _ = _problem()
    sgd = torch.optim.SGD(model.parameters(), lr=0.1)
    with pytest.raises(ValueError, match="mode must be"):
        PeriodicSampling(sgd, period=4, mode="swa")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="interval dividing period"):
        PeriodicSampling(sgd, period=5, interval=2)
    with pytest.raises(ValueError, match="last_k"):
        PeriodicSampling(sgd, period=4, interval=2, mode="pwalks", last_k=3)
    with pytest.raises(ValueError, match="beta"):
        PeriodicSampling(sgd, period=4, mode="pswm", beta=1.0)
    with pytest.raises(ValueError, match="torch.optim.Optimizer"):
        PeriodicSampling(model, period=4)  # type: ignore[arg-type]


def test_docs_example_runs():
    run_python_blocks(DOC)


@pytest.mark.parametrize("mode", ["pswa", "pwalks", "pswm"])
def test_group_manifold_is_the_one_projected_onto(mode):
    # the manifold is named by the integrator's param group, not by the parameter
    from geodyn.integrators import RiemannianSGD
    from geodyn.manifolds import Sphere

    torch.manual_seed(0)
    w = nn.Parameter(Sphere().random_point(5, 3, dtype=F64))
    target = torch.randn(5, 3, dtype=F64)
    opt = PeriodicSampling(
        RiemannianSGD([w], lr=0.3, momentum=0.5, manifold=Sphere()), period=6, mode=mode,
        last_k=3,
    )
    for t in range(6):
        opt.zero_grad()
        ((w - target * (1 + t % 3)) ** 2).sum().backward()
        opt.step()
    assert float(Sphere().residual(w.detach())) < default_atol(F64)
