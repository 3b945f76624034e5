"""geodyn under torch.distributed: DDP replicas stay bit-identical, sharded points are refused.

One launch of two CPU processes (gloo, loopback) runs every distributed case; each rank
writes its results to a file and the tests below read them.
"""

from __future__ import annotations

import os
import socket
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from doc_examples import run_python_blocks
from torch import nn

import geodyn
from geodyn.integrators._sharding import check_unsharded, coupled_dims

pytestmark = pytest.mark.skipif(
    not (dist.is_available() and dist.is_gloo_available()), reason="needs torch.distributed gloo"
)

WORLD = 2
STEPS = 50
SEED = 1234
LAUNCH_TIMEOUT_S = 150.0


# ---------------------------------------------------------------------- the training job
def _model() -> nn.Module:
    """Unit-norm neurons (oblique rows) feeding an orthogonal (Stiefel) read-out."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(5, 6), nn.Tanh(), nn.Linear(6, 3)).double()
    geodyn.unit_norm_neurons(model[0])
    geodyn.orthogonal(model[2])
    return model


def _batch(rank: int) -> tuple[torch.Tensor, torch.Tensor]:
    """A different batch on every rank."""
    g = torch.Generator().manual_seed(100 + rank)
    return (
        torch.randn(8, 5, generator=g, dtype=torch.float64),
        torch.randn(8, 3, generator=g, dtype=torch.float64),
    )


def _train(model: nn.Module, loss_fn: Any, seed: int) -> dict[str, torch.Tensor]:
    """STEPS steps of constrained underdamped Langevin (BAOAB, tau > 0)."""
    opt = geodyn.Splitting(model.parameters(), lr=0.05, gamma=1.0, tau=1e-3, seed=seed)
    for _ in range(STEPS):
        opt.zero_grad()
        loss_fn(model).backward()
        opt.step()
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def _train_ddp(rank: int, seed: int) -> dict[str, torch.Tensor]:
    ddp = nn.parallel.DistributedDataParallel(_model())
    x, y = _batch(rank)
    _train(ddp, lambda m: nn.functional.mse_loss(m(x), y), seed)
    return {k: v.detach().clone() for k, v in ddp.module.state_dict().items()}


# ---------------------------------------------------------------------- sharded parameters
def _refusal(param: torch.Tensor, manifold: geodyn.Manifold) -> str | None:
    """check_unsharded's message, or None when it passes."""
    try:
        check_unsharded(param, manifold)
    except ValueError as err:
        return str(err)
    return None


def _dtensor_cases() -> dict[str, str | None]:
    from torch.distributed.tensor import Replicate, Shard, distribute_tensor, init_device_mesh

    mesh = init_device_mesh("cpu", (WORLD,))
    cases = {
        # name: (manifold, shape); every dimension is tried as the sharded one
        "Sphere": (geodyn.Sphere(), (8, 6)),
        "Sphere3d": (geodyn.Sphere(), (2, 4, 6)),
        "LpSphere": (geodyn.LpSphere(3.0), (8, 6)),
        "NormBall": (geodyn.NormBall(1.0), (8, 6)),
        "CircleLift": (geodyn.CircleLift(1.0), (8, 6, 2)),
        "Euclidean": (geodyn.Euclidean(), (8, 6)),
        "Stiefel": (geodyn.Stiefel(), (8, 6)),
        "Product": (geodyn.Product((geodyn.Sphere(), (3,)), (geodyn.Stiefel(), (4, 2))), (4, 11)),
        "ObliqueRows": (geodyn.Oblique(dim=-1), (8, 6)),
        "ObliqueCols": (geodyn.Oblique(dim=-2), (8, 6)),
    }
    out: dict[str, str | None] = {}
    for name, (manifold, shape) in cases.items():
        x = torch.randn(shape, dtype=torch.float64)
        for d in range(len(shape)):
            t = distribute_tensor(x, mesh, [Shard(d)])
            out[f"{name}/Shard({d})"] = _refusal(t, manifold)
        t = distribute_tensor(x, mesh, [Replicate()])
        out[f"{name}/Replicate"] = _refusal(t, manifold)
    return out


