"""The comparison's outputs: a terminal table, results.json, results.md and PNG plots."""

from __future__ import annotations

import json
import math
import statistics
from pathlib import Path
from typing import Any

COLUMNS = (
    ("method", "method"),
    ("final_test_acc", "final test acc"),
    ("best_test_acc", "best test acc"),
    ("final_test_loss", "test loss"),
    ("final_gap", "gap (train-test)"),
    ("time_per_step", "ms / step"),
    ("max_residual", "max residual"),
    ("diverged", "diverged"),
)


def _mean_std(values: list[float], scale: float = 1.0, digits: int = 3) -> str:
    if not values:
        return "-"
    mean = statistics.fmean(values) * scale
    if len(values) == 1:
        return f"{mean:.{digits}f}"
    return f"{mean:.{digits}f} ± {statistics.stdev(values) * scale:.{digits}f}"


def summary_rows(runs: list[dict[str, Any]]) -> list[dict[str, str]]:
    """One row per method: mean ± standard deviation over its non-diverged seeds."""
    rows = []
    for method in dict.fromkeys(r["method"] for r in runs):
        mine = [r["summary"] for r in runs if r["method"] == method]
        ok = [s for s in mine if not s["diverged"]]
        residuals = [s["max_residual"] for s in mine]
        worst = "inf/nan" if None in residuals else f"{max(residuals):.1e}"
        rows.append(
            {
                "method": method,
                "final_test_acc": _mean_std([s["final_test_acc"] for s in ok]),
                "best_test_acc": _mean_std([s["best_test_acc"] for s in ok]),
                "final_test_loss": _mean_std([s["final_test_loss"] for s in ok]),
                "final_gap": _mean_std([s["final_gap"] for s in ok]),
                "time_per_step": _mean_std(
                    [s["time_per_step"] for s in mine if s["time_per_step"] is not None], 1e3, 2
                ),
                "max_residual": worst,
                "diverged": f"{len(mine) - len(ok)}/{len(mine)}"
                + (" DIVERGED" if len(ok) < len(mine) else ""),
            }
        )
    return rows


def format_table(rows: list[dict[str, str]], markdown: bool = False) -> str:
    """The rows as an aligned text table, or as a Markdown table."""
    header = [title for _, title in COLUMNS]
    body = [[row[key] for key, _ in COLUMNS] for row in rows]
    return _table(header, body, markdown)


def _table(header: list[str], body: list[list[str]], markdown: bool) -> str:
    """An aligned text table, or a Markdown table (with ``|`` in cells escaped)."""
    if markdown:
        lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        lines += ["| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |" for cells in body]
        return "\n".join(lines)
    widths = [max(len(c) for c in col) for col in zip(header, *body, strict=True)]
    fmt = "  ".join(f"{{:<{w}}}" for w in widths)
    lines = [fmt.format(*header), fmt.format(*("-" * w for w in widths))]
    lines += [fmt.format(*cells) for cells in body]
    return "\n".join(lines)


