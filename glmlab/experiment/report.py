"""The markdown report of a spec: what was run (command, commit, device, wall time), each
headline difference against the baseline stated significant or not, every metric, the plots."""

from __future__ import annotations

import json
from pathlib import Path

from glmlab.experiment.cell import ANALYTIC_METRICS
from glmlab.experiment.plots import plots_available
from glmlab.experiment.results import Row
from glmlab.experiment.runner import RUN_LOG
from glmlab.experiment.spec import Spec
from glmlab.experiment.stats import Summary
from glmlab.experiment.timing import timing_lines


def fmt(x: float | None) -> str:
    if x is None:
        return "-"
    if x != 0 and (abs(x) >= 1e5 or abs(x) < 1e-3):
        return f"{x:.3e}"
    return f"{x:.4g}"


def interval(s: Summary) -> str:
    return "-" if s.ci_low is None else f"[{fmt(s.ci_low)}, {fmt(s.ci_high)}]"


def verdict(d: Summary | None, metric: str = "", load_note: str | None = None) -> str:
    if metric in ANALYTIC_METRICS:
        return "calculator (exact)"
    if d is None:
        return "no paired seeds"
    if load_note:
        return load_note
    if d.significant is None:
        return "one seed: no interval, not significant"
    return "**significant**" if d.significant else "not significant"


def headline_lines(spec: Spec, rows: list[Row]) -> list[str]:
    """One sentence per variant and headline metric: the paired difference and its verdict."""
    lines = []
    for row in rows:
        if row.metric not in spec.headline or row.variant == row.baseline:
            continue
        d = row.diff
        base = next((r for r in rows if r.variant == row.baseline and r.metric == row.metric), None)
        if base is None:  # the baseline lacks the metric (MTP acceptance of a model without MTP)
            s = row.summary
            lines.append(f"- `{row.variant}`, {row.metric}: {fmt(s.mean)}, 95% interval {interval(s)} "
                         f"over {s.n} seed(s) (`{row.baseline}` has no {row.metric}).")  # fmt: skip
            continue
        if d is None:
            lines.append(f"- `{row.variant}` vs `{row.baseline}`, {row.metric}: no paired seeds.")
            continue
        rel = ""
        if base is not None and base.summary.mean:
            rel = f" ({d.mean / abs(base.summary.mean):+.1%})"
        said = verdict(d, row.metric, row.load_note)
        lines.append(f"- `{row.variant}` vs `{row.baseline}`, {row.metric}: {fmt(d.mean)}{rel}, 95% interval "
                     f"{interval(d)} over {d.n} seed(s): {said}.")  # fmt: skip
    return lines


def write_report(spec: Spec, results: dict[str, dict], rows: list[Row], out_dir: Path,
                 plots: list[Path]) -> Path:  # fmt: skip
    """report.md in out_dir."""
    runs = [json.loads(line) for line in (out_dir / RUN_LOG).read_text().splitlines()] if (
        out_dir / RUN_LOG).is_file() else []  # fmt: skip
    devices = sorted({r["device"] for r in results.values()})
    first = spec.cells[0].config.train
    train_s = sum(r["metrics"].get("train_time_s", 0.0) for r in results.values())
    missing = [c.key for c in spec.cells if c.key not in results]
    commits = ", ".join(sorted({r.get("commit", "unknown") for r in runs})) or "unknown"
    commands = "; ".join(sorted({f"`{r['command']}`" for r in runs})) or "unknown"
    out = [f"# {spec.name}{' (quick settings)' if spec.quick else ''}", ""]
    if spec.question:
        out += [f"**Question.** {spec.question}", ""]
    out += [
        "## How it was run", "",
        f"- Spec: `{spec.path}`; base `{spec.base}` with {' '.join(f'`{s}`' for s in spec.base_set) or 'no'} "
        f"overrides; {spec.steps} steps of {first.batch_size} x {first.seq_len} tokens; seeds {spec.seeds}.",
        f"- Commands: {commands}.",
        f"- Commit: {commits}. Device: {', '.join(devices) or 'none'}.",
        f"- Wall time: {sum(r['wall_s'] for r in runs):,.0f} s over {len(runs)} invocation(s); "
        f"{train_s:,.0f} s of training summed over cells.",
        f"- Cells: {len(results)} of {len(spec.cells)} finished"
        + (f"; missing: {', '.join(missing)}" if missing else "") + ".",
        "",
        "## Headline differences (paired by seed against the baseline; significant when the 95% "
        "t-interval excludes zero)", "",
        *(headline_lines(spec, rows) or ["- none yet."]),
        "",
        "## All metrics (mean over seeds, 95% t-interval; difference against the baseline)", "",
        "| metric | variant | n | mean | 95% interval | vs | difference | 95% interval | verdict |",
        "|---|---|---|---|---|---|---|---|---|",
    ]  # fmt: skip
    for row in sorted(rows, key=lambda r: list(dict.fromkeys(x.metric for x in rows)).index(r.metric)):
        d = row.diff
        diff_cells = (f"{fmt(d.mean)} | {interval(d)} | {verdict(d, row.metric, row.load_note)}" if d
                      else "- | - | baseline"
                      if row.variant == row.baseline else "- | - | no paired seeds")  # fmt: skip
        out.append(f"| {row.metric} | {row.variant} | {row.summary.n} | {fmt(row.summary.mean)} | "
                   f"{interval(row.summary)} | {row.baseline} | {diff_cells} |")  # fmt: skip
    out += ["", *timing_lines(spec, out_dir), "## Plots", ""]
    if plots:
        out += [f"![{p.stem}](plots/{p.name})" for p in plots]
    elif not plots_available():
        out.append('matplotlib is not installed, so this report has tables only (`pip install -e ".[plot]"`, '
                   "then `glmlab experiment SPEC --report-only` draws them).")  # fmt: skip
    else:
        out.append("No finished cells to plot.")
    out += ["", "## Metrics", "", METRIC_NOTES]
    if spec.notes:
        out += ["", "## Notes", "", spec.notes]
    path = out_dir / "report.md"
    path.write_text("\n".join(out) + "\n")
    return path


METRIC_NOTES = """\
- `val_loss` (nats/token) and `val_bpb` (bits per byte of text) on the held-out split at the last
  step; `final_lm_loss` is the training LM loss of the last logged window.
- `tokens_per_s`: trained tokens over training time; `train_time_s` excludes evaluation.
- `device_load`: cells training on the cell's device at once (itself included), sampled every 5 s
  over its training (since its last start, for a resumed cell) and averaged; a speed difference
  between two cells of one seed whose loads differ by more than 25% is marked not comparable.
- `peak_memory_bytes`: on a GPU the CUDA memory torch allocated; on the CPU the process's peak
  resident memory (which includes the runner's own libraries).
- `train_flops_per_token`, `total_train_flops`, `params_*`, `kv_cache_bytes_per_token`,
  `experts_active_share`: the calculator (`glmlab flops`, glmlab convention) for the cell's config.
- `expert_imbalance`: max over mean tokens per expert, averaged over routers, last logged window.
- `indexer_recall`: share of dense attention probability on the indexer's top-k keys.
- `mtp_accept_dJ[_DOMAIN]`: accepted / verified drafts at draft position J, greedy decoding;
  `spec_speedup[_DOMAIN]`: tokens/s of `--speculative D` over plain greedy decoding, batch 1
  (one thread on a CPU)."""