def _fsdp_cases() -> dict[str, Any]:
    from torch.distributed.fsdp import FullyShardedDataParallel, fully_shard

    out: dict[str, Any] = {}
    for orig in (False, True):
        model = FullyShardedDataParallel(
            _model(), device_id=torch.device("cpu"), use_orig_params=orig
        )
        params = [p for p in model.parameters() if p.numel()]
        out[f"fsdp1/orig={orig}/sphere"] = [_refusal(p, geodyn.Sphere()) for p in params]
        out[f"fsdp1/orig={orig}/euclidean"] = [_refusal(p, geodyn.Euclidean()) for p in params]
        out[f"fsdp1/orig={orig}/shapes"] = [tuple(p.shape) for p in params]
    model = _model()
    fully_shard(model)
    w = model[0].weight
    out["fsdp2/placements"] = repr(tuple(w.placements))
    out["fsdp2/keeps_manifold"] = hasattr(w, "manifold")
    out["fsdp2/oblique_rows"] = _refusal(w, geodyn.Oblique(dim=-1))
    out["fsdp2/stiefel"] = _refusal(w, geodyn.Stiefel())
    return out


FSDP2_STEPS = 10


def _fsdp2_groups(model: nn.Module, manifold: geodyn.Manifold) -> list[dict[str, Any]]:
    """fully_shard drops the ManifoldParameter binding: name the manifold in a group."""
    w = model[0].weight
    return [{"params": [w], "manifold": manifold},
            {"params": [p for p in model.parameters() if p is not w]}]


def _fsdp2_optimizers(model: nn.Module, rank: int) -> dict[str, torch.optim.Optimizer]:
    groups = _fsdp2_groups(model, geodyn.Sphere())
    return {
        "rsgd": geodyn.RiemannianSGD(groups, lr=0.05, momentum=0.9),
        # each rank holds other rows: independent noise needs a seed per rank
        "baoab": geodyn.Splitting(groups, lr=0.05, tau=1e-3, seed=SEED + rank),
        "adam": geodyn.Constrained(torch.optim.Adam(groups, lr=0.01)),
    }


def _fsdp2_train(rank: int) -> dict[str, Any]:
    """Sphere rows of a fully_shard-ed weight, stepped on each rank's local shard."""
    from torch.distributed.fsdp import fully_shard

    out: dict[str, Any] = {}
    for name in ("rsgd", "baoab", "adam"):
        model = _sphere_model()
        fully_shard(model)
        opt = _fsdp2_optimizers(model, rank)[name]
        x, y = _batch(rank)
        for _ in range(FSDP2_STEPS):
            opt.zero_grad()
            nn.functional.mse_loss(model(x), y).backward()
            opt.step()
        out[name] = {k: v.full_tensor().detach().clone() for k, v in model.state_dict().items()}
    stiefel = _sphere_model()
    fully_shard(stiefel)
    opt = geodyn.RiemannianSGD(_fsdp2_groups(stiefel, geodyn.Stiefel()), lr=0.05)
    x, y = _batch(rank)
    nn.functional.mse_loss(stiefel(x), y).backward()
    try:
        opt.step()
        out["stiefel"] = None
    except ValueError as err:
        out["stiefel"] = str(err)
    return out


