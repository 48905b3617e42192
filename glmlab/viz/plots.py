"""`glmlab plot`: figures of one or several runs from their metrics.jsonl, each run in its own
colour so that runs compare on one chart. Each line's label names its run (and the series when
a panel holds several), and its data are the logged values themselves."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from glmlab.viz.mpl import output_dir, pyplot, save_figures
from glmlab.viz.runs import RunMetrics, load_runs

# The loss panels: title -> the record keys drawn in it (those a run logged).
LOSS_PANELS = {
    "LM loss (nats/token)": ["lm_loss"],
    "MTP loss": ["mtp_loss"],
    "indexer KL": ["indexer_loss"],
    "balance loss": ["balance_loss"],
}
MTP_DEPTH = re.compile(r"mtp_loss_(\d+)$")


def _mtp_keys(run: RunMetrics) -> list[str]:
    """mtp_loss_1..D when the run logged each depth (D > 1), else the mean mtp_loss."""
    depths = sorted((k for k in run.keys() if MTP_DEPTH.match(k)), key=lambda k: int(MTP_DEPTH.match(k)[1]))
    return depths or ["mtp_loss"]


def _label(run: RunMetrics, key: str) -> str:
    depth = MTP_DEPTH.match(key)
    return f"{run.name} depth {depth[1]}" if depth else run.name


def _grid(plt, n: int, title: str):
    cols = 2 if n > 1 else 1
    rows = (n + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(6 * cols, 3.6 * rows), squeeze=False)
    for ax in axes.flat[n:]:
        ax.remove()
    fig.suptitle(title)
    return fig, list(axes.flat[:n])


def loss_figure(runs: list[RunMetrics], *, x: str):
    """Loss terms against `x` = "step" or "tokens"; validation loss dashed beside the LM loss."""
    plt = pyplot()
    panels = [t for t, keys in LOSS_PANELS.items() if any(keys[0] in r.keys() for r in runs)]
    fig, axes = _grid(plt, len(panels), f"losses against {'steps' if x == 'step' else 'tokens'}")
    for ax, title in zip(axes, panels, strict=True):
        for i, run in enumerate(runs):
            scale = 1 if x == "step" else run.tokens_per_step
            keys = _mtp_keys(run) if title == "MTP loss" else LOSS_PANELS[title]
            for j, key in enumerate(keys):
                steps, values = run.series(key)
                if steps:
                    style = ("-", "--", ":", "-.")[j % 4]
                    ax.plot(
                        np.array(steps) * scale,
                        values,
                        color=f"C{i}",
                        linestyle=style,
                        label=_label(run, key),
                    )
            if title.startswith("LM loss"):
                steps, values = run.series("val_loss", val=True)
                if steps:
                    ax.plot(np.array(steps) * scale, values, color=f"C{i}", linestyle="--", marker="o",
                            label=f"{run.name} val")  # fmt: skip
        ax.set_title(title)
        ax.set_xlabel("step" if x == "step" else "tokens")
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize="small")
    fig.tight_layout()
    return fig


def throughput_figure(runs: list[RunMetrics]):
    """Learning rate, tokens/s and MFU against steps (MFU is not logged in the dense warm-up)."""
    plt = pyplot()
    panels = [("lr", "learning rate", 1), ("tokens_per_s", "tokens/s", 1), ("mfu", "MFU (%)", 100)]
    fig, axes = _grid(plt, len(panels), "schedule and speed")
    for ax, (key, title, scale) in zip(axes, panels, strict=True):
        for i, run in enumerate(runs):
            steps, values = run.series(key)
            ax.plot(steps, np.array(values, dtype=float) * scale, color=f"C{i}", marker=".", label=run.name)
        ax.set_title(title)
        ax.set_xlabel("step")
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize="small")
    fig.tight_layout()
    return fig


def load_matrix(run: RunMetrics) -> tuple[list[int], np.ndarray]:
    """(steps, [routers, records]) max/mean tokens per expert of each router at each logged step."""
    steps, rows = run.series("expert_imbalance_per_layer")
    return steps, np.array(rows, dtype=float).T


def final_load(run: RunMetrics) -> tuple[int, np.ndarray]:
    """(step, [routers, E]) the last logged window's tokens per expert over their mean (1 = even)."""
    steps, loads = run.series("expert_load")
    counts = np.array(loads[-1], dtype=float)
    return steps[-1], counts / np.maximum(counts.mean(-1, keepdims=True), 1e-9)


