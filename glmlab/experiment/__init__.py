"""Ablation experiments: a YAML spec of variants and seeds, run cell by cell (resumable, several
at once), summarised with intervals and paired differences, plotted and reported in markdown."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from glmlab.experiment.plots import write_plots
from glmlab.experiment.report import write_report
from glmlab.experiment.results import load_results, table, write_tables
from glmlab.experiment.runner import RunOutcome, run_spec, spec_devices
from glmlab.experiment.spec import Spec, load_spec
from glmlab.experiment.timing import time_variants


@dataclass
class Experiment:
    spec: Spec
    out_dir: Path
    outcome: RunOutcome | None
    report: Path
    plots: list[Path]


def experiment_dir(spec: Spec, out: str | Path) -> Path:
    """Where a spec's cells and reports go: OUT/<spec name>, or OUT/<spec name>-quick."""
    return Path(out) / f"{spec.name}{'-quick' if spec.quick else ''}"


def summarize_experiment(spec: Spec, out_dir: Path) -> tuple[Path, list[Path]]:
    """Tables, plots and report from the finished cells under out_dir."""
    results = load_results(spec, out_dir)
    rows = table(spec, results)
    write_tables(rows, out_dir)
    plots = write_plots(spec, results, rows, out_dir)
    return write_report(spec, results, rows, out_dir, plots), plots


def run_experiment(
    spec_path: str | Path, *, out: str | Path = "runs/experiments", quick: bool = False, parallel: int = 1,
    device: str = "auto", report_only: bool = False, steps: int | None = None, max_cells: int | None = None,
    timing: bool = False, echo=print, command: str = "",
) -> Experiment:  # fmt: skip
    """Load the spec (`steps` replacing its steps), run its unfinished cells (unless
    `report_only`; at most `max_cells` of them), time each variant alone on the device when
    `timing` (after the cells, unless the run was stopped; with `report_only`, without training
    any), write tables, plots and report."""
    spec = load_spec(spec_path, quick=quick, steps=steps)
    out_dir = experiment_dir(spec, out)
    outcome = None
    if not report_only:
        outcome = run_spec(spec, out_dir, parallel=parallel, device=device, max_cells=max_cells, echo=echo,
                           command=command)  # fmt: skip
    out_dir.mkdir(parents=True, exist_ok=True)
    if timing and (outcome is None or outcome.stopped_by is None):
        time_variants(spec, out_dir, device=spec_devices(device)[0], echo=echo)
    report, plots = summarize_experiment(spec, out_dir)
    return Experiment(spec, out_dir, outcome, report, plots)


__all__ = ["Experiment", "Spec", "experiment_dir", "load_spec", "run_experiment", "summarize_experiment"]