def _fsdp2_faults(rank: int) -> dict[str, Any]:
    """A NaN in rank 0's shard only: every rank must skip (or raise) the step together."""
    from torch.distributed.fsdp import fully_shard

    out: dict[str, Any] = {}
    for name in ("rsgd", "constrained"):
        model = _sphere_model()
        fully_shard(model)
        groups = _fsdp2_groups(model, geodyn.Sphere())
        opt: torch.optim.Optimizer = (
            geodyn.RiemannianSGD(groups, lr=0.05, momentum=0.9, nonfinite="skip")
            if name == "rsgd"
            else geodyn.Constrained(torch.optim.SGD(groups, lr=0.05), nonfinite="raise")
        )
        x, y = _batch(rank)
        nn.functional.mse_loss(model(x), y).backward()
        w = model[0].weight
        if rank == 0:
            w.grad.to_local()[0, 0] = float("nan")
        before = w.to_local().detach().clone()
        try:
            opt.step()
            out[name] = "stepped"
        except geodyn.NonFiniteError:
            out[name] = "raised"
        out[f"{name}/unchanged"] = torch.equal(w.to_local().detach(), before)
    # Oblique(dim=-1) has ndim 2: its point shape is the local row shard's, not the weight's
    oblique = _sphere_model()
    fully_shard(oblique)
    w = oblique[0].weight
    opt = geodyn.RiemannianSGD(_fsdp2_groups(oblique, geodyn.Oblique(dim=-1)), lr=0.05)
    x, y = _batch(rank)
    nn.functional.mse_loss(oblique(x), y).backward()
    opt.step()
    out["oblique_rows"] = w.full_tensor().detach().clone()
    return out


def _sphere_model() -> nn.Module:
    """An (8, 5) hidden weight with unit rows, not bound (fully_shard would drop it)."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(5, 8), nn.Tanh(), nn.Linear(8, 3)).double()
    with torch.no_grad():
        model[0].weight.copy_(geodyn.Sphere().project(model[0].weight))
    return model


# ---------------------------------------------------------------------- launching
def _worker(rank: int, world: int, port: int, out_dir: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world, timeout=timedelta(seconds=60))
    try:
        results = {
            "same_seed": _train_ddp(rank, seed=SEED),
            "rank_seed": _train_ddp(rank, seed=SEED + rank),
            "dtensor": _dtensor_cases(),
            "fsdp": _fsdp_cases(),
            "fsdp2_train": _fsdp2_train(rank),
            "fsdp2_faults": _fsdp2_faults(rank),
        }
        torch.save(results, Path(out_dir) / f"rank{rank}.pt")
    finally:
        dist.destroy_process_group()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _launch(out_dir: Path) -> list[dict[str, Any]]:
    """Run ``_worker`` on WORLD spawned processes; fail clearly on an error or a hang."""
    ctx = mp.start_processes(
        _worker,
        args=(WORLD, _free_port(), str(out_dir)),
        nprocs=WORLD,
        join=False,
        start_method="spawn",
    )
    deadline = time.monotonic() + LAUNCH_TIMEOUT_S
    try:
        while not ctx.join(timeout=max(0.1, deadline - time.monotonic())):
            if time.monotonic() >= deadline:
                pytest.fail(f"distributed workers still running after {LAUNCH_TIMEOUT_S:.0f} s")
    except mp.ProcessRaisedException as err:
        pytest.fail(f"a distributed worker raised:\n{err}")
    except mp.ProcessExitedException as err:
        pytest.fail(f"a distributed worker died: {err}")
    finally:
        for proc in ctx.processes:
            if proc.is_alive():
                proc.kill()
                proc.join()
    return [torch.load(out_dir / f"rank{r}.pt", weights_only=True) for r in range(WORLD)]


@pytest.fixture(scope="module")
def ranks(tmp_path_factory: pytest.TempPathFactory) -> list[dict[str, Any]]:
    return _launch(tmp_path_factory.mktemp("distributed"))


# ---------------------------------------------------------------------- DDP
def test_ddp_replicas_identical_and_on_manifold(ranks: list[dict[str, Any]]) -> None:
    a, b = ranks[0]["same_seed"], ranks[1]["same_seed"]
    assert a.keys() == b.keys()
    for name in a:
        assert torch.equal(a[name], b[name]), f"{name} differs between ranks"
    model = _model()
    model.load_state_dict(a)
    res = geodyn.residuals(model)
    assert set(res) == {"0.weight", "2.weight"}
    for name, p in geodyn.constraints.constrained_parameters(model).items():
        ok, reason = p.manifold.check_point(p.detach())
        assert ok, f"{name}: {reason}"


def test_ddp_averages_gradients(ranks: list[dict[str, Any]]) -> None:
    """The DDP run equals one process stepping on the mean of the ranks' losses."""
    batches = [_batch(r) for r in range(WORLD)]

    def mean_loss(m: nn.Module) -> torch.Tensor:
        return sum(nn.functional.mse_loss(m(x), y) for x, y in batches) / WORLD

    reference = _train(_model(), mean_loss, SEED)
    ddp = ranks[0]["same_seed"]
    moved = max(float((reference[k] - _model().state_dict()[k]).abs().max()) for k in reference)
    assert moved > 1e-2  # the run is not a no-op
    for name in reference:
        # allreduce sums in another order than autograd: rounding, amplified over 50 steps
        torch.testing.assert_close(ddp[name], reference[name], rtol=0, atol=1e-9)
    rank0_only = _train(
        _model(), lambda m: nn.functional.mse_loss(m(batches[0][0]), batches[0][1]), SEED
    )
    assert max(float((ddp[k] - rank0_only[k]).abs().max()) for k in ddp) > 1e-3


