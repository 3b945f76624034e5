"""Run the benchmarks: ``python -m benchmarks.run [--quick] [--device cuda] [--out PATH]``.

``--manifolds``/``--optimizers`` restrict the geodyn cases (MLP only), e.g.
``--manifolds "Oblique rows" NormBall --optimizers RSGD``.

Every case trains the same workload (full step = forward + backward + optimizer
step) and all cases of a workload, with the reference costs, are timed in
interleaved rounds in one process, so slow drifts of the machine hit all alike.
Step times are divided by ``torch.optim.SGD(momentum=0.9, foreach=True)``'s
(``torch.optim.Adam(foreach=True)``'s for Adam-type cases), by the fastest peer
doing the same job, and, where one exists, by the Riemannian floor of that job.

Targets (case time t, reference time T, bound b; met when t <= b T):

* Oblique rows: T = SGD (RSGD), SGD + noise (BAOAB), Adam (Constrained(Adam)),
  b = 1.10, and for RSGD / Constrained(Adam) also t <= the fastest peer of the job;
* LpSphere, NormBall: the same T, b = 1.15; CircleLift: b = 1.5;
* Stiefel qr RSGD: T = the Stiefel floor (SGD + X sym(X^T G) + Cholesky-QR), b = 1.05;
  Stiefel BAOAB: T = floor + noise + two tangent projections + one Cholesky-QR (the
  minimum of its sub-steps: a projection at each of the three points a step visits, one
  retraction per half drift), b = 1.3; Stiefel Constrained(Adam): T = Adam + three
  tangent projections + one Cholesky-QR (the gradient's, the displacement's and the
  moved ``exp_avg``'s, one retraction), b = 1.3;
  Stiefel newton-schulz RSGD: T = Stiefel qr RSGD, b = 1.2.
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import time
from collections import Counter
from collections.abc import Callable
from functools import partial
from pathlib import Path

import torch
import torch._dynamo

from .cases import GEODYN_OPTIMIZERS, MANIFOLDS, Built, Case, baselines, geodyn_cases
from .measure import Timer, cholesky_qr, state_bytes, tall, timed
from .models import Workload, cnn, mlp
from .peers import JOBS

__all__ = ["benchmark", "format_table", "main", "run_workload"]

FLOOR_JOB = "orthonormal, SGD"
QUICK_MANIFOLDS = (
    "Oblique rows", "CircleLift", "LpSphere p=3", "NormBall", "Stiefel qr",
    "Stiefel newton-schulz", "Stiefel SHAKE",
)
# comparisons without a target, each about 15-120x an SGD step on the MLP (torch.optim.Muon:
# about 1800x on a CPU, its bfloat16 Newton-Schulz): left to the full run
QUICK_SKIP = ("geoopt RSGD CanonicalStiefel", "geoopt RAdam EuclideanStiefel",
              "geotorch.orthogonal + SGD", "torch.optim.Muon")
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
    """Noise for every parameter; one Cholesky-QR, one QR and one tangent projection
    X sym(X^T V) of every hidden matrix, on orthonormal copies of the hidden weights (the
    Stiefel cases' points: a trained square weight's Gram matrix can be too ill-conditioned
    for a float32 Cholesky)."""
    params = list(wl.model.parameters())
    mats = [torch.linalg.qr(tall(layer.weight.detach()))[0] for layer in wl.hidden]
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

    def proj() -> None:  # the Stiefel tangent projection V - X sym(X^T V)
        for x in mats:
            a = x.mT @ x
            x - x @ ((a + a.mT) / 2)

    return {"noise": noise, "cholqr": chol_qr, "qr": qr, "proj": proj}


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
            "baseline": case.baseline, "kind": case.kind, "job": case.job, "base": case.base,
            "note": case.note,
        }
        if case.absent is not None:
            records[case.name]["absent"] = case.absent
            log(f"  absent {case.name}: {case.absent}")
            continue
        try:
            start = time.perf_counter()
            built[case.name] = b = case.build(make)
            records[case.name]["build_s"] = time.perf_counter() - start
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
            if name not in records:  # a reference job: every ratio of its kind needs it
                raise RuntimeError(f"the reference job {name[4:]!r} failed: {err}") from err
            records[name]["error"] = f"{type(err).__name__}: {err}"
            log(f"  failed {name}: {records[name]['error']}")
            del timers[name]

    for name in list(timers):
        start = time.perf_counter()
        guarded(name, warmup, record=False)
        if name in records:
            records[name]["warmup_s"] = time.perf_counter() - start
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
    for name in timers:
        if records.get(name, {}).get("kind") == "floor":
            refs["floor:" + records[name]["job"]] = timers[name].median_ms
    sgd_state = state_bytes(built["torch SGD"].optimizer)
    out = []
    for name, rec in records.items():
        if name in timers:
            b, t = built[name], timers[name]
            base_ms = refs.get(rec["base"], sgd_ms)
            rec.update(
                step_ms=t.median_ms,
                ratio=t.median_ms / base_ms,
                opt_step_ms=t.inner_median_ms,
                state_bytes=state_bytes(b.optimizer),
                state_ratio=state_bytes(b.optimizer) / sgd_state,
                residual=b.residual(),
                repeats=len(t.total),
            )
        out.append(rec)
    _compare_with_peers(out, refs)
    for rec in out:
        if "step_ms" in rec:
            rec.update(_target(rec, refs, {r["case"]: r for r in out}))
    return out, refs


def _compare_with_peers(records: list[dict], refs: dict[str, float]) -> None:
    """Add the fastest peer of the job (name, ratio) and the ratio to the job's floor."""
    for job in JOBS:
        timed_peers = [r for r in records if r["job"] == job and r["kind"] == "peer"
                       and "step_ms" in r]
        fastest = min(timed_peers, key=lambda r: r["step_ms"], default=None)
        for rec in records:
            if rec["job"] != job or "step_ms" not in rec:
                continue
            if fastest is not None and rec is not fastest:
                rec.update(peer=fastest["case"], peer_ratio=rec["step_ms"] / fastest["step_ms"])
            if "floor:" + job in refs:
                rec["floor_ratio"] = rec["step_ms"] / refs["floor:" + job]


