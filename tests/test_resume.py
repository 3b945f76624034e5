"""Bit-identical resume: N steps straight equal k steps, a checkpoint, and N - k more.

Every run draws its mini-batches from a data generator. The interrupted run saves
``{model, optimizer, scheduler, data generator}`` with ``torch.save``, fresh objects are
built from a *different* seed (so anything the checkpoint does not carry shows up as a
difference), the checkpoint is read back with ``torch.load(weights_only=True)`` and the
run continues. Every parameter, buffer, optimizer state tensor, scheduler entry and the
data generator's state must then equal the straight run's exactly (``torch.equal``).
"""

from __future__ import annotations

import contextlib
import runpy
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from doc_examples import run_python_blocks
from torch import Tensor, nn
from torch.optim import Optimizer
from torch.optim.lr_scheduler import CosineAnnealingLR, ExponentialLR, LRScheduler, StepLR

import geodyn
from geodyn.constraints import circle, lp_sphere, max_norm, orthogonal, unit_norm_neurons
from geodyn.methods import apply_opt, new_episode

ROOT = Path(__file__).resolve().parents[1]
N_STEPS = 12
BATCH = 16
F64 = torch.float64


# ---------------------------------------------------------------------------- the runs
@dataclass
class Run:
    """Everything one training run owns."""

    model: nn.Module
    optimizer: Optimizer
    scheduler: LRScheduler | None
    data: torch.Generator
    episode: int = 0  # stochastic OPT: a new episode every ``episode`` steps


Build = Callable[[int], Run]


