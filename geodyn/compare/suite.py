"""``geodyn reproduce``: the seed papers' claims as paired experiments on MNIST-1D.

A suite is a list of *arms* (a method on a model at a batch size and epoch budget, with a
small grid of hyperparameters), the published *baselines* and the *claims*. Every arm trains
each grid point with the same seeds; the point with the best mean validation accuracy is
selected (the test set plays no part in the choice) and only its runs enter the claims. A
claim's effect is, per seed, a signed sum of one metric over arms
(``method - baseline``, or a difference of differences), reduced to a mean with a 95%
t-interval and a verdict (:mod:`geodyn.compare.stats`). Every arm a claim compares has a grid
of the same size: the method and its baseline get the same search budget.
"""

from __future__ import annotations

import itertools
import json
import math
import os
import statistics
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .stats import paired_interval, verdict

# ---------------------------------------------------------------- definitions


@dataclass(frozen=True)
class Arm:
    """A method trained on ``model`` at ``batch_size`` for ``epochs``, over a grid."""

    key: str
    method: str
    model: str = "mlp"
    epochs: int = 30
    batch_size: int = 100
    config: dict[str, Any] = field(default_factory=dict)
    grid: dict[str, tuple[Any, ...]] = field(default_factory=dict)
    unbalance: bool = False

    def points(self) -> list[dict[str, Any]]:
        """Every grid point as a full override of the method's defaults."""
        names = sorted(self.grid)
        return [
            {**self.config, **dict(zip(names, values, strict=True))}
            for values in itertools.product(*(self.grid[n] for n in names))
        ]


@dataclass(frozen=True)
class Claim:
    """``paper`` claims that ``sum(coef * metric(arm))`` has sign ``direction``."""

    paper: str
    claim: str
    metric: str
    terms: tuple[tuple[float, str], ...]
    direction: int


@dataclass(frozen=True)
class Baseline:
    """A published test accuracy that ``arm`` should reproduce within ``tolerance``."""

    label: str
    arm: str
    published: float
    tolerance: float = 0.03
    source: str = "Greydanus 2020; Greydanus & Kobak, ICML 2024"


@dataclass(frozen=True)
class Suite:
    name: str
    summary: str
    arms: tuple[Arm, ...]
    baselines: tuple[Baseline, ...]
    claims: tuple[Claim, ...]
    dataset: str = "mnist1d"

    def arm(self, key: str) -> Arm:
        return next(a for a in self.arms if a.key == key)

    def validate(self) -> None:
        """Unique arm keys; claims and baselines name arms; equal grids within a claim."""
        from .methods import get_method

        keys = [a.key for a in self.arms]
        if len(keys) != len(set(keys)):
            raise ValueError(f"suite {self.name!r}: duplicate arm keys in {keys}")
        for a in self.arms:
            method = get_method(a.method)
            for point in a.points():
                method.config(point)
        for b in self.baselines:
            self.arm(b.arm)
        for c in self.claims:
            if c.metric not in METRICS:
                raise ValueError(f"claim {c.claim!r}: unknown metric {c.metric!r}")
            sizes = {len(self.arm(key).points()) for _, key in c.terms}
            if len(sizes) != 1:
                raise ValueError(f"claim {c.claim!r}: its arms' grids differ in size {sizes}")


# ---------------------------------------------------------------- metrics


def _final(key: str) -> Callable[[dict[str, Any]], float]:
    return lambda run: float(run["epochs"][-1][key]) if run["epochs"] else math.nan


def volatility(run: dict[str, Any], last: int = 5) -> float:
    """Standard deviation of the test accuracy over the last ``last`` epochs."""
    acc = [e["test_acc"] for e in run["epochs"][-last:]]
    return statistics.stdev(acc) if len(acc) >= 2 else math.nan


METRICS: dict[str, tuple[str, Callable[[dict[str, Any]], float], float]] = {
    # name: (label, per-run value, display scale)
    "test_acc": ("final test accuracy (points)", _final("test_acc"), 100.0),
    "gap": ("generalisation gap, train - test accuracy (points)", _final("gap"), 100.0),
    "energy": ("hyperspherical energy E_1 of the hidden neurons", _final("energy"), 1.0),
    "volatility": ("std of test accuracy over the last 5 epochs (points)", volatility, 100.0),
}


def metric(name: str, run: dict[str, Any]) -> float:
    """The metric ``name`` of a run (NaN for a diverged run), in display units."""
    _, value, scale = METRICS[name]
    if run["diverged"] or not run["epochs"]:
        return math.nan
    return value(run) * scale