def _clean(obj: Any) -> Any:
    """Non-finite floats -> None, so the file is strict JSON."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: _clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_clean(v) for v in obj]
    return obj


def write_json(path: Path, meta: dict[str, Any], runs: list[dict[str, Any]]) -> None:
    path.write_text(json.dumps(_clean({**meta, "runs": runs}), indent=1))


def _figures_and_versions(meta: dict[str, Any], figures: tuple[tuple[str, str], ...]) -> list[str]:
    """Markdown lines: each (caption, file) figure, then the versions the run used."""
    lines = [line for caption, file in figures for line in (f"![{caption}]({file})", "")]
    versions = ", ".join(f"{k} {v}" for k, v in meta["versions"].items())
    return [*lines, f"Versions: {versions}.", ""]


def write_markdown(path: Path, meta: dict[str, Any], rows: list[dict[str, str]]) -> None:
    settings = meta["settings"]
    lines = [
        "# geodyn compare",
        "",
        f"Dataset `{settings['dataset']}`, model `{settings['model']}`, "
        f"{settings['epochs']} epochs, batch size {settings['batch_size']}, "
        f"seeds {settings['seeds']}, device `{settings['device']}`.",
        "Mean ± standard deviation over the seeds that did not diverge; "
        "max residual is the worst constraint residual seen over all steps and seeds.",
        "",
        format_table(rows, markdown=True),
        "",
        *_figures_and_versions(meta, (
            ("test accuracy", "test_accuracy.png"), ("constraint residual", "residual.png"),
            ("weight norm", "weight_norm.png"), ("time per step", "time_per_step.png"),
        )),
    ]
    path.write_text("\n".join(lines))


def write_plots(folder: Path, runs: list[dict[str, Any]]) -> list[Path]:
    """test_accuracy.png, weight_norm.png, residual.png, time_per_step.png in ``folder``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    methods = list(dict.fromkeys(r["method"] for r in runs))
    paths = []
    for key, ylabel, title, name in (
        ("test_acc", "test accuracy", "Test accuracy", "test_accuracy.png"),
        ("weight_norm", "weight norm (Frobenius, all layers)", "Weight norm", "weight_norm.png"),
    ):
        curves = {m: [[e[key] for e in r["epochs"]] for r in runs if r["method"] == m]
                  for m in methods}
        fig, ax = plt.subplots(figsize=(7, 4.5))
        draw_bands(ax, curves)
        ax.set(xlabel="epoch", ylabel=ylabel,
               title=f"{title} (mean and 95% t-band over seeds)")
        ax.legend(fontsize=8, ncol=2)
        ax.grid(alpha=0.3)
        paths.append(_save(fig, folder / name))

    paths.append(plot_residuals(folder / "residual.png", residual_series(runs, "method"),
                                width=7, fontsize=8))

    fig, ax = plt.subplots(figsize=(7, 4.5))
    times = [[r["summary"]["time_per_step"] * 1e3 for r in runs if r["method"] == m
              and r["summary"]["time_per_step"] is not None] for m in methods]
    means = [statistics.fmean(t) if t else 0.0 for t in times]
    errs = [statistics.stdev(t) if len(t) > 1 else 0.0 for t in times]
    ax.bar(methods, means, yerr=errs, capsize=3)
    ax.set(ylabel="ms per step", title="Wall time per optimisation step")
    ax.tick_params(axis="x", rotation=45)
    ax.grid(alpha=0.3, axis="y")
    paths.append(_save(fig, folder / "time_per_step.png"))
    return paths


def residual_series(runs: list[dict[str, Any]], by: str) -> dict[str, Any]:
    """Per ``run[by]`` (method or arm) holding a constraint (a manifold parameter or an OPT
    rotation): the worst residual over its seeds after every step."""
    import numpy as np

    out = {}
    for label in dict.fromkeys(r[by] for r in runs):
        traces = [r["residual_trace"] for r in runs if r[by] == label
                  and r["constrained_parameters"] > 0]
        if traces:
            n = min(len(t) for t in traces)
            out[label] = np.nanmax(np.array([t[:n] for t in traces], dtype=float), axis=0)
    return out


def plot_residuals(path: Path, series: dict[str, Any], width: float, fontsize: float) -> Path:
    """The worst residual after every step, one log-scale curve per label of ``series``
    (:func:`residual_series`), saved at ``path``."""
    import matplotlib.pyplot as plt
    import numpy as np

    fig, ax = plt.subplots(figsize=(width, 4.5))
    for i, (label, worst) in enumerate(series.items()):
        ax.semilogy(np.arange(len(worst)), np.maximum(worst, 1e-18), label=label, lw=1,
                    **style(i))
    ax.set(xlabel="step", ylabel="max constraint residual (worst seed)",
           title="Constraint residual vs step")
    if series:
        ax.legend(fontsize=fontsize, ncol=2)
    else:
        ax.text(0.5, 0.5, "no constrained parameters", ha="center", va="center",
                transform=ax.transAxes)
    ax.grid(alpha=0.3)
    return _save(fig, path)


LINESTYLES = ("-", "--", "-.", ":")


