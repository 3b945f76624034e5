"""Command line: ``geodyn compare`` trains one model with several methods and seeds.

Settings come from the defaults, then a ``--config FILE.toml``, then the command-line options
(each level overrides the one before). See docs/cli.md.
"""

from __future__ import annotations

import argparse
import platform
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

from . import lab

DEFAULTS: dict[str, Any] = {
    "dataset": "digits",
    "model": "mlp",
    "methods": "all",
    "epochs": 20,
    "seeds": 3,
    "batch_size": 64,
    "device": "cpu",
    "out": "geodyn-results",
}
SETTING_KEYS = (*DEFAULTS, "method")


class UsageError(ValueError):
    """A bad setting; reported as ``geodyn compare: error: ...`` with exit status 2."""


class _Parser(argparse.ArgumentParser):
    """An argument parser whose errors list the valid options."""

    def error(self, message: str) -> Any:  # type: ignore[override]
        options = sorted(o for a in self._actions for o in a.option_strings)
        if options and "unrecognized arguments" in message:
            message += f"; valid options: {', '.join(options)}"
        self.exit(2, f"{self.prog}: error: {message}\n")


def build_parser() -> tuple[argparse.ArgumentParser, dict[str, argparse.ArgumentParser]]:
    """The top-level parser and its sub-command parsers by name."""
    parser = _Parser(prog="geodyn", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser,
                                metavar="{compare,schemes}")
    c = sub.add_parser("compare", help="train one model with several methods and seeds",
                       description="Train the same model with a list of methods, several seeds "
                       "each, and report accuracy, loss, gap, time per step and constraint drift.",
                       allow_abbrev=False)
    c.add_argument("--config", type=Path, help="TOML file of settings (and [method.NAME] tables)")
    c.add_argument("--methods", help="comma-separated method names, or 'all' "
                   f"(default: {DEFAULTS['methods']})")
    c.add_argument("--dataset", help=f"digits or spirals (default: {DEFAULTS['dataset']})")
    c.add_argument("--model", help=f"mlp or cnn (default: {DEFAULTS['model']})")
    c.add_argument("--epochs", type=int, help=f"epochs per run (default: {DEFAULTS['epochs']})")
    c.add_argument("--seeds", type=int,
                   help=f"seeds 0..N-1 per method (default: {DEFAULTS['seeds']})")
    c.add_argument("--batch-size", dest="batch_size", type=int,
                   help=f"mini-batch size (default: {DEFAULTS['batch_size']})")
    c.add_argument("--device", help="cpu, cuda or cuda:N (default: cpu)")
    c.add_argument("--out", type=Path, help=f"results folder (default: {DEFAULTS['out']})")
    c.add_argument("--force", action="store_true", help="write into --out even if it exists")
    c.add_argument("--quiet", action="store_true", help="no progress bars")
    return parser, {"compare": c, "schemes": lab.add_parser(sub)}


@dataclass(frozen=True)
class Settings:
    dataset: str
    model: str
    methods: list[str]
    method_config: dict[str, dict[str, Any]]
    epochs: int
    seeds: int
    batch_size: int
    device: str
    out: Path


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10
        raise UsageError(
            "--config needs Python >= 3.11 (tomllib); pass the options instead"
        ) from None
    if not path.is_file():
        raise UsageError(f"--config: no such file {str(path)!r}")
    try:
        return tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as err:
        raise UsageError(f"--config {str(path)!r} is not valid TOML: {err}") from err


