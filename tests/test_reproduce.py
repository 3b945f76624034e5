"""``geodyn reproduce``: the verdict rule, the paired interval, MNIST-1D against its own
generator, and a tiny suite end to end (schema, verdicts recomputed from the intervals)."""

from __future__ import annotations

import json
import math
import random
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from scipy import stats

from geodyn.cli import main, reproduce
from geodyn.compare import data as data_mod
from geodyn.compare import suite as suites
from geodyn.compare.stats import VERDICTS, paired_interval, verdict

# ---------------------------------------------------------------- the verdict rule


@pytest.mark.parametrize(
    ("low", "high", "direction", "expected"),
    [
        (0.1, 0.5, 1, "reproduced"),
        (0.1, 0.5, -1, "contradicted"),
        (-0.5, -0.1, -1, "reproduced"),
        (-0.5, -0.1, 1, "contradicted"),
        (-0.1, 0.1, 1, "inconclusive"),
        (-0.1, 0.1, -1, "inconclusive"),
        (0.0, 0.5, 1, "inconclusive"),  # an interval ending at 0 does not exclude it
        (-0.5, 0.0, -1, "inconclusive"),
        (0.0, 0.0, 1, "inconclusive"),
        (1e-12, 1e-12, 1, "reproduced"),  # a degenerate interval off 0
        (-3.0, -3.0, 1, "contradicted"),
    ],
)
def test_verdict_reads_the_interval_against_the_claimed_sign(
    low: float, high: float, direction: int, expected: str
) -> None:
    assert verdict(low, high, direction) == expected


@pytest.mark.parametrize(
    ("low", "high", "direction", "needle"),
    [
        (0.1, 0.5, 0, "direction must be"),
        (0.1, 0.5, 2, "direction must be"),
        (0.5, 0.1, 1, "low <= high"),
        (math.nan, 0.1, 1, "finite interval"),
        (-math.inf, 0.1, 1, "finite interval"),
    ],
)
def test_verdict_rejects_bad_input(low: float, high: float, direction: int, needle: str) -> None:
    with pytest.raises(ValueError, match=needle):
        verdict(low, high, direction)


def test_paired_interval_matches_scipys_one_sample_t_test() -> None:
    rng = np.random.default_rng(3)
    for n in (2, 5, 12):
        d = rng.normal(0.3, 1.0, size=n)
        ci = paired_interval(list(d))
        oracle = stats.ttest_1samp(d, 0.0).confidence_interval(0.95)
        assert ci.n == n and ci.mean == pytest.approx(d.mean(), abs=1e-12)
        assert (ci.low, ci.high) == pytest.approx((oracle.low, oracle.high), abs=1e-12)


def test_paired_interval_edge_cases() -> None:
    flat = paired_interval([0.25] * 5)  # no spread: the interval is the point
    assert (flat.low, flat.mean, flat.high) == (0.25, 0.25, 0.25)
    with pytest.raises(ValueError, match="at least 2"):
        paired_interval([1.0])
    with pytest.raises(ValueError, match="finite"):
        paired_interval([1.0, math.nan])
    with pytest.raises(ValueError, match="confidence"):
        paired_interval([1.0, 2.0], confidence=1.0)


# ---------------------------------------------------------------- MNIST-1D


