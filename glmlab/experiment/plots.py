"""PNG plots of a spec's results (matplotlib, optional: `pip install -e ".[plot]"`): training
loss curves with a band over seeds, and each headline metric against the swept axis."""

from __future__ import annotations

import importlib.util
from pathlib import Path

from glmlab.experiment.results import Row
from glmlab.experiment.spec import Spec
from glmlab.viz.mpl import pyplot


def plots_available() -> bool:
    return importlib.util.find_spec("matplotlib") is not None


def _save(fig, ax, path: Path) -> Path:
    """Grid and tight layout, then the PNG; the figure is closed."""
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    pyplot().close(fig)
    return path


def loss_curves(spec: Spec, results: dict[str, dict], path: Path) -> Path:
    """Training LM loss against step, one line per variant (mean over seeds), shaded between the
    lowest and highest seed."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(8, 5))
    for v in spec.variants:
        curves = [r["curve"] for r in results.values() if r["variant"] == v.name and r["curve"]["step"]]
        if not curves:
            continue
        steps = sorted(set.intersection(*(set(c["step"]) for c in curves)))
        per_step = [[c["lm_loss"][c["step"].index(s)] for c in curves] for s in steps]
        mean = [sum(vals) / len(vals) for vals in per_step]
        (line,) = ax.plot(steps, mean, label=f"{v.name} ({len(curves)} seeds)")
        if len(curves) > 1:
            ax.fill_between(steps, [min(x) for x in per_step], [max(x) for x in per_step],
                            color=line.get_color(), alpha=0.2)  # fmt: skip
    ax.set_xlabel("step")
    ax.set_ylabel("training LM loss (nats/token)")
    ax.set_title(f"{spec.name}: training loss, mean over seeds (band: min-max)")
    ax.legend(fontsize=8)
    return _save(fig, ax, path)


def metric_vs_axis(spec: Spec, rows: list[Row], metric: str, path: Path) -> Path | None:
    """Mean and 95% interval of `metric` at each level of the swept axis, one line per
    combination of the other axes' levels."""
    by_variant = {r.variant: r for r in rows if r.metric == metric}
    if not by_variant:
        return None
    plt = pyplot()
    levels = list(spec.axes[spec.sweep])
    numeric = all(level.replace(".", "", 1).replace("-", "", 1).isdigit() for level in levels)
    fig, ax = plt.subplots(figsize=(7, 4.5))
    groups: dict[tuple, list] = {}
    for v in spec.variants:
        other = tuple((a, lv) for a, lv in v.levels.items() if a != spec.sweep)
        groups.setdefault(other, []).append(v)
    for other, variants in groups.items():
        xs, ys, err = [], [], []
        for v in variants:
            row = by_variant.get(v.name)
            if row is None:
                continue
            xs.append(levels.index(v.levels[spec.sweep]))
            ys.append(row.summary.mean)
            err.append(0.0 if row.summary.ci_high is None else row.summary.ci_high - row.summary.mean)
        label = ", ".join(f"{a}={lv}" for a, lv in other) or metric
        ax.errorbar(
            xs, ys, yerr=err, marker="o", capsize=4, label=label, linestyle="-" if numeric else "none"
        )
    ax.set_xticks(range(len(levels)), levels)
    ax.set_xlabel(spec.sweep)
    ax.set_ylabel(metric)
    ax.set_title(f"{spec.name}: {metric} (mean, 95% interval over seeds)")
    if len(groups) > 1:
        ax.legend(fontsize=8)
    return _save(fig, ax, path)


def loss_vs_compute(spec: Spec, rows: list[Row], path: Path) -> Path | None:
    """Validation loss against the calculator's FLOPs for the whole run, one point per variant."""
    loss = {r.variant: r.summary for r in rows if r.metric == "val_loss"}
    flops = {r.variant: r.summary.mean for r in rows if r.metric == "total_train_flops"}
    names = [v.name for v in spec.variants if v.name in loss and v.name in flops]
    if not names:
        return None
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for name in names:
        s = loss[name]
        err = 0.0 if s.ci_high is None else s.ci_high - s.mean
        ax.errorbar([flops[name]], [s.mean], yerr=[err], marker="o", capsize=4, label=name)
    ax.set_xscale("log")
    ax.set_xlabel("training FLOPs of the run (calculator, glmlab convention)")
    ax.set_ylabel("validation loss (nats/token)")
    ax.set_title(f"{spec.name}: loss against compute")
    ax.legend(fontsize=8)
    return _save(fig, ax, path)


def write_plots(spec: Spec, results: dict[str, dict], rows: list[Row], out_dir: Path) -> list[Path]:
    """Every plot of the spec into out_dir/plots/; an empty list without matplotlib."""
    if not plots_available() or not results:
        return []
    folder = out_dir / "plots"
    folder.mkdir(exist_ok=True)
    made = [loss_curves(spec, results, folder / "loss_curves.png")]
    for metric in spec.headline:
        made.append(metric_vs_axis(spec, rows, metric, folder / f"{metric}_vs_{spec.sweep}.png"))
    made.append(loss_vs_compute(spec, rows, folder / "loss_vs_compute.png"))
    return [p for p in made if p is not None]