def expert_load_figure(runs: list[RunMetrics]):
    """Per run: max/mean load of each router over time (heatmap) and the final load of each
    expert relative to the mean."""
    plt = pyplot()
    runs = [r for r in runs if "expert_imbalance_per_layer" in r.keys()]
    fig, axes = plt.subplots(len(runs), 2, figsize=(13, 0.5 * len(runs[0].routers) + 2.6 * len(runs)),
                             squeeze=False)  # fmt: skip
    fig.suptitle("expert load (1 = every expert gets the mean)")
    from matplotlib.colors import TwoSlopeNorm

    finals = {run.name: final_load(run) for run in runs if "expert_load" in run.keys()}
    top = max([2.0, *(float(rel.max()) for _, rel in finals.values())])  # one scale for every run
    for (left, right), run in zip(axes, runs, strict=True):
        steps, matrix = load_matrix(run)
        image = left.imshow(matrix, aspect="auto", cmap="magma_r", interpolation="nearest", vmin=1.0)
        left.set_title(f"{run.name}: max/mean tokens per expert")
        ticks = np.unique(np.linspace(0, len(steps) - 1, min(len(steps), 8)).round().astype(int))
        left.set_xticks(ticks, [str(steps[t]) for t in ticks])
        left.set_xlabel("step")
        left.set_yticks(range(len(run.routers)), run.routers)
        fig.colorbar(image, ax=left)
        if run.name in finals:
            step, relative = finals[run.name]
            norm = TwoSlopeNorm(1.0, 0.0, top)  # white = the mean load
            image = right.imshow(relative, aspect="auto", cmap="RdBu_r", norm=norm, interpolation="nearest")
            right.set_title(f"{run.name}: load / mean per expert at step {step}")
            right.set_xlabel("expert")
            right.set_xticks(range(relative.shape[1]))
            right.set_yticks(range(len(run.routers)), run.routers)
            fig.colorbar(image, ax=right)
        else:
            right.set_axis_off()
    fig.tight_layout()
    return fig


def recall_figure(runs: list[RunMetrics]):
    """Share of dense attention probability inside the indexer's top-k, against steps."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7, 4))
    for i, run in enumerate(runs):
        steps, values = run.series("indexer_recall")
        if steps:
            ax.plot(steps, values, color=f"C{i}", marker=".", label=run.name)
    ax.set_title("indexer recall: attention mass inside the top-k")
    ax.set_xlabel("step")
    ax.set_ylim(0, 1.02)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize="small")
    return fig


def run_figures(runs: list[RunMetrics]) -> dict:
    """name -> matplotlib Figure; figures whose data no run logged are left out."""
    figures = {
        "losses_vs_steps": loss_figure(runs, x="step"),
        "losses_vs_tokens": loss_figure(runs, x="tokens"),
        "schedule_and_speed": throughput_figure(runs),
    }
    if any("expert_imbalance_per_layer" in r.keys() for r in runs):
        figures["expert_load"] = expert_load_figure(runs)
    if any("indexer_recall" in r.keys() for r in runs):
        figures["indexer_recall"] = recall_figure(runs)
    return figures


def plot_runs(paths: list[str], out: str | Path | None = None) -> list[Path]:
    """PNGs of the runs in `out` (default: <run>/plots for one run, ./plots for several)."""
    runs = load_runs(paths)
    folder = output_dir(out if out is not None else (runs[0].path / "plots" if len(runs) == 1 else "plots"))
    return save_figures(run_figures(runs), folder)