# ---------------------------------------------------------------- the suites

ADAM_PAPER = {"lr": 1e-2}  # the MNIST-1D paper's recipe: Adam, lr 0.01, batch 100, 8000 steps
LR_SGD = (0.02, 0.05, 0.1)
LR_ADAM = (3e-3, 1e-2, 3e-2)
LR_PATH = (0.001, 0.003, 0.01)
CLAIMS_EPOCHS = 30


def _claims_arms(epochs: int, cnn: bool) -> tuple[Arm, ...]:
    steps_100 = 35 * epochs  # 3500 training signals
    steps_1000 = 4 * epochs
    arms = [
        Arm("sgd", "sgd", epochs=epochs, grid={"lr": LR_SGD}),
        Arm("csgld", "csgld", epochs=epochs, grid={"lr": (0.05, 0.1, 0.2)}),
        Arm("cbaoab-circle", "cbaoab-circle", epochs=epochs, grid={"lr": (0.1, 0.3, 1.0)}),
        Arm("cbaoab-orth", "cbaoab-orth", epochs=epochs, grid={"lr": (0.05, 0.1, 0.2)}),
        Arm("opt", "opt", epochs=epochs, grid={"lr": LR_SGD}),
        Arm("adam-b100", "adam", epochs=epochs, grid={"lr": LR_ADAM}),
        Arm("lawn-adam-b100", "lawn-adam", epochs=epochs, grid={"lr": LR_ADAM},
            config={"warmup_steps": steps_100 // 4}),
        Arm("adam-b1000", "adam", epochs=epochs, batch_size=1000, grid={"lr": LR_ADAM}),
        Arm("lawn-adam-b1000", "lawn-adam", epochs=epochs, batch_size=1000,
            grid={"lr": LR_ADAM}, config={"warmup_steps": steps_1000 // 4}),
        Arm("sgd-unbalanced", "sgd", epochs=epochs, grid={"lr": LR_SGD}, unbalance=True),
        Arm("pathsgd", "pathsgd", epochs=epochs, grid={"lr": LR_PATH}),
        Arm("pathsgd-unbalanced", "pathsgd", epochs=epochs, grid={"lr": LR_PATH},
            unbalance=True),
        Arm("pswa", "pswa", epochs=epochs, grid={"lr": LR_SGD}),
        Arm("pwalks", "pwalks", epochs=epochs, grid={"lr": LR_SGD}),
        Arm("pswm", "pswm", epochs=epochs, grid={"lr": LR_SGD}),
        Arm("sphere", "rsgd-oblique", epochs=epochs, grid={"lr": LR_SGD}),
        Arm("lp-sphere", "rsgd-lp", epochs=epochs, grid={"lr": LR_SGD}, config={"p": 1.5}),
    ]
    if cnn:
        arms += [
            Arm("sgd-cnn", "sgd", model="cnn", epochs=epochs, grid={"lr": LR_SGD}),
            Arm("opt-cnn", "opt", model="cnn", epochs=epochs, grid={"lr": LR_SGD}),
        ]
    return tuple(arms)


def _diff(method: str, baseline: str) -> tuple[tuple[float, str], ...]:
    return ((1.0, method), (-1.0, baseline))


LANGEVIN = "Leimkuhler et al. 2021"
CLAIMS_MLP: tuple[Claim, ...] = (
    *(
        claim
        for arm, what in (("cbaoab-circle", "circle-constrained BAOAB"),
                          ("csgld", "circle-constrained overdamped Langevin"),
                          ("cbaoab-orth", "orthogonality-constrained BAOAB"))
        for claim in (
            Claim(LANGEVIN, f"{what} beats SGD-momentum at equal epochs", "test_acc",
                  _diff(arm, "sgd"), +1),
            Claim(LANGEVIN, f"{what} generalises better than SGD-momentum", "gap",
                  _diff(arm, "sgd"), -1),
        )
    ),
    Claim("OPT (Liu et al. 2021)", "OPT ends with lower hyperspherical energy than SGD",
          "energy", _diff("opt", "sgd"), -1),
    Claim("OPT (Liu et al. 2021)", "OPT beats standard training (SGD) of the same MLP",
          "test_acc", _diff("opt", "sgd"), +1),
    Claim("LAWN (Gupta et al. 2021)", "LAWN-Adam beats Adam at batch 1000", "test_acc",
          _diff("lawn-adam-b1000", "adam-b1000"), +1),
    Claim("LAWN (Gupta et al. 2021)", "LAWN-Adam beats Adam at batch 100", "test_acc",
          _diff("lawn-adam-b100", "adam-b100"), +1),
    Claim("LAWN (Gupta et al. 2021)", "LAWN's gain grows with the batch (1000 vs 100)",
          "test_acc", ((1.0, "lawn-adam-b1000"), (-1.0, "adam-b1000"),
                       (-1.0, "lawn-adam-b100"), (1.0, "adam-b100")), +1),
    Claim("Path-SGD (Neyshabur et al. 2015)",
          "on an unbalanced MLP Path-SGD beats SGD", "test_acc",
          _diff("pathsgd-unbalanced", "sgd-unbalanced"), +1),
    Claim("Path-SGD (Neyshabur et al. 2015)",
          "unbalancing hurts SGD more than Path-SGD (drop of SGD - drop of Path-SGD)",
          "test_acc", ((1.0, "sgd"), (-1.0, "sgd-unbalanced"), (-1.0, "pathsgd"),
                       (1.0, "pathsgd-unbalanced")), +1),
    *(
        claim
        for arm in ("pswa", "pwalks", "pswm")
        for claim in (
            Claim("periodic sampling (Tripathi et al. 2019)",
                  f"{arm.upper()} ends above its base SGD-momentum", "test_acc",
                  _diff(arm, "sgd"), +1),
            Claim("periodic sampling (Tripathi et al. 2019)",
                  f"{arm.upper()}'s test curve is less volatile than SGD's", "volatility",
                  _diff(arm, "sgd"), -1),
        )
    ),
    Claim("Lp sphere (Li et al. 2021)", "neurons on the L1.5 sphere beat the L2 sphere",
          "test_acc", _diff("lp-sphere", "sphere"), +1),
    Claim("Lp sphere (Li et al. 2021)", "neurons on the L1.5 sphere beat no constraint (SGD)",
          "test_acc", _diff("lp-sphere", "sgd"), +1),
)
CLAIMS_CNN: tuple[Claim, ...] = (
    Claim("OPT (Liu et al. 2021)", "OPT beats standard training (SGD) of the same CNN",
          "test_acc", _diff("opt-cnn", "sgd-cnn"), +1),
    Claim("OPT (Liu et al. 2021)", "OPT's CNN ends with lower hyperspherical energy",
          "energy", _diff("opt-cnn", "sgd-cnn"), -1),
)


def _baseline_arms(epochs: int) -> tuple[Arm, ...]:
    return tuple(
        Arm(f"paper-{model}", "adam", model=model, epochs=epochs, config=ADAM_PAPER)
        for model in ("linear", "mlp", "cnn")
    )


def _baselines() -> tuple[Baseline, ...]:
    return (
        Baseline("logistic regression", "paper-linear", 0.32),
        Baseline("MLP", "paper-mlp", 0.68),
        Baseline("CNN", "paper-cnn", 0.94),
    )


def _only(claims: tuple[Claim, ...], arms: tuple[Arm, ...]) -> tuple[Claim, ...]:
    """The claims whose every arm is in ``arms``."""
    keys = {a.key for a in arms}
    return tuple(c for c in claims if all(k in keys for _, k in c.terms))


_PERIODIC_VARIANTS = ("pwalks", "pswm")
_CLAIM_ARMS = _claims_arms(CLAIMS_EPOCHS, cnn=True)
_PERIODIC_ARMS = tuple(a for a in _CLAIM_ARMS if a.key in ("sgd", *_PERIODIC_VARIANTS))
_CNN_ARMS = tuple(a for a in _CLAIM_ARMS if a.model == "cnn")
_DEMO_ARMS = tuple(a for a in _claims_arms(10, cnn=False)
                   if a.key in ("sgd", "opt", "adam-b1000", "lawn-adam-b1000", "pswa"))

SUITES: dict[str, Suite] = {
    "full": Suite(
        "full",
        f"the published baselines (200 epochs) and every claim on the MLP and the CNN "
        f"({CLAIMS_EPOCHS} epochs)",
        (*_CLAIM_ARMS, *_baseline_arms(200)),
        _baselines(),
        _only(CLAIMS_MLP + CLAIMS_CNN, _CLAIM_ARMS),
    ),
    "periodic": Suite(
        "periodic",
        f"PSWA's variants PWALKS and PSWM against their base SGD-momentum (MLP, "
        f"{CLAIMS_EPOCHS} epochs; part of full)",
        _PERIODIC_ARMS,
        (),
        _only(CLAIMS_MLP, _PERIODIC_ARMS),
    ),
    "cnn": Suite(
        "cnn",
        f"the OPT claims on the CNN ({CLAIMS_EPOCHS} epochs; part of full)",
        _CNN_ARMS,
        (),
        CLAIMS_CNN,
    ),
    "demo": Suite(
        "demo",
        "a short version: the baselines at 20 epochs and the OPT, LAWN and PSWA claims "
        "(MLP, 10 epochs)",
        (*_DEMO_ARMS, *_baseline_arms(20)),
        _baselines(),
        _only(CLAIMS_MLP, _DEMO_ARMS),
    ),
}


# ---------------------------------------------------------------- execution


@dataclass(frozen=True)
class Job:
    arm: str
    point: int
    seed: int


_WORKER: dict[str, Any] = {}


def _init_worker(dataset: str) -> None:
    import torch

    from .data import load_dataset

    torch.set_num_threads(1)
    _WORKER["data"] = load_dataset(dataset, seed=0)


def _train(args: tuple[Arm, int, int, str]) -> dict[str, Any]:
    from .methods import get_method
    from .runner import RunSpec, run

    arm, point, seed, device = args
    config = arm.points()[point]
    method = get_method(arm.method)
    spec = RunSpec(method, method.config(config), arm.model, seed, arm.epochs, arm.batch_size,
                   device, unbalance=arm.unbalance)
    record = run(spec, _WORKER["data"])
    record.update(arm=arm.key, point=point)
    return record


def jobs(suite: Suite, seeds: int) -> list[Job]:
    """Every (arm, grid point, seed): the claims' arms first, the long baselines last."""
    baselines = {b.arm for b in suite.baselines}
    out = [Job(a.key, i, s) for a in suite.arms for i in range(len(a.points()))
           for s in range(seeds)]
    return sorted(out, key=lambda j: j.arm in baselines)


def _key(record: dict[str, Any]) -> tuple[str, int, int]:
    return record["arm"], record["point"], record["seed"]


def read_journal(path: Path) -> list[dict[str, Any]]:
    """The records of a journal file (one JSON object per line; a torn last line skipped)."""
    if not path.is_file():
        return []
    records = []
    for line in path.read_text().splitlines():
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return records


def execute(
    suite: Suite, seeds: int, workers: int, device: str = "cpu",
    progress: Callable[[int, int, dict[str, Any]], None] | None = None,
    journal: Path | None = None,
) -> list[dict[str, Any]]:
    """Train every job of ``suite`` (``workers`` processes, one thread each); the records.

    With ``journal``, every finished run is appended to that file as one JSON line and the
    runs already in it are not trained again (an interrupted suite resumes where it stopped).
    """
    import multiprocessing as mp

    todo = jobs(suite, seeds)
    wanted = {(j.arm, j.point, j.seed) for j in todo}
    records = [r for r in read_journal(journal) if _key(r) in wanted] if journal else []
    have = {_key(r) for r in records}
    payload = [(suite.arm(j.arm), j.point, j.seed, device) for j in todo
               if (j.arm, j.point, j.seed) not in have]

    def done(record: dict[str, Any]) -> None:
        records.append(record)
        if journal is not None:
            with journal.open("a") as handle:
                handle.write(json.dumps(record) + "\n")
        if progress is not None:
            progress(len(records), len(todo), record)

    if workers <= 1 or len(payload) <= 1:
        import torch

        threads = torch.get_num_threads()
        try:
            _init_worker(suite.dataset)
            for item in payload:
                done(_train(item))
        finally:
            torch.set_num_threads(threads)
    else:
        ctx = mp.get_context("spawn")
        with ctx.Pool(workers, initializer=_init_worker, initargs=(suite.dataset,)) as pool:
            for record in pool.imap_unordered(_train, payload):
                done(record)
    order = [a.key for a in suite.arms]
    records.sort(key=lambda r: (order.index(r["arm"]), r["point"], r["seed"]))
    return records


def default_workers() -> int:
    """Two processes where two cores are free, else one."""
    return max(1, min(2, os.cpu_count() or 1))


# ---------------------------------------------------------------- analysis


def select(suite: Suite, records: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Per arm: every grid point's mean validation accuracy and the chosen point's runs."""
    chosen = {}
    for arm in suite.arms:
        points = arm.points()
        scores = []
        for i in range(len(points)):
            mine = [r for r in records if r["arm"] == arm.key and r["point"] == i]
            vals = [0.0 if r["diverged"] or not r["epochs"] else r["epochs"][-1]["val_acc"]
                    for r in mine]
            scores.append(statistics.fmean(vals) if vals else math.nan)
        best = max(range(len(points)), key=lambda i: -math.inf if math.isnan(scores[i])
                   else scores[i])
        runs = sorted((r for r in records if r["arm"] == arm.key and r["point"] == best),
                      key=lambda r: r["seed"])
        chosen[arm.key] = {
            "method": arm.method, "model": arm.model, "epochs": arm.epochs,
            "batch_size": arm.batch_size, "unbalance": arm.unbalance,
            "grid": [{"config": p, "mean_val_acc": s} for p, s in zip(points, scores,
                                                                       strict=True)],
            "selected": points[best], "runs": runs,
        }
    return chosen


def evaluate_claim(claim: Claim, chosen: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """The claim's per-seed effects, their mean and 95% interval, and the verdict."""
    by_seed: dict[int, float] = {}
    seeds = sorted({r["seed"] for _, key in claim.terms for r in chosen[key]["runs"]})
    for seed in seeds:
        total = 0.0
        for coef, key in claim.terms:
            run = next((r for r in chosen[key]["runs"] if r["seed"] == seed), None)
            total += coef * (metric(claim.metric, run) if run is not None else math.nan)
        if math.isfinite(total):
            by_seed[seed] = total
    out: dict[str, Any] = {
        "paper": claim.paper, "claim": claim.claim, "metric": claim.metric,
        "metric_label": METRICS[claim.metric][0], "direction": claim.direction,
        "terms": [{"coef": c, "arm": k} for c, k in claim.terms],
        "effects": {str(s): v for s, v in by_seed.items()}, "n": len(by_seed),
    }
    if len(by_seed) < 2:
        out.update(mean=None, low=None, high=None, verdict="inconclusive",
                   note="fewer than 2 seeds with every run finite")
        return out
    ci = paired_interval(list(by_seed.values()))
    out.update(mean=ci.mean, low=ci.low, high=ci.high,
               verdict=verdict(ci.low, ci.high, claim.direction))
    return out


def evaluate_baseline(b: Baseline, chosen: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Mean final test accuracy of the baseline arm with its 95% t-interval, vs published."""
    from scipy import stats

    acc = [r["epochs"][-1]["test_acc"] for r in chosen[b.arm]["runs"]
           if not r["diverged"] and r["epochs"]]
    mean = statistics.fmean(acc) if acc else math.nan
    half = (float(stats.t.ppf(0.975, len(acc) - 1)) * statistics.stdev(acc) / math.sqrt(len(acc))
            if len(acc) >= 2 else math.nan)
    arm = chosen[b.arm]
    return {
        "model": b.label, "arm": b.arm, "published": b.published, "source": b.source,
        "recipe": f"Adam lr {arm['selected']['lr']}, batch {arm['batch_size']}, "
                  f"{arm['epochs']} epochs",
        "n": len(acc), "mean": mean, "low": mean - half, "high": mean + half,
        "within_tolerance": bool(acc) and abs(mean - b.published) <= b.tolerance,
        "tolerance": b.tolerance,
    }


def analyse(suite: Suite, records: list[dict[str, Any]]) -> dict[str, Any]:
    chosen = select(suite, records)
    return {
        "arms": chosen,
        "baselines": [evaluate_baseline(b, chosen) for b in suite.baselines],
        "claims": [evaluate_claim(c, chosen) for c in suite.claims],
    }


def plain_progress(stream: Any = sys.stderr) -> Callable[[int, int, dict[str, Any]], None]:
    """One line per finished run (for logs and pipes)."""
    start = time.perf_counter()

    def report(i: int, n: int, record: dict[str, Any]) -> None:
        acc = record["summary"]["final_test_acc"]
        shown = "diverged" if acc is None else f"test acc {acc:.3f}"
        print(f"[{i}/{n}] {record['arm']} point {record['point']} seed {record['seed']}: "
              f"{shown} ({time.perf_counter() - start:.0f} s)", file=stream, flush=True)

    return report


def records_for_json(records: Iterable[dict[str, Any]], chosen: dict[str, Any]) -> list[Any]:
    """Every run; the per-step residual trace kept only for the selected runs."""
    keep = {(k, r["seed"], r["point"]) for k, a in chosen.items() for r in a["runs"]}
    out = []
    for r in records:
        if (r["arm"], r["seed"], r["point"]) in keep:
            out.append(r)
        else:
            out.append({k: v for k, v in r.items() if k != "residual_trace"})
    return out