def _target_spec(rec: dict) -> tuple[list[str], float] | None:
    """The parts of a geodyn case's reference time and its bound (None: no target)."""
    manifold, kind = rec["case"].split(" | ")
    base = {"RSGD": ["sgd"], "RSGD compiled": ["sgd"], "BAOAB": ["sgd", "noise"],
            "Constrained(Adam)": ["adam"]}[kind]
    if manifold == "Oblique rows":
        return base, 1.10
    if manifold in ("LpSphere p=3", "NormBall"):
        return base, 1.15
    if manifold == "CircleLift":
        return base, 1.5
    floor = "floor:" + FLOOR_JOB
    if manifold == "Stiefel newton-schulz" and kind == "RSGD":
        return ["case:Stiefel qr | RSGD"], 1.2
    if manifold == "Stiefel qr" and kind in ("RSGD", "RSGD compiled"):
        return [floor], 1.05
    if manifold.startswith("Stiefel") and kind == "BAOAB":
        return [floor, "noise", "proj", "proj", "cholqr"], 1.3
    if manifold.startswith("Stiefel") and kind == "Constrained(Adam)":
        return ["adam", "proj", "proj", "proj", "cholqr"], 1.3
    return None


def _target(rec: dict, refs: dict[str, float], by_name: dict[str, dict]) -> dict:
    """Reference time, bound and verdict of a geodyn case (empty for baselines)."""
    spec = None if rec["baseline"] else _target_spec(rec)
    if spec is None:
        return {}
    parts, bound = spec
    times = [by_name.get(p[5:], {}).get("step_ms") if p.startswith("case:") else refs.get(p)
             for p in parts]
    if any(t is None for t in times):
        return {}
    ref_ms = sum(t for t in times if t is not None)
    out = {
        "target_ref": " + ".join(
            name if n == 1 else f"{n} {name}"
            for name, n in Counter(p.removeprefix("case:") for p in parts).items()
        ),
        "target_ref_ms": ref_ms,
        "target_ratio": rec["step_ms"] / ref_ms,
        "target_bound": bound,
        "target_met": rec["step_ms"] <= bound * ref_ms,
    }
    if rec["case"].startswith("Oblique rows | ") and "peer_ratio" in rec:  # RSGD, Adam
        out["target_met"] = out["target_met"] and rec["peer_ratio"] <= 1.0
    return out


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
    dev = _device(device)
    if "torch SGD" in skip_baselines:
        raise ValueError("skip_baselines cannot hold 'torch SGD': every ratio is to it")
    # the compiled cases share torch.compile's cache of one step function, each stack
    # shape and first/later step a graph: past the limit of 8 the later cases ran eager
    torch._dynamo.config.recompile_limit = max(torch._dynamo.config.recompile_limit, 64)
    base_cases = [c for c in baselines(dtype) if c.name not in skip_baselines]
    notes = [f"{c.name}: {c.absent}" for c in base_cases if c.absent is not None]
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


