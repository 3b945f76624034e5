"""The benchmark harness runs end to end on a tiny MLP and CNN and reports finite numbers."""

from __future__ import annotations

import importlib.util
import json
import math

import pytest
import torch

from benchmarks.cases import GEODYN_OPTIMIZERS, applicable
from benchmarks.measure import cholesky_qr, state_bytes
from benchmarks.models import mlp
from benchmarks.peers import RowFloor, StiefelFloor, peers
from benchmarks.run import benchmark, format_table, main

MANIFOLDS = ("Oblique rows", "CircleLift", "Stiefel qr", "Stiefel newton-schulz")
OPTIMIZERS = ("RSGD", "BAOAB", "Constrained(Adam)")
TIMED = ("step_ms", "ratio", "opt_step_ms", "state_bytes", "state_ratio")
TARGET = ("target_ref", "target_ref_ms", "target_ratio", "target_bound", "target_met")


@pytest.fixture(scope="module")
def result() -> dict:
    torch.set_num_threads(1)
    return benchmark(
        sizes=(6, 12, 12, 3),
        batch=4,
        cnn_channels=(1, 4, 8),
        image=8,
        manifolds=MANIFOLDS,
        optimizers=OPTIMIZERS,
        warmup=1,
        rounds=2,
        steps=1,
        dtype=torch.float64,
        log=lambda _: None,
    )


def _expected_absent() -> set[str]:
    absent = {p.name for p in peers()
              if importlib.util.find_spec(p.module) is None or p.float32_only}  # float64 run
    return absent


def test_every_case_is_reported_without_error(result: dict) -> None:
    assert [w["name"] for w in result["workloads"]] == ["MLP 6-12-12-3", "CNN 1-4-8 @8px"]
    assert set(OPTIMIZERS) <= set(GEODYN_OPTIMIZERS)
    for w in result["workloads"]:
        names = [rec["case"] for rec in w["records"]]
        expected = {f"{m} | {o}" for m in MANIFOLDS for o in OPTIMIZERS if applicable(m, o)}
        assert expected <= set(names)
        assert {"torch SGD", "torch Adam", "geoopt RSGD Sphere", "pogo-torch POGO",
                "torch.optim.Muon", "emerging ObliqueSGD"} <= set(names)
        assert sum(rec["kind"] == "floor" for rec in w["records"]) == 2
        errors = {rec["case"]: rec["error"] for rec in w["records"] if "error" in rec}
        assert errors == {}
        # a missing peer or retraction is reported, not fatal
        assert {rec["case"] for rec in w["records"] if "absent" in rec} == _expected_absent()


def test_records_have_finite_numbers_and_targets(result: dict) -> None:
    for w in result["workloads"]:
        refs = w["references"]
        assert {"sgd", "adam", "noise", "cholqr", "qr", "proj"} <= set(refs)
        assert all(math.isfinite(v) and v > 0 for v in refs.values())
        by_name = {rec["case"]: rec for rec in w["records"]}
        for rec in w["records"]:
            if "absent" in rec:
                continue
            for key in TIMED:
                assert math.isfinite(rec[key]), (rec["case"], key, rec[key])
            assert rec["step_ms"] > 0 and rec["opt_step_ms"] > 0
            assert rec["repeats"] == 2
            base = refs[rec["base"]]
            assert rec["ratio"] == pytest.approx(rec["step_ms"] / base)
            if "peer" in rec:
                peer = by_name[rec["peer"]]
                assert peer["kind"] == "peer" and peer["job"] == rec["job"]
                assert rec["peer_ratio"] == pytest.approx(rec["step_ms"] / peer["step_ms"])
            if rec["kind"] in ("geodyn", "floor"):
                # float64: every geodyn case and floor ends on its manifold
                assert rec["residual"] < 1e-8, (rec["case"], rec["residual"])
            if rec["kind"] != "geodyn" or "target_bound" not in rec:
                continue
            assert set(TARGET) <= set(rec)
            within = rec["target_ratio"] <= rec["target_bound"]
            if rec["case"] in ("Oblique rows | RSGD", "Oblique rows | Constrained(Adam)"):
                within = within and rec["peer_ratio"] <= 1.0
            assert rec["target_met"] == within
        assert "target_bound" in by_name["Stiefel qr | RSGD"]
        # the Stiefel minima count a projection at each point a step visits
        floor = refs["floor:orthonormal, SGD"]
        minima = {
            "Stiefel qr | BAOAB": floor + refs["noise"] + 2 * refs["proj"] + refs["cholqr"],
            "Stiefel qr | Constrained(Adam)": refs["adam"] + 3 * refs["proj"] + refs["cholqr"],
        }
        for name, minimum in minima.items():
            assert by_name[name]["target_ref_ms"] == pytest.approx(minimum)
        assert "2 proj" in by_name["Stiefel qr | BAOAB"]["target_ref"]
        assert by_name["Oblique rows | RSGD"]["target_bound"] == 1.10
        for name in ("torch SGD", "torch Adam"):
            assert by_name[name]["ratio"] == 1.0
        assert by_name["torch SGD"]["state_ratio"] == 1.0
        # a chain (peer on the hidden weights, torch SGD on the rest) counts both states
        assert by_name["pogo-torch POGO"]["state_ratio"] == pytest.approx(1.0)