def test_mnist1d_equals_the_packages_generator_and_is_cached(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from mnist1d.data import get_dataset_args, make_dataset

    random.seed(123)
    np.random.seed(123)
    before = (random.random(), float(np.random.random_sample()))
    random.seed(123)
    np.random.seed(123)
    monkeypatch.setenv(data_mod.CACHE_ENV, str(tmp_path))
    data = data_mod.mnist1d(seed=0)
    # mnist1d reseeds Python's and NumPy's generators: ours are left as they were
    assert (random.random(), float(np.random.random_sample())) == before

    reference = make_dataset(get_dataset_args())  # the package's own output, run here
    assert data.x_test.numpy().tolist() == reference["x_test"].astype(np.float32).tolist()
    assert data.y_test.numpy().tolist() == reference["y_test"].tolist()
    # train + validation is the generator's training set, split without overlap
    assert len(data.x_train) == 3500 and len(data.x_val) == 500
    ours = np.concatenate([data.x_train.numpy(), data.x_val.numpy()])
    theirs = reference["x"].astype(np.float32)
    assert sorted(map(tuple, ours)) == sorted(map(tuple, theirs))
    labels = {tuple(x): y for x, y in zip(theirs, reference["y"], strict=True)}
    for x, y in zip(data.x_train.numpy(), data.y_train.numpy(), strict=True):
        assert labels[tuple(x)] == y
    assert not set(map(tuple, data.x_val.numpy())) & set(map(tuple, data.x_train.numpy()))
    assert not set(map(tuple, data.x_test.numpy())) & set(map(tuple, ours))

    # built once: the second load reads the cache file and never calls the generator
    assert len(list(tmp_path.glob("mnist1d-*.npz"))) == 1
    assert not list(tmp_path.glob("*.tmp"))

    def fail() -> dict[str, Any]:
        raise AssertionError("regenerated although cached")

    monkeypatch.setattr(data_mod, "generate_mnist1d", fail)
    again = data_mod.mnist1d(seed=0)
    assert bool((again.x_train == data.x_train).all())


# ---------------------------------------------------------------- a tiny suite end to end

TINY_ARMS = (
    suites.Arm("paper-linear", "adam", model="linear", epochs=1, config={"lr": 0.01}),
    suites.Arm("sgd", "sgd", epochs=2, grid={"lr": (0.02, 0.05)}),
    suites.Arm("opt", "opt", epochs=2, grid={"lr": (0.02, 0.05)}),
    suites.Arm("pswa", "pswa", epochs=2, grid={"lr": (0.02, 0.05)},
               config={"period": 8, "interval": 2, "start": 8}),
)
TINY = suites.Suite(
    "tiny", "a test-sized suite", TINY_ARMS,
    (suites.Baseline("logistic regression", "paper-linear", 0.32),),
    tuple(c for c in suites.CLAIMS_MLP
          if {k for _, k in c.terms} <= {"sgd", "opt", "pswa"}),
)

CLAIM_KEYS = {"paper", "claim", "metric", "metric_label", "direction", "terms", "effects", "n",
              "mean", "low", "high", "verdict"}
BASELINE_KEYS = {"model", "arm", "published", "source", "recipe", "n", "mean", "low", "high",
                 "within_tolerance", "tolerance"}


def test_suites_are_well_formed() -> None:
    for suite in suites.SUITES.values():
        suite.validate()  # equal grid sizes within every claim, known arms and metrics
        assert suite.dataset == "mnist1d"
    full = suites.SUITES["full"]
    papers = {c.paper.split(" (")[0].split(" et al")[0] for c in full.claims}
    assert {"Leimkuhler", "OPT", "LAWN", "Path-SGD", "periodic sampling", "Lp sphere"} <= papers
    with pytest.raises(ValueError, match="grids differ"):
        suites.Suite("bad", "", (suites.Arm("a", "sgd", grid={"lr": (0.1, 0.2)}),
                                 suites.Arm("b", "adam")), (),
                     (suites.Claim("p", "c", "test_acc", ((1.0, "a"), (-1.0, "b")), 1),)
                     ).validate()


def test_reproduce_end_to_end(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "res"
    reproduce(TINY, seeds=2, out=out, workers=1, quiet=True)
    printed = capsys.readouterr().out
    assert "Published MNIST-1D baselines" in printed and "logistic regression" in printed
    assert "verdict" in printed and "OPT beats standard training" in printed
    results = json.loads((out / "results.json").read_text())
    assert set(results) == {"settings", "summary", "versions", "wall_time_s", "baselines",
                            "claims", "arms", "runs"}
    assert results["settings"]["seeds"] == 2 and results["settings"]["dataset"] == "mnist1d"
    assert len(results["runs"]) == 2 * (1 + 2 + 2 + 2)
    assert [c["claim"] for c in results["claims"]] == [c.claim for c in TINY.claims]

    runs = {(r["arm"], r["point"], r["seed"]): r for r in results["runs"]}
    for key, arm in results["arms"].items():
        # the selected grid point has the best mean validation accuracy
        best = max(arm["grid"], key=lambda g: g["mean_val_acc"])
        assert arm["selected"] == best["config"]
        point = arm["grid"].index(best)
        for i, g in enumerate(arm["grid"]):
            vals = [runs[(key, i, s)]["epochs"][-1]["val_acc"] for s in (0, 1)]
            assert g["mean_val_acc"] == pytest.approx(float(np.mean(vals)))
        assert "residual_trace" in runs[(key, point, 0)]

    for claim in results["claims"]:
        assert set(claim) == CLAIM_KEYS
        # the effects are recomputed from the selected runs, the interval from the effects
        # and the verdict from the interval
        for seed, effect in claim["effects"].items():
            total = 0.0
            for term in claim["terms"]:
                arm = results["arms"][term["arm"]]
                point = arm["grid"].index(next(g for g in arm["grid"]
                                               if g["config"] == arm["selected"]))
                total += term["coef"] * suites.metric(claim["metric"],
                                                      runs[(term["arm"], point, int(seed))])
            assert effect == pytest.approx(total, abs=1e-9)
        ci = paired_interval(list(claim["effects"].values()))
        assert (claim["mean"], claim["low"], claim["high"]) == pytest.approx(
            (ci.mean, ci.low, ci.high), abs=1e-9)
        assert claim["verdict"] in VERDICTS
        assert claim["verdict"] == verdict(claim["low"], claim["high"], claim["direction"])

    (baseline,) = results["baselines"]
    assert set(baseline) == BASELINE_KEYS
    accs = [runs[("paper-linear", 0, s)]["epochs"][-1]["test_acc"] for s in (0, 1)]
    assert baseline["mean"] == pytest.approx(float(np.mean(accs)))
    assert baseline["within_tolerance"] == (abs(baseline["mean"] - 0.32) <= 0.03)

    md = (out / "results.md").read_text()
    assert "| paper | claim | metric |" in md and "## Published baselines" in md
    for name in ("forest.png", "learning_curves.png", "residual.png", "weight_norm.png"):
        assert (out / name).stat().st_size > 10_000, name

    # the journal: a resumed run trains nothing again and gives the same claims
    journal = out / "runs.jsonl"
    assert len(journal.read_text().splitlines()) == len(results["runs"])
    reproduce(TINY, seeds=2, out=out, workers=1, quiet=True, resume=True)
    again = json.loads((out / "results.json").read_text())
    assert again["claims"] == results["claims"]
    assert again["wall_time_s"] < results["wall_time_s"]


def test_parallel_workers_give_the_same_runs(tmp_path: Path) -> None:
    small = suites.Suite("pair", "", TINY_ARMS[1:3], (), TINY.claims[:1])
    one = suites.execute(small, 2, workers=1)
    two = suites.execute(small, 2, workers=2)
    strip = [{k: v for k, v in r.items() if k not in ("epochs", "summary")}
             | {"acc": [e["test_acc"] for e in r["epochs"]]} for r in one]
    assert strip == [{k: v for k, v in r.items() if k not in ("epochs", "summary")}
                     | {"acc": [e["test_acc"] for e in r["epochs"]]} for r in two]


def test_reproduce_cli_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["reproduce", "--seeds", "1", "--out", str(tmp_path / "r")]) == 2
    assert "--seeds must be at least 2" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["reproduce", "--suite", "nosuch"])
    assert "invalid choice: 'nosuch'" in capsys.readouterr().err