def test_ddp_different_seeds_per_rank_split_the_replicas(ranks: list[dict[str, Any]]) -> None:
    a, b = ranks[0]["rank_seed"], ranks[1]["rank_seed"]
    gap = max(float((a[k] - b[k]).abs().max()) for k in a)
    assert gap > 1e-3, f"replicas with different noise seeds agree to {gap:.1e}"


# ---------------------------------------------------------------------- check_unsharded
RAISES = {
    "Sphere": {1},
    "Sphere3d": {2},
    "LpSphere": {1},
    "NormBall": {1},
    "CircleLift": {2},
    "Euclidean": set(),
    "Stiefel": {0, 1},
    "Product": {1},
    "ObliqueRows": {1},
    "ObliqueCols": {0},
}


@pytest.mark.parametrize("name", sorted(RAISES))
def test_dtensor_sharded_along_a_point_is_refused(ranks: list[dict[str, Any]], name: str) -> None:
    cases = ranks[0]["dtensor"]
    sharded = {k: v for k, v in cases.items() if k.startswith(f"{name}/Shard(")}
    assert sharded
    refused = {int(k[len(name) + 7 : -1]) for k, v in sharded.items() if v is not None}
    assert refused == RAISES[name]
    assert cases[f"{name}/Replicate"] is None
    for key, msg in sharded.items():
        if msg is not None:
            assert "sharded along dimension" in msg and "keep this module unsharded" in msg, key
            assert "ignored_params" in msg and "Replicate()" in msg, key


def test_oblique_points_split_across_rows_or_columns_are_refused(
    ranks: list[dict[str, Any]],
) -> None:
    cases = ranks[0]["dtensor"]
    assert cases["ObliqueRows/Shard(1)"] is not None
    assert cases["ObliqueCols/Shard(0)"] is not None
    assert "Oblique(1.0, -2)" in cases["ObliqueCols/Shard(0)"]
    assert "(8, 6)" in cases["ObliqueCols/Shard(0)"]


def test_fsdp1_flattened_parameters_are_refused(ranks: list[dict[str, Any]]) -> None:
    for r in ranks:
        fsdp = r["fsdp"]
        for orig in (False, True):
            shapes = fsdp[f"fsdp1/orig={orig}/shapes"]
            assert shapes and all(len(s) == 1 for s in shapes)  # FSDP1 holds 1-D slices
            assert all(m is not None and "FSDP1" in m for m in fsdp[f"fsdp1/orig={orig}/sphere"])
            assert fsdp[f"fsdp1/orig={orig}/euclidean"] == [None] * len(shapes)


def test_fsdp2_row_shards_pass_and_lose_the_binding(ranks: list[dict[str, Any]]) -> None:
    fsdp = ranks[0]["fsdp"]
    assert fsdp["fsdp2/placements"] == "(Shard(dim=0),)"
    assert fsdp["fsdp2/keeps_manifold"] is False  # fully_shard re-wraps as a plain Parameter
    assert fsdp["fsdp2/oblique_rows"] is None
    assert fsdp["fsdp2/stiefel"] is not None


