"""End-to-end tests of ``geodyn compare`` on a tiny budget, and of its bad-input errors."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import matplotlib.image as mpimg
import pytest
import torch

from geodyn.cli import main
from geodyn.compare import data as data_mod
from geodyn.compare.methods import METHODS, Method
from geodyn.compare.runner import RunSpec, run

TINY = ["--epochs", "1", "--seeds", "1", "--quiet"]

RUN_KEYS = {
    "method": str, "seed": int, "config": dict, "diverged": bool,
    "constrained_parameters": int, "epochs": list, "residual_trace": list, "summary": dict,
}
EPOCH_KEYS = {
    "epoch": int, "steps": int, "train_loss": float, "train_acc": float, "val_loss": float,
    "val_acc": float, "test_loss": float, "test_acc": float, "gap": float,
    "time_per_step": float, "residual": float, "weight_norm": float, "energy": float,
}
SUMMARY_KEYS = {
    "final_test_acc": float, "best_test_acc": float, "final_test_loss": float,
    "final_gap": float, "final_val_acc": float, "time_per_step": float, "max_residual": float,
    "diverged": bool,
}
SETTINGS_KEYS = {
    "dataset": str, "model": str, "methods": list, "method_config": dict, "epochs": int,
    "seeds": int, "batch_size": int, "device": str, "out": str,
}


def _check_keys(obj: dict[str, Any], schema: dict[str, type], where: str) -> None:
    assert set(obj) == set(schema), f"{where}: keys {sorted(obj)} != {sorted(schema)}"
    for key, kind in schema.items():
        value = obj[key]
        if kind is float:
            assert isinstance(value, (int, float)) and not isinstance(value, bool), (where, key)
        else:
            assert isinstance(value, kind), f"{where}.{key}: {type(value).__name__} is not {kind}"


def check_results_schema(results: dict[str, Any], methods: list[str], seeds: int) -> None:
    assert set(results) == {"settings", "versions", "wall_time_s", "runs"}
    _check_keys(results["settings"], SETTINGS_KEYS, "settings")
    assert all(isinstance(k, str) and isinstance(v, str) for k, v in results["versions"].items())
    assert {"python", "geodyn", "torch", "geoopt"} <= set(results["versions"])
    assert isinstance(results["wall_time_s"], float) and results["wall_time_s"] > 0
    runs = results["runs"]
    assert [(r["method"], r["seed"]) for r in runs] == [
        (m, s) for m in methods for s in range(seeds)
    ]
    for i, r in enumerate(runs):
        _check_keys(r, RUN_KEYS, f"runs[{i}]")
        assert r["config"] == METHODS[r["method"]].defaults
        assert not r["diverged"]
        for e in r["epochs"]:
            _check_keys(e, EPOCH_KEYS, f"runs[{i}].epochs")
            assert 0.0 <= e["test_acc"] <= 1.0 and 0.0 <= e["train_acc"] <= 1.0
            assert math.isclose(e["gap"], e["train_acc"] - e["test_acc"])
            assert e["time_per_step"] > 0
        _check_keys(r["summary"], SUMMARY_KEYS, f"runs[{i}].summary")
        assert r["summary"]["best_test_acc"] >= r["summary"]["final_test_acc"]
        assert all(isinstance(v, float) for v in r["residual_trace"])


def test_compare_end_to_end(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "res"
    assert main(["compare", "--methods", "sgd,adam", "--out", str(out), *TINY]) == 0
    results = json.loads((out / "results.json").read_text())
    check_results_schema(results, ["sgd", "adam"], 1)
    assert results["settings"]["dataset"] == "mnist1d"  # the default data set
    assert len(results["runs"][0]["epochs"]) == 1
    # one epoch of Adam on MNIST-1D is well above chance (0.1)
    assert results["runs"][1]["summary"]["final_test_acc"] > 0.2
    for name in ("test_accuracy.png", "weight_norm.png", "residual.png", "time_per_step.png"):
        image = mpimg.imread(out / name)
        assert image.ndim == 3 and image.shape[0] >= 200 and image.shape[1] >= 300, name
        assert image[..., :3].std() > 0.01, f"{name} is blank"
    md = (out / "results.md").read_text()
    assert "| sgd |" in md and "| adam |" in md
    table = capsys.readouterr().out
    assert "final test acc" in table and "sgd" in table and "adam" in table


def test_spirals_and_cnn(tmp_path: Path) -> None:
    assert main(["compare", "--methods", "adam", "--dataset", "spirals", "--out",
                 str(tmp_path / "s"), *TINY]) == 0
    assert main(["compare", "--methods", "sgd", "--model", "cnn", "--dataset", "digits", "--out",
                 str(tmp_path / "c"), *TINY]) == 0
    assert main(["compare", "--methods", "adam", "--model", "linear", "--out",
                 str(tmp_path / "l"), *TINY]) == 0
    for sub in ("s", "c", "l"):
        results = json.loads((tmp_path / sub / "results.json").read_text())
        assert results["runs"][0]["epochs"][0]["test_acc"] > 0.0


def test_config_file_and_no_overwrite(tmp_path: Path) -> None:
    config = tmp_path / "c.toml"
    config.write_text('methods = ["sgd"]\nepochs = 1\nseeds = 2\n[method.sgd]\nlr = 0.01\n')
    out = tmp_path / "res"
    assert main(["compare", "--config", str(config), "--out", str(out), "--seeds", "1",
                 "--quiet"]) == 0
    first = json.loads((out / "results.json").read_text())
    assert first["settings"]["seeds"] == 1  # the command line overrides the file
    assert first["runs"][0]["config"]["lr"] == 0.01
    # the folder exists: a new timestamped one, the old results untouched
    assert main(["compare", "--config", str(config), "--out", str(out), "--quiet"]) == 0
    siblings = sorted(p.name for p in tmp_path.iterdir() if p.name.startswith("res-"))
    assert len(siblings) == 1
    assert json.loads((out / "results.json").read_text()) == first
    assert len(json.loads((tmp_path / siblings[0] / "results.json").read_text())["runs"]) == 2
    # --force writes into it
    assert main(["compare", "--config", str(config), "--out", str(out), "--force",
                 "--quiet"]) == 0
    assert len(json.loads((out / "results.json").read_text())["runs"]) == 2


@pytest.mark.parametrize(
    ("argv", "needle", "valid"),
    [
        (["--methods", "sgd,nosuch"], "unknown method 'nosuch'", "adam"),
        (["--dataset", "mnist"], "unknown dataset 'mnist'", "mnist1d, digits, spirals"),
        (["--model", "resnet"], "unknown model 'resnet'", "linear, mlp, cnn"),
        (["--dataset", "spirals", "--model", "cnn"], "model 'cnn' needs signal or image data",
         "--model mlp"),
        (["--epochs", "0"], "--epochs must be a positive integer", "got 0"),
        (["--device", "tpu"], "unknown device 'tpu'", "cpu, cuda"),
    ],
)
def test_bad_settings_list_the_valid_ones(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], argv: list[str], needle: str, valid: str
) -> None:
    out = tmp_path / "res"
    assert main(["compare", "--out", str(out), *argv]) == 2
    err = capsys.readouterr().err
    assert needle in err and valid in err
    assert not out.exists()


def test_unknown_option_lists_valid_options(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["compare", "--epoch", "3", "--bogus"])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert "--bogus" in err and "valid options:" in err and "--methods" in err


def test_bad_config_files(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cases = {
        "typo.toml": ('epoch = 3\n', "unknown setting(s) epoch"),
        "hyper.toml": ('[method.sgd]\nlearning_rate = 0.1\n', "valid: lr, momentum"),
        "broken.toml": ('epochs = \n', "is not valid TOML"),
    }
    for name, (text, needle) in cases.items():
        (tmp_path / name).write_text(text)
        assert main(["compare", "--config", str(tmp_path / name), "--out",
                     str(tmp_path / "r")]) == 2
        assert needle in capsys.readouterr().err, name
    assert main(["compare", "--config", str(tmp_path / "missing.toml")]) == 2
    assert "no such file" in capsys.readouterr().err


def test_cuda_unavailable_is_a_clear_error(capsys: pytest.CaptureFixture[str]) -> None:
    if torch.cuda.is_available():
        pytest.skip("CUDA is available on this machine")
    assert main(["compare", "--device", "cuda"]) == 2
    assert "CUDA is not available" in capsys.readouterr().err


def test_divergent_run_is_marked_and_the_comparison_goes_on(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # SGD with a huge step blows up to a non-finite loss within an epoch
    config = tmp_path / "c.toml"
    config.write_text('methods = ["sgd", "adam"]\n[method.sgd]\nlr = 1e12\nmomentum = 0.0\n')
    out = tmp_path / "res"
    assert main(["compare", "--config", str(config), "--out", str(out), "--epochs", "2",
                 "--seeds", "1", "--quiet"]) == 0
    results = json.loads((out / "results.json").read_text())
    sgd, adam = results["runs"]
    assert sgd["diverged"] and sgd["summary"]["diverged"] and len(sgd["epochs"]) < 2
    assert not adam["diverged"] and len(adam["epochs"]) == 2
    line = next(ln for ln in capsys.readouterr().out.splitlines() if ln.startswith("sgd "))
    assert "DIVERGED" in line


def test_runner_detects_parameters_left_non_finite() -> None:
    data = data_mod.spirals(seed=0, n_per_class=20)

    def poison(model: torch.nn.Module, cfg: dict[str, Any]) -> Any:
        class Poison(torch.optim.SGD):
            def step(self, closure: Any = None) -> Any:
                with torch.no_grad():
                    next(iter(model.parameters())).fill_(float("inf"))

        return model, Poison(model.parameters(), lr=0.1)

    spec = RunSpec(Method("poison", "", poison), {}, "mlp", 0, 3, 8, "cpu")
    record = run(spec, data)
    assert record["diverged"] and record["epochs"] == []
    assert record["summary"]["final_test_acc"] is None


@pytest.mark.parametrize("name", list(METHODS))
def test_every_registered_method_trains_and_keeps_its_constraint(name: str) -> None:
    data = data_mod.digits(seed=0)
    method = METHODS[name]
    record = run(RunSpec(method, method.config(), "mlp", 0, 3, 64, "cpu"), data)
    assert not record["diverged"], name
    # three epochs (57 steps, past LAWN's 44-step warm-up) of any of the methods beat
    # chance (0.1) on digits by far
    assert record["summary"]["final_test_acc"] > 0.3, (name, record["summary"])
    # float32 weights: a constraint kept to rounding level
    assert record["summary"]["max_residual"] < 1e-4, (name, record["summary"])


def test_default_methods_are_registered_and_documented() -> None:
    from geodyn.cli import DEFAULTS

    defaults = DEFAULTS["methods"].split(",")
    assert defaults == ["all"] or (defaults and set(defaults) <= set(METHODS))
    doc = (Path(__file__).parents[1] / "docs" / "cli.md").read_text()
    for name in METHODS:
        assert f"| `{name}` |" in doc, f"method {name} missing from docs/cli.md"


def test_pathsgd_trains_the_cnn() -> None:
    # the CNN is a plain Sequential chain (Conv2d, ReLU, MaxPool2d, Flatten, Linear)
    data = data_mod.digits(seed=0)
    method = METHODS["pathsgd"]
    record = run(RunSpec(method, method.config(), "cnn", 0, 1, 64, "cpu"), data)
    assert not record["diverged"]
    assert record["summary"]["final_test_acc"] > 0.3, record["summary"]


def test_lawn_warmup_as_long_as_the_run_is_an_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # 1 epoch of MNIST-1D at batch 100 is 35 steps, under LAWN's 44-step warm-up: the run
    # would be plain Adam with nothing constrained
    out = tmp_path / "res"
    assert main(["compare", "--methods", "lawn-adam", "--epochs", "1", "--out", str(out),
                 "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "warmup_steps = 44" in err and "35 steps" in err and "[method.lawn-adam]" in err
    assert not out.exists()
    # the fix the message names: a shorter warm-up, after which LAWN constrains the classifier
    config = tmp_path / "c.toml"
    config.write_text('[method.lawn-adam]\nwarmup_steps = 10\n')
    assert main(["compare", "--methods", "lawn-adam", "--config", str(config), "--out", str(out),
                 *TINY]) == 0
    run_record = json.loads((out / "results.json").read_text())["runs"][0]
    assert run_record["constrained_parameters"] == 1
    assert run_record["summary"]["max_residual"] > 0.0


def test_opt_is_on_the_residual_plot() -> None:
    from geodyn.compare.report import residual_series

    data = data_mod.digits(seed=0)
    runs = [run(RunSpec(METHODS[n], METHODS[n].config(), "mlp", 0, 1, 256, "cpu"), data)
            for n in ("sgd", "opt")]
    series = residual_series(runs, "method")
    assert list(series) == ["opt"]  # SGD holds no constraint; OPT's rotations do
    assert len(series["opt"]) == len(runs[1]["residual_trace"])
    assert 0.0 < float(series["opt"].max()) < 1e-4  # orthogonal to float32 rounding