def resolve(args: argparse.Namespace) -> Settings:
    """Defaults < TOML file < command line, validated."""
    from .compare.data import DATASETS
    from .compare.methods import METHODS, get_method
    from .compare.models import MODELS

    values = dict(DEFAULTS)
    method_config: dict[str, dict[str, Any]] = {}
    if args.config is not None:
        file = _read_toml(args.config)
        unknown = sorted(set(file) - set(SETTING_KEYS))
        if unknown:
            raise UsageError(f"unknown setting(s) {', '.join(unknown)} in {args.config}; "
                             f"valid: {', '.join(SETTING_KEYS)}")
        method_config = file.pop("method", {})
        values.update(file)
    values.update({k: v for k, v in vars(args).items() if k in DEFAULTS and v is not None})

    if values["dataset"] not in DATASETS:
        raise UsageError(f"unknown dataset {values['dataset']!r}; valid: {', '.join(DATASETS)}")
    if values["model"] not in MODELS:
        raise UsageError(f"unknown model {values['model']!r}; valid: {', '.join(MODELS)}")
    if values["model"] == "cnn" and values["dataset"] != "digits":
        raise UsageError("model 'cnn' needs image data: use --dataset digits or --model mlp")
    names = values["methods"]
    if isinstance(names, str):
        names = [n.strip() for n in names.split(",") if n.strip()]
    if names == ["all"]:
        names = list(METHODS)
    if not names:
        raise UsageError(f"--methods is empty; valid: {', '.join(METHODS)}, or all")
    for name in [*names, *method_config]:
        if name not in METHODS:
            raise UsageError(f"unknown method {name!r}; valid: {', '.join(METHODS)}, or all")
    for name in names:
        try:
            get_method(name).config(method_config.get(name))
        except ValueError as err:
            raise UsageError(str(err)) from err
    for key in ("epochs", "seeds", "batch_size"):
        if not isinstance(values[key], int) or values[key] < 1:
            raise UsageError(f"--{key.replace('_', '-')} must be a positive integer, "
                             f"got {values[key]!r}")
    device = str(values["device"])
    if not (device == "cpu" or device == "cuda" or device.startswith("cuda:")):
        raise UsageError(f"unknown device {device!r}; valid: cpu, cuda, cuda:N")
    if device.startswith("cuda"):
        import torch

        if not torch.cuda.is_available():
            raise UsageError(f"--device {device}: CUDA is not available here; use --device cpu")
    return Settings(
        dataset=values["dataset"], model=values["model"], methods=list(dict.fromkeys(names)),
        method_config=method_config, epochs=values["epochs"], seeds=values["seeds"],
        batch_size=values["batch_size"], device=device, out=Path(values["out"]),
    )


def results_folder(out: Path, force: bool) -> Path:
    """``out``, or ``out-YYYYmmdd-HHMMSS`` when ``out`` holds something and not ``force``."""
    if out.exists() and not out.is_dir():
        raise UsageError(f"--out {str(out)!r} is a file; give a folder")
    if out.exists() and any(out.iterdir()) and not force:
        stamp = time.strftime("%Y%m%d-%H%M%S")
        candidate, k = out.with_name(f"{out.name}-{stamp}"), 1
        while candidate.exists():
            candidate, k = out.with_name(f"{out.name}-{stamp}-{k}"), k + 1
        out = candidate
    out.mkdir(parents=True, exist_ok=True)
    return out


def versions() -> dict[str, str]:
    from . import __version__

    found = {"python": platform.python_version(), "geodyn": __version__}
    for package in ("torch", "geoopt", "numpy", "scikit-learn", "matplotlib", "tqdm"):
        try:
            found[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            found[package] = "not installed"
    return found


def compare(settings: Settings, force: bool = False, quiet: bool = False) -> Path:
    """Run every (method, seed); write the report; the results folder."""
    from tqdm.auto import tqdm

    from .compare import report
    from .compare.data import load_dataset
    from .compare.methods import get_method
    from .compare.runner import RunSpec, run

    folder = results_folder(settings.out, force)
    data = load_dataset(settings.dataset, seed=0)
    steps = -(-len(data.x_train) // settings.batch_size) * settings.epochs
    runs = []
    start = time.perf_counter()
    for name in settings.methods:
        method = get_method(name)
        config = method.config(settings.method_config.get(name))
        for seed in range(settings.seeds):
            spec = RunSpec(method, config, settings.model, seed, settings.epochs,
                           settings.batch_size, settings.device)
            with tqdm(total=steps, desc=f"{name} seed {seed}", leave=False, disable=quiet,
                      file=sys.stderr) as bar:
                try:
                    runs.append(run(spec, data, progress=bar))
                except ValueError as err:
                    raise UsageError(
                        f"method {name!r} cannot train model {settings.model!r}: {err}"
                    ) from err
    wall = time.perf_counter() - start
    meta = {
        "settings": {k: (str(v) if isinstance(v, Path) else v)
                     for k, v in vars(settings).items()},
        "versions": versions(),
        "wall_time_s": wall,
    }
    rows = report.summary_rows(runs)
    report.write_json(folder / "results.json", meta, runs)
    report.write_markdown(folder / "results.md", meta, rows)
    report.write_plots(folder, runs)
    print(report.format_table(rows))
    print(f"\n{len(runs)} runs in {wall:.1f} s; results in {folder}")
    return folder


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``geodyn`` console script; the exit status."""
    parser, commands = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra:
        commands[args.command].error(f"unrecognized arguments: {' '.join(extra)}")
    try:
        if args.command == "schemes":
            return lab.main(args)
        settings = resolve(args)
        compare(settings, force=args.force, quiet=args.quiet)
    except UsageError as err:
        print(f"geodyn {args.command}: error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
