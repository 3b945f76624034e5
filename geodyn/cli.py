"""Command line: ``geodyn compare`` and ``geodyn reproduce``.

``geodyn compare`` trains one model with several methods and seeds; ``geodyn reproduce``
runs the seed papers' claims as paired experiments on MNIST-1D.

Compare's settings come from the defaults, then a ``--config FILE.toml``, then the
command-line options (each level overrides the one before). See docs/cli.md.
"""

from __future__ import annotations

import argparse
import platform
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

from . import lab

DEFAULTS: dict[str, Any] = {
    "dataset": "mnist1d",
    "model": "mlp",
    "methods": "all",
    "epochs": 20,
    "seeds": 3,
    "batch_size": 100,
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


def _compare_parser(sub: Any) -> argparse.ArgumentParser:
    c = sub.add_parser("compare", help="train one model with several methods and seeds",
                       description="Train the same model with a list of methods, several seeds "
                       "each, and report accuracy, loss, gap, time per step and constraint drift.",
                       allow_abbrev=False)
    c.add_argument("--config", type=Path, help="TOML file of settings (and [method.NAME] tables)")
    c.add_argument("--methods", help="comma-separated method names, or 'all' "
                   f"(default: {DEFAULTS['methods']})")
    c.add_argument("--dataset",
                   help=f"mnist1d, digits or spirals (default: {DEFAULTS['dataset']})")
    c.add_argument("--model", help=f"linear, mlp or cnn (default: {DEFAULTS['model']})")
    c.add_argument("--epochs", type=int, help=f"epochs per run (default: {DEFAULTS['epochs']})")
    c.add_argument("--seeds", type=int,
                   help=f"seeds 0..N-1 per method (default: {DEFAULTS['seeds']})")
    c.add_argument("--batch-size", dest="batch_size", type=int,
                   help=f"mini-batch size (default: {DEFAULTS['batch_size']})")
    c.add_argument("--device", help="cpu, cuda or cuda:N (default: cpu)")
    c.add_argument("--out", type=Path, help=f"results folder (default: {DEFAULTS['out']})")
    c.add_argument("--force", action="store_true", help="write into --out even if it exists")
    c.add_argument("--quiet", action="store_true", help="no progress output")
    return c


def _reproduce_parser(sub: Any) -> argparse.ArgumentParser:
    from .compare.suite import SUITES

    r = sub.add_parser("reproduce", help="the seed papers' claims, tested on MNIST-1D",
                       description="Reproduce the MNIST-1D baselines and test each seed paper's "
                       "claim: paired seeds, a validation-chosen grid per arm, a 95%% interval "
                       "and a verdict per claim.", allow_abbrev=False)
    r.add_argument("--suite", default="demo", choices=list(SUITES),
                   help="demo (minutes) or full (the documented run); default: demo")
    r.add_argument("--seeds", type=int, default=5, help="seeds 0..N-1 (default: 5, at least 2)")
    r.add_argument("--workers", type=int, default=None,
                   help="training processes, one thread each (default: 2 on >= 2 cores)")
    r.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N (default: cpu)")
    r.add_argument("--out", type=Path, default=Path("geodyn-reproduce"),
                   help="results folder (default: geodyn-reproduce)")
    r.add_argument("--force", action="store_true", help="write into --out even if it exists")
    r.add_argument("--resume", action="store_true",
                   help="reuse the finished runs in --out/runs.jsonl (implies --force)")
    r.add_argument("--quiet", action="store_true", help="no progress output")
    return r


def build_parser() -> tuple[argparse.ArgumentParser, dict[str, argparse.ArgumentParser]]:
    """The top-level parser and its sub-command parsers by name."""
    parser = _Parser(prog="geodyn", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser,
                                metavar="{" + ",".join(COMMANDS) + "}")
    return parser, {name: register(sub) for name, (register, _) in COMMANDS.items()}


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
    if values["model"] == "cnn" and values["dataset"] == "spirals":
        raise UsageError("model 'cnn' needs signal or image data: use --dataset mnist1d or "
                         "digits, or --model mlp")
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
    _check_device(device)
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
    for package in ("torch", "geoopt", "numpy", "scipy", "scikit-learn", "matplotlib", "tqdm",
                    "mnist1d"):
        try:
            found[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            found[package] = "not installed"
    return found


@contextmanager
def progress_bar(total: int, desc: str, quiet: bool) -> Iterator[Any]:
    """A tqdm bar on a terminal; ``None`` (no bar) when quiet or when stderr is not a tty."""
    if quiet or not sys.stderr.isatty():
        yield None
        return
    from tqdm.auto import tqdm

    with tqdm(total=total, desc=desc, leave=False, file=sys.stderr) as bar:
        yield bar


def compare(settings: Settings, force: bool = False, quiet: bool = False) -> Path:
    """Run every (method, seed); write the report; the results folder."""
    from .compare import report
    from .compare.data import load_dataset
    from .compare.methods import get_method
    from .compare.runner import RunSpec, run, steps_per_epoch

    data = load_dataset(settings.dataset, seed=0)
    steps = steps_per_epoch(len(data.x_train), settings.batch_size) * settings.epochs
    configs = {name: get_method(name).config(settings.method_config.get(name))
               for name in settings.methods}
    for name, config in configs.items():
        try:
            get_method(name).check(config, steps)
        except ValueError as err:
            raise UsageError(f"method {name!r}: {err}") from err
    folder = results_folder(settings.out, force)
    runs = []
    start = time.perf_counter()
    for name, config in configs.items():
        method = get_method(name)
        for seed in range(settings.seeds):
            spec = RunSpec(method, config, settings.model, seed, settings.epochs,
                           settings.batch_size, settings.device)
            with progress_bar(steps, f"{name} seed {seed}", quiet) as bar:
                try:
                    runs.append(run(spec, data, progress=bar))
                except ValueError as err:
                    raise UsageError(
                        f"method {name!r} cannot train model {settings.model!r}: {err}"
                    ) from err
            if bar is None and not quiet:
                acc = runs[-1]["summary"]["final_test_acc"]
                shown = "diverged" if acc is None else f"final test acc {acc:.3f}"
                print(f"{name} seed {seed}: {shown} ({time.perf_counter() - start:.0f} s)",
                      file=sys.stderr, flush=True)
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


def reproduce(
    suite: Any, seeds: int, out: Path, workers: int | None = None, device: str = "cpu",
    force: bool = False, quiet: bool = False, resume: bool = False,
) -> Path:
    """Run ``suite`` (a :class:`geodyn.compare.suite.Suite`) with ``seeds`` paired seeds; print
    the baseline and claims tables; write results.json, results.md and the plots.

    Every finished run is journalled in ``runs.jsonl``; ``resume`` trains only the missing ones.
    """
    from .compare import report
    from .compare import suite as suites
    from .compare.data import load_dataset

    if seeds < 2:
        raise UsageError(f"--seeds must be at least 2 for a paired interval, got {seeds}")
    workers = suites.default_workers() if workers is None else workers
    if workers < 1:
        raise UsageError(f"--workers must be a positive integer, got {workers}")
    _check_device(device)
    try:
        suite.validate()
    except ValueError as err:
        raise UsageError(str(err)) from err
    load_dataset(suite.dataset, seed=0)  # built and cached once, before the workers start
    folder = results_folder(out, force or resume)
    journal = folder / "runs.jsonl"
    if not resume:
        journal.unlink(missing_ok=True)
    n_jobs = len(suites.jobs(suite, seeds))
    start = time.perf_counter()
    with progress_bar(n_jobs, f"suite {suite.name}", quiet) as bar:
        if bar is not None:
            def tick(i: int, n: int, record: dict[str, Any]) -> None:
                bar.update(1)
                bar.set_postfix(arm=record["arm"])
            progress: Callable[[int, int, dict[str, Any]], None] | None = tick
        else:
            progress = None if quiet else suites.plain_progress()
        records = suites.execute(suite, seeds, workers, device, progress, journal)
    wall = time.perf_counter() - start
    analysis = suites.analyse(suite, records)
    meta = {
        "settings": {"suite": suite.name, "dataset": suite.dataset, "seeds": seeds,
                     "workers": workers, "device": device, "out": str(folder)},
        "summary": suite.summary[:1].upper() + suite.summary[1:],
        "versions": versions(),
        "wall_time_s": wall,
    }
    report.write_reproduce_json(folder / "results.json", meta, analysis,
                                suites.records_for_json(records, analysis["arms"]))
    report.write_reproduce_markdown(folder / "results.md", meta, analysis)
    report.write_reproduce_plots(folder, analysis)
    if analysis["baselines"]:
        print("Published MNIST-1D baselines")
        print(report.format_baselines(analysis["baselines"]) + "\n")
    print("Claims (paired by seed; effect = mean difference [95% t-interval])")
    print(report.format_claims(analysis["claims"]))
    print(f"\n{len(records)} runs in {wall / 60:.1f} min on {workers} process(es); "
          f"results in {folder}")
    return folder


def _check_device(device: str) -> None:
    if not (device == "cpu" or device == "cuda" or device.startswith("cuda:")):
        raise UsageError(f"unknown device {device!r}; valid: cpu, cuda, cuda:N")
    if device.startswith("cuda"):
        import torch

        if not torch.cuda.is_available():
            raise UsageError(f"--device {device}: CUDA is not available here; use --device cpu")


def _run_compare(args: argparse.Namespace) -> None:
    compare(resolve(args), force=args.force, quiet=args.quiet)


def _run_reproduce(args: argparse.Namespace) -> None:
    from .compare.suite import SUITES

    reproduce(SUITES[args.suite], args.seeds, args.out, workers=args.workers,
              device=args.device, force=args.force, quiet=args.quiet, resume=args.resume)


# name -> (add the sub-command's parser, run it); a new sub-command is one entry here
COMMANDS: dict[str, tuple[Callable[[Any], argparse.ArgumentParser],
                          Callable[[argparse.Namespace], int | None]]] = {
    "compare": (_compare_parser, _run_compare),
    "reproduce": (_reproduce_parser, _run_reproduce),
    "schemes": (lab.add_parser, lab.main),
}


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``geodyn`` console script; the exit status."""
    parser, commands = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra:
        commands[args.command].error(f"unrecognized arguments: {' '.join(extra)}")
    try:
        status = COMMANDS[args.command][1](args)
    except UsageError as err:
        print(f"geodyn {args.command}: error: {err}", file=sys.stderr)
        return 2
    return status or 0


if __name__ == "__main__":
    sys.exit(main())