def _device(device: str) -> torch.device:
    """The torch device, refused with the reason when it is CUDA and none is usable."""
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(
            f"device={device!r} but torch {torch.__version__} sees no CUDA device "
            "(torch.cuda.is_available() is False): run on a machine with a GPU and a CUDA "
            "build of torch, or drop --device cuda"
        )
    return dev


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
            f"\n{w['name']}   torch SGD {r['sgd']:.2f} ms | torch Adam {_fmt(r.get('adam'), '.2f')}"
            f" ms | noise {r['noise']:.2f} ms | Cholesky-QR {r['cholqr']:.2f} ms | "
            f"QR {r['qr']:.2f} ms | X sym(X^T V) {r['proj']:.2f} ms"
        )
        head = (f"{'case':42s} {'step ms':>8s} {'x base':>11s} {'x peer':>6s} {'x floor':>7s} "
                f"{'opt ms':>7s} {'state':>5s} {'residual':>8s}  target")
        lines += [head, "-" * len(head)]
        peers: dict[str, str] = {}
        for rec in w["records"]:
            if "absent" in rec or "error" in rec:
                why = f"absent: {rec['absent']}" if "absent" in rec else f"error: {rec['error']}"
                lines.append(f"{rec['case']:42s} {why.splitlines()[0][:100]}")
                continue
            if "peer" in rec:
                peers[rec["job"]] = rec["peer"]
            target = ""
            if "target_met" in rec:
                verdict = "met" if rec["target_met"] else "MISSED"
                target = (f"{rec['target_ratio']:.2f}x ({rec['target_ref']}) "
                          f"<= {rec['target_bound']:.2f}: {verdict}")
            base = f"{rec['ratio']:.2f} {rec['base']}"
            residual = "-" if rec["residual"] is None else f"{rec['residual']:8.1e}"
            peer, floor = _fmt(rec.get("peer_ratio"), ".2f"), _fmt(rec.get("floor_ratio"), ".2f")
            lines.append(
                f"{rec['case']:42s} {rec['step_ms']:8.2f} {base:>11s} {peer:>6s} {floor:>7s} "
                f"{_fmt(rec['opt_step_ms'], '7.2f')} {rec['state_ratio']:5.2f} "
                f"{residual:>8s}  {target}" + (f" [{rec['note']}]" if rec["note"] else "")
            )
        lines += [f"x peer of {job}: {name}" for job, name in peers.items()]
    notes = result["meta"]["notes"]
    lines += [f"note: {n}" for n in notes]
    lines.append(f"wall time {result['meta']['wall_s']:.1f} s")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true",
                        help="MLP only, fewer manifolds and repeats (< 3 minutes on 2 cores)")
    parser.add_argument("--device", default="cpu", help="torch device, e.g. cuda")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT,
                        help="the JSON file; the table goes beside it as .txt")
    parser.add_argument("--threads", type=int, default=2, help="torch.set_num_threads")
    parser.add_argument("--manifolds", nargs="+", choices=MANIFOLDS, default=None,
                        help="only these geodyn manifold cases (every baseline still runs)")
    parser.add_argument("--optimizers", nargs="+", choices=GEODYN_OPTIMIZERS, default=None,
                        help="only these geodyn optimizers")
    parser.add_argument("--rounds", type=int, default=None, help="interleaved timed rounds")
    args = parser.parse_args(argv)
    try:
        _device(args.device)
    except RuntimeError as err:
        parser.error(str(err))
    torch.set_num_threads(args.threads)
    kw: dict = {"device": args.device}
    if args.quick:
        kw.update(cnn_channels=None, manifolds=QUICK_MANIFOLDS, skip_baselines=QUICK_SKIP,
                  warmup=2, rounds=4, steps=5)
    if args.manifolds is not None:
        kw.update(cnn_channels=None, manifolds=tuple(args.manifolds))
    if args.optimizers is not None:
        kw["optimizers"] = tuple(args.optimizers)
    if args.rounds is not None:
        kw["rounds"] = args.rounds
    result = benchmark(**kw)
    result["meta"]["quick"] = args.quick
    table = format_table(result)
    args.out.write_text(json.dumps(result, indent=1))
    args.out.with_suffix(".txt").write_text(table + "\n")
    print(table)
    print(f"results written to {args.out} and {args.out.with_suffix('.txt')}")
    return result


if __name__ == "__main__":
    main()