@contextlib.contextmanager
def seeded(seed: int) -> Iterator[None]:
    """Torch's global generator seeded inside the block, restored afterwards."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield


def problem() -> tuple[Tensor, Tensor]:
    g = torch.Generator().manual_seed(2024)
    x = torch.randn(64, 6, dtype=F64, generator=g)
    return x, (x[:, 0] * x[:, 1] > 0).long() + (x[:, 2] > 1).long()


X, Y = problem()


def mlp(seed: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 8), nn.ReLU(),
        nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 3),
    ).to(F64)


def constrained_mlp(seed: int) -> nn.Sequential:
    """Hidden layers on the oblique, Stiefel and circle-lift manifolds; classifier free."""
    model = mlp(seed)
    unit_norm_neurons(model[0])
    orthogonal(model[2])
    circle(model[4], 0.5)
    return model


def ball_mlp(seed: int) -> nn.Sequential:
    """Hidden layers on the Lp sphere and in the norm ball; the third one free."""
    model = mlp(seed)
    lp_sphere(model[0], 1.5)
    max_norm(model[2], 0.8)
    return model


def train(run: Run, start: int, stop: int) -> None:
    """Steps ``start .. stop - 1`` of the run (the step index drives OPT's episodes)."""
    for t in range(start, stop):
        if run.episode and t > 0 and t % run.episode == 0:
            new_episode(run.model, run.optimizer)
        idx = torch.randint(0, len(X), (BATCH,), generator=run.data)
        run.optimizer.zero_grad()
        F.cross_entropy(run.model(X[idx]), Y[idx]).backward()
        run.optimizer.step()
        if run.scheduler is not None:
            run.scheduler.step()


def checkpoint(run: Run) -> dict[str, Any]:
    saved = {
        "model": run.model.state_dict(),
        "optimizer": run.optimizer.state_dict(),
        "data": run.data.get_state(),
    }
    if run.scheduler is not None:
        saved["scheduler"] = run.scheduler.state_dict()
    return saved


def restore(run: Run, saved: dict[str, Any]) -> None:
    run.model.load_state_dict(saved["model"])
    run.optimizer.load_state_dict(saved["optimizer"])
    run.data.set_state(saved["data"])
    if run.scheduler is not None:
        run.scheduler.load_state_dict(saved["scheduler"])


def leaves(tree: Any, path: str = "") -> Iterator[tuple[str, Any]]:
    """(path, leaf) for every leaf of nested dicts, lists and tuples."""
    if isinstance(tree, dict):
        for key in sorted(tree, key=str):
            yield from leaves(tree[key], f"{path}/{key}")
    elif isinstance(tree, list | tuple):
        for i, item in enumerate(tree):
            yield from leaves(item, f"{path}/{i}")
    else:
        yield path, tree


def assert_identical(a: Any, b: Any) -> None:
    left, right = list(leaves(a)), list(leaves(b))
    assert [p for p, _ in left] == [p for p, _ in right]
    for (path, u), (_, v) in zip(left, right, strict=True):
        if isinstance(u, Tensor):
            assert isinstance(v, Tensor) and u.dtype == v.dtype, path
            assert torch.equal(u, v), f"{path} differs after resume"
        else:
            assert u == v, f"{path}: {u!r} != {v!r}"


def built(build: Build, seed: int) -> Run:
    """``build(seed)`` with torch's global generator seeded (model initialisation, and the
    seed an integrator built without one draws), restored afterwards."""
    with seeded(seed):
        return build(seed)


def check_resume(build: Build, k: int, tmp_path: Path, n: int = N_STEPS) -> None:
    straight = built(build, 0)
    train(straight, 0, n)

    interrupted = built(build, 0)
    train(interrupted, 0, k)
    path = tmp_path / "checkpoint.pt"
    torch.save(checkpoint(interrupted), path)
    del interrupted

    resumed = built(build, 1)  # another seed: whatever the checkpoint misses shows
    restore(resumed, torch.load(path, weights_only=True))
    train(resumed, k, n)

    for (name, p), (_, q) in zip(
        straight.model.named_parameters(), resumed.model.named_parameters(), strict=True
    ):
        assert torch.equal(p, q), f"parameter {name} differs after resume at step {k}"
    assert_identical(checkpoint(straight), checkpoint(resumed))


def data_generator(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(100 + seed)


# ---------------------------------------------------------------------------- integrators
def rsgd(nesterov: bool) -> Build:
    def build(seed: int) -> Run:
        model = constrained_mlp(seed)
        opt = geodyn.RiemannianSGD(
            model.parameters(), lr=0.1, momentum=0.9, nesterov=nesterov, weight_decay=1e-3
        )
        return Run(model, opt, StepLR(opt, step_size=4, gamma=0.5), data_generator(seed))

    return build


def splitting(scheme: str) -> Build:
    def build(seed: int) -> Run:
        model = constrained_mlp(seed)
        opt = geodyn.Splitting(
            model.parameters(), lr=0.05, gamma=2.0, tau=1e-3, scheme=scheme, seed=10 + seed
        )
        return Run(model, opt, ExponentialLR(opt, gamma=0.95), data_generator(seed))

    return build


def overdamped(seed: int) -> Run:
    model = constrained_mlp(seed)
    opt = geodyn.Overdamped(model.parameters(), lr=0.05, tau=1e-3, seed=10 + seed)
    return Run(model, opt, None, data_generator(seed))


def constrained_adam(seed: int) -> Run:
    model = constrained_mlp(seed)
    opt = geodyn.Constrained(torch.optim.Adam(model.parameters(), lr=0.01))
    return Run(model, opt, CosineAnnealingLR(opt, T_max=N_STEPS), data_generator(seed))


def balls_splitting(seed: int) -> Run:
    model = ball_mlp(seed)
    opt = geodyn.Splitting(model.parameters(), lr=0.05, tau=1e-3, seed=10 + seed)
    return Run(model, opt, None, data_generator(seed))


INTEGRATORS: dict[str, Build] = {
    "rsgd-momentum": rsgd(False),
    "rsgd-nesterov": rsgd(True),
    "baoab": splitting("BAOAB"),
    "aboba": splitting("ABOBA"),
    "obabo": splitting("OBABO"),
    "overdamped": overdamped,
    "constrained-adam": constrained_adam,
    "baoab-lp-sphere-ball": balls_splitting,
}


@pytest.mark.parametrize("k", [0, 1, 5, 11])
@pytest.mark.parametrize("name", list(INTEGRATORS))
def test_integrators_resume_bit_identically(name, k, tmp_path):
    check_resume(INTEGRATORS[name], k, tmp_path)


# ---------------------------------------------------------------------------- methods
WARMUP = 5


def lawn(base: str) -> Build:
    def build(seed: int) -> Run:
        model = constrained_mlp(seed)
        if base == "adam":
            inner: Optimizer = torch.optim.Adam(model.parameters(), lr=0.01, weight_decay=1e-3)
        else:
            inner = torch.optim.SGD(
                model.parameters(), lr=0.05, momentum=0.9, nesterov=True, weight_decay=1e-3
            )
        opt = geodyn.Lawn(inner, model, warmup_steps=WARMUP, per="neuron")
        return Run(model, opt, StepLR(opt, step_size=3, gamma=0.7), data_generator(seed))

    return build


@pytest.mark.parametrize("k", [2, WARMUP, WARMUP + 3])  # before, at and after the switch
@pytest.mark.parametrize("base", ["adam", "sgd"])
def test_lawn_resumes_across_its_switch(base, k, tmp_path):
    check_resume(lawn(base), k, tmp_path)


def test_lawn_per_layer_resumes_after_its_switch(tmp_path):
    def build(seed: int) -> Run:
        model = constrained_mlp(seed)
        inner = torch.optim.Adam(model.parameters(), lr=0.01)
        opt = geodyn.Lawn(inner, model, warmup_steps=WARMUP, layers=[model[6]], per="layer")
        return Run(model, opt, None, data_generator(seed))

    check_resume(build, WARMUP + 2, tmp_path)


def periodic(mode: str, base: str) -> Build:
    def build(seed: int) -> Run:
        model = constrained_mlp(seed)
        if base == "splitting":
            inner: Optimizer = geodyn.Splitting(
                model.parameters(), lr=0.05, tau=1e-3, seed=10 + seed
            )
        else:
            inner = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
        opt = geodyn.PeriodicSampling(
            inner, period=4, interval=2, mode=mode, last_k=1, beta=0.5, start=2
        )
        return Run(model, opt, StepLR(opt, step_size=5, gamma=0.5), data_generator(seed))

    return build


# start = 2, snapshots at steps 4, 6 (swap), 8, 10 (swap): k = 1 before the first period,
# 4 with one snapshot taken, 5 between snapshots, 6 just after a swap
@pytest.mark.parametrize("k", [1, 4, 5, 6])
@pytest.mark.parametrize("mode", ["pswa", "pwalks", "pswm"])
def test_periodic_sampling_resumes_with_its_snapshots(mode, k, tmp_path):
    check_resume(periodic(mode, "sgd"), k, tmp_path)


@pytest.mark.parametrize("k", [3, 5])
def test_periodic_sampling_over_a_sampler_resumes(k, tmp_path):
    check_resume(periodic("pswm", "splitting"), k, tmp_path)


def path_sgd(seed: int) -> Run:
    model = mlp(seed)
    opt = geodyn.PathSGD(model, lr=0.01, momentum=0.9, first_step_ratio=True)
    return Run(model, opt, StepLR(opt, step_size=4, gamma=0.5), data_generator(seed))


@pytest.mark.parametrize("k", [1, 6])
def test_path_sgd_resumes(k, tmp_path):
    check_resume(path_sgd, k, tmp_path)


def opt_model(variant: str, stochastic: bool) -> Build:
    def build(seed: int) -> Run:
        model = apply_opt(
            mlp(seed), variant, stochastic=stochastic,
            generator=torch.Generator().manual_seed(20 + seed),
        )
        if variant == "stiefel":
            opt: Optimizer = geodyn.RiemannianSGD(model.parameters(), lr=0.05, momentum=0.9)
        else:
            opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
        return Run(model, opt, None, data_generator(seed), episode=4 if stochastic else 0)

    return build


@pytest.mark.parametrize("k", [3, 4, 6])  # episodes start at steps 4 and 8
@pytest.mark.parametrize("variant", ["cayley", "stiefel"])
@pytest.mark.parametrize("stochastic", [False, True])
def test_opt_resumes(variant, stochastic, k, tmp_path):
    check_resume(opt_model(variant, stochastic), k, tmp_path)


# ---------------------------------------------------------------------------- group manifolds
def grouped(model: nn.Module) -> list[dict[str, Any]]:
    """Param groups that name their manifold (an object, not a tensor) instead of binding it."""
    oblique, stiefel = geodyn.Oblique(1.0, dim=-1), geodyn.Stiefel()
    with torch.no_grad():
        model[0].weight.copy_(oblique.project(model[0].weight))
        model[2].weight.copy_(stiefel.project(model[2].weight))
    named = [model[0].weight, model[2].weight]
    rest = [p for p in model.parameters() if all(p is not q for q in named)]
    return [
        {"params": [model[0].weight], "manifold": oblique},
        {"params": [model[2].weight], "manifold": stiefel},
        {"params": rest},
    ]


def lawn_over_groups(seed: int) -> Run:
    model = mlp(seed)
    opt = geodyn.Lawn(torch.optim.Adam(grouped(model), lr=0.01), model, warmup_steps=WARMUP)
    return Run(model, opt, None, data_generator(seed))


def periodic_over_groups(seed: int) -> Run:
    model = mlp(seed)
    inner = geodyn.Splitting(grouped(model), lr=0.05, tau=1e-3, seed=10 + seed)
    opt = geodyn.PeriodicSampling(inner, period=4, interval=2, mode="pswa", start=2)
    return Run(model, opt, None, data_generator(seed))


@pytest.mark.parametrize("k", [2, WARMUP + 3])
@pytest.mark.parametrize("build", [lawn_over_groups, periodic_over_groups])
def test_wrappers_keep_group_manifolds_out_of_the_checkpoint(build, k, tmp_path):
    check_resume(build, k, tmp_path)
    with seeded(0):
        run = build(0)
    manifolds = [g.get("manifold") for g in run.optimizer.param_groups]
    path = tmp_path / "groups.pt"
    torch.save(run.optimizer.state_dict(), path)
    run.optimizer.load_state_dict(torch.load(path, weights_only=True))
    assert [g.get("manifold") for g in run.optimizer.param_groups] == manifolds
    assert isinstance(manifolds[0], geodyn.Oblique)


def splitting_over_groups(seed: int) -> Run:
    model = mlp(seed)
    opt = geodyn.Splitting(grouped(model), lr=0.05, tau=1e-3, seed=10 + seed)
    return Run(model, opt, None, data_generator(seed))


def constrained_over_groups(seed: int) -> Run:
    model = mlp(seed)
    return Run(model, geodyn.Constrained(torch.optim.Adam(grouped(model), lr=0.01)), None,
               data_generator(seed))


@pytest.mark.parametrize("build", [splitting_over_groups, constrained_over_groups])
def test_integrators_with_group_manifolds_resume(build, tmp_path):
    check_resume(build, 5, tmp_path)


def test_opt_layer_refuses_a_checkpoint_without_its_generator():
    saved = apply_opt(mlp(0), stochastic=True, generator=torch.Generator()).state_dict()
    with pytest.raises(ValueError, match="coordinate generator"):
        apply_opt(mlp(0), stochastic=True).load_state_dict(saved)


# ---------------------------------------------------------------------------- docs, example
def test_docs_page_example_resumes_identically():
    namespace = run_python_blocks(ROOT / "docs" / "checkpoints.md")
    straight, resumed = namespace["straight"][0], namespace["model"]
    assert all(torch.equal(p, q) for p, q in zip(
        straight.parameters(), resumed.parameters(), strict=True))


def test_checkpoint_example_runs_and_resumes_identically(capsys):
    runpy.run_path(str(ROOT / "examples" / "checkpoint.py"), run_name="__main__")
    out = capsys.readouterr().out
    assert "bit-identical: True" in out