def test_fsdp2_row_shards_train_like_one_process(ranks: list[dict[str, Any]]) -> None:
    """Deterministic steps on local row shards equal one process on the mean loss."""
    batches = [_batch(r) for r in range(WORLD)]
    for name in ("rsgd", "adam"):
        model = _sphere_model()
        opt = _fsdp2_optimizers(model, 0)[name]
        for _ in range(FSDP2_STEPS):
            opt.zero_grad()
            loss = sum(nn.functional.mse_loss(model(x), y) for x, y in batches) / WORLD
            loss.backward()
            opt.step()
        for key, value in model.state_dict().items():
            for r in ranks:
                torch.testing.assert_close(r["fsdp2_train"][name][key], value, rtol=0, atol=1e-12)


def test_fsdp2_row_shards_stay_on_the_sphere(ranks: list[dict[str, Any]]) -> None:
    for name in ("rsgd", "baoab", "adam"):
        w = ranks[0]["fsdp2_train"][name]["0.weight"]
        assert torch.equal(w, ranks[1]["fsdp2_train"][name]["0.weight"])
        assert float(geodyn.Sphere().residual(w)) < 1e-12, name


def test_fsdp2_stiefel_shards_are_refused_by_the_integrator(ranks: list[dict[str, Any]]) -> None:
    for r in ranks:
        msg = r["fsdp2_train"]["stiefel"]
        assert msg is not None and "sharded along dimension" in msg and "Stiefel" in msg


def test_fsdp2_a_fault_on_one_shard_stops_every_rank(ranks: list[dict[str, Any]]) -> None:
    for r in ranks:
        faults = r["fsdp2_faults"]
        assert faults["rsgd"] == "stepped"  # skipped with a warning, on both ranks
        assert faults["rsgd/unchanged"] is True
        assert faults["constrained"] == "raised"
        assert faults["constrained/unchanged"] is True


def test_fsdp2_oblique_rows_step_on_row_shards(ranks: list[dict[str, Any]]) -> None:
    model = _sphere_model()
    batches = [_batch(r) for r in range(WORLD)]
    opt = geodyn.RiemannianSGD(_fsdp2_groups(model, geodyn.Oblique(dim=-1)), lr=0.05)
    (sum(nn.functional.mse_loss(model(x), y) for x, y in batches) / WORLD).backward()
    opt.step()
    for r in ranks:
        torch.testing.assert_close(r["fsdp2_faults"]["oblique_rows"], model[0].weight.detach(),
                                   rtol=0, atol=1e-12)


# ---------------------------------------------------------------------- without a process group
def test_plain_tensors_pass() -> None:
    for manifold in (geodyn.Stiefel(), geodyn.Sphere(), geodyn.Euclidean()):
        check_unsharded(torch.zeros(4, 3), manifold)


def test_fsdp1_flag_is_refused_off_euclidean() -> None:
    p = nn.Parameter(torch.zeros(10))
    p._fsdp_flattened = True  # type: ignore[attr-defined]
    with pytest.raises(ValueError, match=r"shape \(10,\) was flattened by FSDP1.*Sphere"):
        check_unsharded(p, geodyn.Sphere())
    check_unsharded(p, geodyn.Euclidean())


def test_coupled_dims() -> None:
    assert coupled_dims(geodyn.Stiefel(), 3) == (1, 2)
    assert coupled_dims(geodyn.Sphere(), 3) == (2,)
    assert coupled_dims(geodyn.Euclidean(), 2) == ()
    assert coupled_dims(geodyn.Oblique(dim=-1), 2) == (1,)
    assert coupled_dims(geodyn.Oblique(dim=-2), 2) == (0,)


def test_docs_example_trains_on_a_one_process_group(monkeypatch: pytest.MonkeyPatch) -> None:
    page = Path(__file__).resolve().parents[1] / "docs" / "distributed.md"
    train = run_python_blocks(page)["train"]
    monkeypatch.setenv("MASTER_ADDR", "127.0.0.1")
    monkeypatch.setenv("MASTER_PORT", str(_free_port()))
    model = train(0, 1, steps=5)
    assert not dist.is_initialized()
    res = geodyn.residuals(model)
    assert set(res) == {"0.weight", "2.weight"}
    assert max(res.values()) < 1e-5  # float32 check_point tolerance