def style(i: int) -> dict[str, Any]:
    """The i-th curve's colour and line style: 20 distinct colours, and line styles that
    change from each curve to the next."""
    import matplotlib

    colours = matplotlib.colormaps["tab20"]
    return {"color": colours((2 * i) % 20 + (i // 10) % 2),
            "linestyle": LINESTYLES[i % len(LINESTYLES)]}


def t_band(values: Any) -> tuple[Any, Any, Any]:
    """Mean over axis 0 and its 95% t-interval (the mean twice for one seed)."""
    import numpy as np
    from scipy import stats

    values = np.asarray(values, dtype=float)
    mean = values.mean(0)
    n = values.shape[0]
    if n < 2:
        return mean, mean, mean
    half = stats.t.ppf(0.975, n - 1) * values.std(0, ddof=1) / np.sqrt(n)
    return mean, mean - half, mean + half


def draw_bands(ax: Any, curves: dict[str, list[list[float]]]) -> None:
    """One line per label with its 95% t-band over the seeds' curves (cut to the shortest)."""
    import numpy as np

    for i, (label, series) in enumerate(curves.items()):
        n = min((len(c) for c in series), default=0)
        if n == 0:
            continue
        mean, low, high = t_band([c[:n] for c in series])
        x = np.arange(1, n + 1)
        look = style(i)
        ax.plot(x, mean, label=label, lw=1.5, **look)
        ax.fill_between(x, low, high, alpha=0.15, color=look["color"], lw=0)


def _save(fig: Any, path: Path) -> Path:
    import matplotlib.pyplot as plt

    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


# ---------------------------------------------------------------- geodyn reproduce


def format_baselines(rows: list[dict[str, Any]], markdown: bool = False) -> str:
    """Measured vs published test accuracy of the MNIST-1D baselines."""
    header = ["model", "recipe", "seeds", "test acc (95% CI)", "published", "within 3 points"]
    body = [
        [r["model"], r["recipe"], str(r["n"]),
         f"{100 * r['mean']:.1f} [{100 * r['low']:.1f}, {100 * r['high']:.1f}]",
         f"{100 * r['published']:.0f}", "yes" if r["within_tolerance"] else "NO"]
        for r in rows
    ]
    return _table(header, body, markdown)


def _effect(row: dict[str, Any]) -> str:
    if row["mean"] is None:
        return "-"
    return f"{row['mean']:+.3g} [{row['low']:+.3g}, {row['high']:+.3g}]"


def format_claims(rows: list[dict[str, Any]], markdown: bool = False) -> str:
    """Paper, claim, metric, paired effect with its 95% interval, seeds, verdict."""
    header = ["paper", "claim", "metric", "effect [95% CI]", "seeds", "verdict"]
    body = [[r["paper"], r["claim"], r["metric"], _effect(r), str(r["n"]), r["verdict"]]
            for r in rows]
    return _table(header, body, markdown)


def format_arms(arms: dict[str, Any], markdown: bool = False) -> str:
    """Every arm's selected grid point, its validation and test accuracy."""
    header = ["arm", "method", "model", "batch", "epochs", "selected", "val acc", "test acc"]
    body = []
    for key, a in arms.items():
        ok = [r for r in a["runs"] if not r["diverged"] and r["epochs"]]
        test = [r["epochs"][-1]["test_acc"] for r in ok]
        val = [r["epochs"][-1]["val_acc"] for r in ok]
        chosen = ", ".join(f"{k}={v}" for k, v in sorted(a["selected"].items())) or "defaults"
        body.append([key, a["method"], a["model"] + (" (unbalanced)" if a["unbalance"] else ""),
                     str(a["batch_size"]), str(a["epochs"]), chosen,
                     _mean_std(val), _mean_std(test) + (f" ({len(a['runs']) - len(ok)} div.)"
                                                        if len(ok) < len(a["runs"]) else "")])
    return _table(header, body, markdown)


def write_reproduce_json(
    path: Path, meta: dict[str, Any], analysis: dict[str, Any], runs: list[dict[str, Any]]
) -> None:
    arms = {k: {**{f: v for f, v in a.items() if f != "runs"},
                "seeds": [r["seed"] for r in a["runs"]]} for k, a in analysis["arms"].items()}
    body = {**meta, "baselines": analysis["baselines"], "claims": analysis["claims"],
            "arms": arms, "runs": runs}
    path.write_text(json.dumps(_clean(body), indent=1))


def write_reproduce_markdown(path: Path, meta: dict[str, Any], analysis: dict[str, Any]) -> None:
    s = meta["settings"]
    lines = [
        f"# geodyn reproduce: suite `{s['suite']}`",
        "",
        f"{meta['summary']}. Data set `{s['dataset']}`, {s['seeds']} seeds, "
        f"{s['workers']} processes, wall time {meta['wall_time_s'] / 60:.1f} min.",
        "",
        *(["## Published baselines", "", format_baselines(analysis["baselines"], markdown=True),
            ""] if analysis["baselines"] else []),
        "## Claims",
        "",
        "Effect: mean over seeds of the paired difference (method - baseline, or the "
        "difference of differences named in the claim) in the metric's units, with its 95% "
        "t-interval. Verdict: reproduced when the interval excludes 0 on the claimed side, "
        "contradicted when it excludes 0 on the other side, else inconclusive.",
        "",
        format_claims(analysis["claims"], markdown=True),
        "",
        "Metrics: " + "; ".join(sorted({f"`{c['metric']}` = {c['metric_label']}"
                                         for c in analysis["claims"]})) + ".",
        "",
        "![forest plot](forest.png)",
        "",
        "## Arms (grid point chosen on the validation split)",
        "",
        format_arms(analysis["arms"], markdown=True),
        "",
        *_figures_and_versions(meta, (
            ("learning curves", "learning_curves.png"), ("constraint residual", "residual.png"),
            ("weight norm", "weight_norm.png"),
        )),
    ]
    path.write_text("\n".join(lines))


VERDICT_COLOURS = {"reproduced": "tab:green", "contradicted": "tab:red",
                   "inconclusive": "tab:gray"}


def write_reproduce_plots(folder: Path, analysis: dict[str, Any]) -> list[Path]:
    """forest.png, learning_curves.png, residual.png, weight_norm.png in ``folder``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    paths = []
    claims = [c for c in analysis["claims"] if c["mean"] is not None]
    metrics = list(dict.fromkeys(c["metric"] for c in claims))
    if metrics:
        heights = [0.8 + 0.35 * sum(c["metric"] == m for c in claims) for m in metrics]
        fig, axes = plt.subplots(len(metrics), 1, figsize=(9, sum(heights) + 0.6),
                                 gridspec_kw={"height_ratios": heights}, squeeze=False)
        for ax, m in zip(axes[:, 0], metrics, strict=True):
            mine = [c for c in claims if c["metric"] == m]
            y = np.arange(len(mine))[::-1]
            for yi, c in zip(y, mine, strict=True):
                colour = VERDICT_COLOURS[c["verdict"]]
                ax.errorbar(c["mean"], yi, xerr=[[c["mean"] - c["low"]], [c["high"] - c["mean"]]],
                            fmt="o", color=colour, capsize=3)
            ax.axvline(0.0, color="black", lw=0.8)
            ax.set_yticks(y, [c["claim"] for c in mine], fontsize=7)
            ax.set_xlabel(mine[0]["metric_label"], fontsize=8)
            ax.grid(alpha=0.3, axis="x")
        handles = [plt.Line2D([], [], color=c, marker="o", ls="", label=v)
                   for v, c in VERDICT_COLOURS.items()]
        axes[0, 0].legend(handles=handles, fontsize=7, loc="best")
        axes[0, 0].set_title("Paired effects with 95% t-intervals")
        paths.append(_save(fig, folder / "forest.png"))

    arms = analysis["arms"]
    for name, key, ylabel in (("learning_curves.png", "test_acc", "test accuracy"),
                              ("weight_norm.png", "weight_norm", "weight norm (all layers)")):
        groups = list(dict.fromkeys((a["model"], a["batch_size"]) for a in arms.values()))
        fig, axes = plt.subplots(1, len(groups), figsize=(5.5 * len(groups), 4.5),
                                 squeeze=False)
        for ax, (model, batch) in zip(axes[0], groups, strict=True):
            curves = {k: [[e[key] for e in r["epochs"]] for r in a["runs"]]
                      for k, a in arms.items() if (a["model"], a["batch_size"]) == (model, batch)}
            draw_bands(ax, curves)
            ax.set(xlabel="epoch", ylabel=ylabel, title=f"{model}, batch {batch}")
            ax.legend(fontsize=6, ncol=2)
            ax.grid(alpha=0.3)
        fig.suptitle(f"{ylabel}: mean and 95% t-band over seeds")
        paths.append(_save(fig, folder / name))

    selected = [r for a in arms.values() for r in a["runs"]]
    paths.append(plot_residuals(folder / "residual.png", residual_series(selected, "arm"),
                                width=8, fontsize=7))
    return paths
