"""The results table of a spec: every metric of every variant over its seeds (mean, spread, 95%
interval) and its paired difference against the variant's baseline, as CSV and JSON."""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass
from pathlib import Path

from glmlab.experiment.cell import RESULT
from glmlab.experiment.load import LOAD_TOLERANCE
from glmlab.experiment.runner import cell_dir
from glmlab.experiment.spec import Spec
from glmlab.experiment.stats import Summary, paired_difference, summarize

CSV_COLUMNS = ["variant", "metric", "n", "mean", "sd", "ci95_low", "ci95_high", "baseline", "diff_n",
               "diff_mean", "diff_ci95_low", "diff_ci95_high", "significant", "load_note"]  # fmt: skip

# Speeds measured while other cells shared the device depend on how many did (`device_load`):
# a paired seed whose two cells' loads differ by more than LOAD_TOLERANCE makes the difference moot.
LOAD_SENSITIVE = ("tokens_per_s", "train_time_s")


@dataclass
class Row:
    variant: str
    metric: str
    values: dict[int, float]  # seed -> value
    summary: Summary
    baseline: str
    diff: Summary | None  # variant - baseline over shared seeds; None for the baseline itself
    load_note: str | None = None  # why a speed difference is not comparable, when it is not

    def csv(self) -> dict:
        s, d = self.summary, self.diff
        return {
            "variant": self.variant, "metric": self.metric, "n": s.n, "mean": s.mean, "sd": s.sd,
            "ci95_low": s.ci_low, "ci95_high": s.ci_high, "baseline": self.baseline,
            "diff_n": d.n if d else None, "diff_mean": d.mean if d else None,
            "diff_ci95_low": d.ci_low if d else None, "diff_ci95_high": d.ci_high if d else None,
            "significant": d.significant if d else None, "load_note": self.load_note,
        }  # fmt: skip


def load_results(spec: Spec, out_dir: Path) -> dict[str, dict]:
    """The finished cells' result.json, by cell key."""
    found = {}
    for cell in spec.cells:
        path = cell_dir(out_dir, cell) / RESULT
        if path.is_file():
            found[cell.key] = json.loads(path.read_text())
    return found


def metric_names(results: dict[str, dict]) -> list[str]:
    """Every scalar metric any cell measured, in first-seen order."""
    names: dict[str, None] = {}
    for r in results.values():
        names.update(dict.fromkeys(r["metrics"]))
    return list(names)


def table(spec: Spec, results: dict[str, dict]) -> list[Row]:
    """One row per (variant, metric) that has at least one finished seed."""
    values: dict[tuple[str, str], dict[int, float]] = {}
    for r in results.values():
        for metric, value in r["metrics"].items():
            if value is not None:
                values.setdefault((r["variant"], metric), {})[r["seed"]] = float(value)
    rows = []
    for v in spec.variants:
        for metric in metric_names(results):
            seeds = values.get((v.name, metric))
            if not seeds:
                continue
            base = spec.baseline[v.name]
            diff = None
            if base != v.name and (base, metric) in values:
                diff = paired_difference(seeds, values[(base, metric)])
            ordered = [seeds[s] for s in sorted(seeds)]
            note = None
            if diff is not None and metric in LOAD_SENSITIVE:
                loads = values.get((v.name, "device_load"), {}), values.get((base, "device_load"), {})
                note = load_note(*loads, paired=set(seeds) & set(values[(base, metric)]))
            rows.append(Row(v.name, metric, seeds, summarize(ordered), base, diff, note))
    return rows


def load_note(ours: dict[int, float], theirs: dict[int, float], *, paired: set[int]) -> str | None:
    """'not comparable: ...' when, for one of the `paired` seeds, the two cells trained beside
    different numbers of cells (cells without a recorded load are not judged)."""
    seeds = sorted(set(ours) & set(theirs) & paired)
    if not any(max(ours[s], theirs[s]) > LOAD_TOLERANCE * min(ours[s], theirs[s]) for s in seeds):
        return None
    mean = lambda d: sum(d[s] for s in seeds) / len(seeds)  # noqa: E731
    return f"not comparable: {mean(ours):.1f} against {mean(theirs):.1f} cells training on the device"


def write_tables(rows: list[Row], out_dir: Path) -> tuple[Path, Path]:
    """results.csv (one line per variant and metric) and results.json (the same with per-seed values)."""
    csv_path, json_path = out_dir / "results.csv", out_dir / "results.json"
    with open(csv_path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=CSV_COLUMNS)
        writer.writeheader()
        for row in rows:
            writer.writerow(row.csv())
    data = [{**row.csv(), "values": {str(k): v for k, v in sorted(row.values.items())}} for row in rows]
    json_path.write_text(json.dumps(data, indent=1) + "\n")
    return csv_path, json_path