def test_result_is_json_and_table_lists_every_case(result: dict) -> None:
    text = json.dumps(result)
    assert json.loads(text)["workloads"][0]["name"] == "MLP 6-12-12-3"
    table = format_table(result)
    for w in result["workloads"]:
        for rec in w["records"]:
            assert rec["case"] in table


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal without CUDA")
def test_cuda_is_refused_with_the_reason_when_there_is_none(capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(RuntimeError, match="no CUDA device"):
        benchmark(sizes=(4, 4, 2), device="cuda", log=lambda _: None)
    with pytest.raises(SystemExit):
        main(["--quick", "--device", "cuda"])
    assert "no CUDA device" in capsys.readouterr().err


def _first_step(floor_cls: type, project: object) -> tuple[torch.Tensor, torch.Tensor]:
    wl = mlp(sizes=(5, 7, 3), batch=4)
    w = wl.hidden[0].weight
    with torch.no_grad():
        w.copy_(project(w.double()).float())  # type: ignore[operator]
    x0 = w.detach().clone()
    opt = floor_cls(wl)
    wl.loss().backward()
    g = w.grad.detach().clone()
    opt.step()
    return x0, g, w.detach()


def test_the_floors_take_one_riemannian_sgd_step() -> None:
    import geoopt

    from geodyn.manifolds import Stiefel

    # first step: momentum buffer = Riemannian gradient, then one retraction
    sphere = geoopt.Sphere()
    x0, g, x1 = _first_step(RowFloor, lambda w: w / w.norm(dim=-1, keepdim=True))
    expected = sphere.retr(x0, -1e-2 * sphere.proju(x0, g))
    torch.testing.assert_close(x1, expected, rtol=1e-5, atol=1e-6)
    stiefel = Stiefel(retraction="qr")
    x0, g, x1 = _first_step(StiefelFloor, stiefel.project)
    xt, gt = x0.mT.double(), g.mT.double()
    expected = stiefel.retract(xt, -1e-2 * stiefel.proj_tangent(xt, gt)).mT
    torch.testing.assert_close(x1, expected.float(), rtol=1e-5, atol=1e-5)


def test_state_bytes_counts_sgd_momentum_once_per_parameter() -> None:
    params = [torch.zeros(3, 4, dtype=torch.float64, requires_grad=True),
              torch.zeros(5, dtype=torch.float32, requires_grad=True)]
    opt = torch.optim.SGD(params, lr=0.1, momentum=0.9)
    assert state_bytes(opt) == 0
    for p in params:
        p.grad = torch.ones_like(p)
    opt.step()
    assert state_bytes(opt) == 12 * 8 + 5 * 4


def test_cholesky_qr_gives_an_orthonormal_factor_of_the_same_span() -> None:
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(2, 9, 4, dtype=torch.float64, generator=gen)
    q = cholesky_qr(x)
    eye = torch.eye(4, dtype=torch.float64)
    torch.testing.assert_close(q.mT @ q, eye.expand(2, 4, 4))
    torch.testing.assert_close(q @ (q.mT @ x), x)


def test_the_reference_case_cannot_be_skipped() -> None:
    with pytest.raises(ValueError, match="torch SGD"):
        benchmark(sizes=(4, 4, 2), skip_baselines=("torch SGD",), log=lambda _: None)
