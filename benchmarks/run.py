"""Run the benchmarks: ``python -m benchmarks.run [--quick] [--device cuda] [--out PATH]``.

Every case trains the same workload (full step = forward + backward + optimizer
step) and all cases of a workload, with the reference costs, are timed in
interleaved rounds in one process, so slow drifts of the machine hit all alike.
Ratios are to ``torch.optim.SGD(momentum=0.9, foreach=True)``.

Targets (reference time T, case time t, bound b):

* sphere-like (Oblique, CircleLift, LpSphere, NormBall): b = 1.10;
  Stiefel: b = 1.15 and T includes one Cholesky-QR of every hidden matrix;
* RSGD: T = SGD (+ Cholesky-QR); BAOAB: T = SGD + Gaussian noise for all
  parameters (+ Cholesky-QR); Constrained(Adam): T = torch Adam (+ Cholesky-QR);
* met when t <= b T.
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path

import torch

from .cases import GEODYN_OPTIMIZERS, MANIFOLDS, Built, Case, baselines, geodyn_cases
from .measure import Timer, cholesky_qr, state_bytes, tall, timed
from .models import Workload, cnn, mlp

__all__ = ["benchmark", "format_table", "main", "run_workload"]

BOUND = {"sphere": 1.10, "stiefel": 1.15}
QUICK_MANIFOLDS = (
    "Oblique rows", "CircleLift", "LpSphere p=3", "NormBall", "Stiefel qr", "Stiefel SHAKE"
)
# comparisons without a target, each 10-30x an SGD step on the MLP: left to the full run
QUICK_SKIP = ("geoopt RSGD EuclideanStiefel", "geotorch.orthogonal + SGD")
DEFAULT_OUT = Path(__file__).with_name("results.json")


def _step_job(built: Built) -> Callable[[], float]:
    """One full training step; returns the seconds of the optimizer step alone."""
    wl, opt = built.workload, built.optimizer
    device = wl.inputs.device

    def job() -> float:
        opt.zero_grad(set_to_none=True)
        wl.loss().backward()
        return timed(opt.step, device)

    return job


def _reference_jobs(wl: Workload) -> dict[str, Callable[[], None]]:
    """Noise for every parameter, one Cholesky-QR and one QR of every hidden matrix."""
    params = list(wl.model.parameters())
    mats = [tall(layer.weight.detach()) for layer in wl.hidden]
    gen = torch.Generator(device=wl.inputs.device).manual_seed(0)

    def noise() -> None:
        for p in params:
            torch.randn(p.shape, generator=gen, dtype=p.dtype, device=p.device)

    def chol_qr() -> None:
        for x in mats:
            cholesky_qr(x)

    def qr() -> None:
        for x in mats:
            torch.linalg.qr(x)

    return {"noise": noise, "cholqr": chol_qr, "qr": qr}


def run_workload(
    make: Callable[[bool], Workload],
    cases: list[Case],
    *,
    warmup: int,
    rounds: int,
    steps: int,
    log: Callable[[str], None] = print,
) -> tuple[list[dict], dict[str, float]]:
    """Time every case and reference job on one workload; records and reference times (ms)."""
    timers: dict[str, Timer] = {}
    built: dict[str, Built] = {}
    records: dict[str, dict] = {}
    for case in cases:
        records[case.name] = {
            "case": case.name, "optimizer": case.optimizer, "family": case.family,
            "baseline": case.baseline, "note": case.note,
        }
        try:
            built[case.name] = b = case.build(make)
        except Exception as err:  # a case that cannot be built is reported, not fatal
            records[case.name]["error"] = f"{type(err).__name__}: {err}"
            log(f"  skipped {case.name}: {records[case.name]['error']}")
            continue
        timers[case.name] = Timer(_step_job(b), b.workload.inputs.device)
    if "torch SGD" not in built:
        raise RuntimeError("the reference case torch SGD could not be built")
    ref_wl = built["torch SGD"].workload
    for name, fn in _reference_jobs(ref_wl).items():
        timers["ref:" + name] = Timer(lambda fn=fn: fn(), ref_wl.inputs.device)

    def guarded(name: str, repeats: int, record: bool) -> None:
        try:
            timers[name].run(repeats, record)
        except Exception as err:
            records[name]["error"] = f"{type(err).__name__}: {err}"
            log(f"  failed {name}: {records[name]['error']}")
            del timers[name]

    for name in list(timers):
        guarded(name, warmup, record=False)
    log(f"  warm-up done ({len(timers)} jobs)")
    for r in range(rounds):
        names = list(timers)
        shift = r % len(names)
        for name in names[shift:] + names[:shift]:
            guarded(name, steps, record=True)
        log(f"  round {r + 1}/{rounds} done")

    refs = {name[4:]: timers[name].median_ms for name in timers if name.startswith("ref:")}
    sgd_ms = timers["torch SGD"].median_ms
    refs["sgd"] = sgd_ms
    if "torch Adam" in timers:
        refs["adam"] = timers["torch Adam"].median_ms
    sgd_state = state_bytes(built["torch SGD"].optimizer)
    out = []
    for name, rec in records.items():
        if name in timers:
            b, t = built[name], timers[name]
            rec.update(
                step_ms=t.median_ms,
                ratio=t.median_ms / sgd_ms,
                opt_step_ms=t.inner_median_ms,
                state_bytes=state_bytes(b.optimizer),
                state_ratio=state_bytes(b.optimizer) / sgd_state,
                residual=b.residual(),
                repeats=len(t.total),
            )
            rec.update(_target(rec, refs))
        out.append(rec)
    return out, refs


def _target(rec: dict, refs: dict[str, float]) -> dict:
    """Reference time, bound and verdict of a geodyn case (empty for baselines)."""
    if rec["baseline"] or rec["family"] not in BOUND:
        return {}
    base = {"RSGD": ("sgd",), "RSGD compiled": ("sgd",), "BAOAB": ("sgd", "noise"),
            "Constrained(Adam)": ("adam",)}
    parts = list(base[rec["optimizer"]]) + (["cholqr"] if rec["family"] == "stiefel" else [])
    if any(p not in refs for p in parts):
        return {}
    ref_ms = sum(refs[p] for p in parts)
    bound = BOUND[rec["family"]]
    return {
        "target_ref": " + ".join(parts),
        "target_ref_ms": ref_ms,
        "target_ratio": rec["step_ms"] / ref_ms,
        "target_bound": bound,
        "target_met": rec["step_ms"] <= bound * ref_ms,
    }


def benchmark(
    sizes: tuple[int, ...] = (784, 1024, 1024, 10),
    batch: int = 128,
    cnn_channels: tuple[int, ...] | None = (3, 32, 64),
    image: int = 32,
    manifolds: tuple[str, ...] = MANIFOLDS,
    optimizers: tuple[str, ...] = GEODYN_OPTIMIZERS,
    skip_baselines: tuple[str, ...] = (),
    warmup: int = 5,
    rounds: int = 6,
    steps: int = 5,
    device: str = "cpu",
    dtype: torch.dtype = torch.float32,
    log: Callable[[str], None] = print,
) -> dict:
    """Run all cases on the MLP ``sizes`` (and the CNN unless ``cnn_channels`` is None).

    ``manifolds`` and ``optimizers`` pick the geodyn cases (names from
    ``benchmarks.cases.MANIFOLDS`` and ``GEODYN_OPTIMIZERS``); every baseline runs but
    those named in ``skip_baselines`` (torch SGD, the reference, cannot be skipped).
    Each case is warmed up ``warmup`` steps, then timed over ``rounds`` interleaved
    rounds of ``steps`` steps.

    Returns ``{"meta", "workloads": [{"name", "references", "records"}]}``; times in ms.
    """
    dev = torch.device(device)
    if "torch SGD" in skip_baselines:
        raise ValueError("skip_baselines cannot hold 'torch SGD': every ratio is to it")
    base_cases, notes = baselines()
    base_cases = [c for c in base_cases if c.name not in skip_baselines]
    cases = base_cases + geodyn_cases(manifolds, optimizers)
    factories = [partial(_on(dev, dtype, mlp), sizes=sizes, batch=batch)]
    if cnn_channels is not None:
        make_cnn = _on(dev, dtype, cnn)
        factories.append(partial(make_cnn, channels=cnn_channels, image=image, batch=batch))
    start = time.perf_counter()
    result: dict = {"meta": _meta(dev, notes, warmup, rounds, steps), "workloads": []}
    result["meta"]["dtype"] = str(dtype)
    for factory in factories:
        name = factory(lift=False).name
        log(f"{name}: {len(cases)} cases, {rounds} x {steps} timed steps each")
        records, refs = run_workload(
            factory, cases, warmup=warmup, rounds=rounds, steps=steps, log=log
        )
        result["workloads"].append({"name": name, "references": refs, "records": records})
    result["meta"]["wall_s"] = time.perf_counter() - start
    return result


def _on(
    device: torch.device, dtype: torch.dtype, make: Callable[..., Workload]
) -> Callable[..., Workload]:
    def factory(lift: bool = False, **kw: object) -> Workload:
        wl = make(lift=lift, **kw)
        wl.model.to(device=device, dtype=dtype)
        wl.inputs, wl.targets = wl.inputs.to(device, dtype), wl.targets.to(device)
        return wl

    return factory


def _meta(dev: torch.device, notes: list[str], warmup: int, rounds: int, steps: int) -> dict:
    return {
        "torch": torch.__version__,
        "device": str(dev) if dev.type != "cuda" else torch.cuda.get_device_name(dev),
        "threads": torch.get_num_threads(),
        "machine": platform.machine(),
        "warmup": warmup,
        "timed_steps": rounds * steps,
        "notes": notes,
    }


def _fmt(x: float | None, spec: str) -> str:
    return "-" if x is None or (isinstance(x, float) and math.isnan(x)) else format(x, spec)


def format_table(result: dict) -> str:
    """The results as a plain-text table, one block per workload."""
    lines = []
    for w in result["workloads"]:
        r = w["references"]
        lines.append(
            f"\n{w['name']}   torch SGD {r['sgd']:.2f} ms | noise {r['noise']:.2f} ms | "
            f"Cholesky-QR {r['cholqr']:.2f} ms | QR {r['qr']:.2f} ms"
        )
        head = (f"{'case':36s} {'step ms':>8s} {'xSGD':>6s} {'opt ms':>7s} "
                f"{'state':>6s} {'residual':>9s}  target")
        lines += [head, "-" * len(head)]
        for rec in w["records"]:
            if "error" in rec:
                lines.append(f"{rec['case']:36s} error: {rec['error'][:70]}")
                continue
            target = ""
            if "target_met" in rec:
                verdict = "met" if rec["target_met"] else "MISSED"
                target = (f"{rec['target_ratio']:.2f}x ({rec['target_ref']}) "
                          f"<= {rec['target_bound']:.2f}: {verdict}")
            lines.append(
                f"{rec['case']:36s} {rec['step_ms']:8.2f} {rec['ratio']:6.2f} "
                f"{_fmt(rec['opt_step_ms'], '7.2f')} {rec['state_ratio']:6.2f} "
                f"{rec['residual']:9.1e}  {target}" + (f" [{rec['note']}]" if rec["note"] else "")
            )
    notes = result["meta"]["notes"]
    lines += [f"note: {n}" for n in notes]
    lines.append(f"wall time {result['meta']['wall_s']:.1f} s")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true",
                        help="MLP only, fewer manifolds and repeats (< 3 minutes on 2 cores)")
    parser.add_argument("--device", default="cpu", help="torch device, e.g. cuda")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="where to write the JSON")
    parser.add_argument("--threads", type=int, default=2, help="torch.set_num_threads")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.quick:
        result = benchmark(cnn_channels=None, manifolds=QUICK_MANIFOLDS, skip_baselines=QUICK_SKIP,
                           warmup=2, rounds=4, steps=5, device=args.device)
    else:
        result = benchmark(device=args.device)
    result["meta"]["quick"] = args.quick
    args.out.write_text(json.dumps(result, indent=1))
    print(format_table(result))
    print(f"results written to {args.out}")
    return result


if __name__ == "__main__":
    main()
