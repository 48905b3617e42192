"""Reading run folders for plots: the resolved config and the records of `metrics.jsonl`, split
into training records (one per logged step) and validation records."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from glmlab.checkpoint import CONFIG
from glmlab.config import Config, load_config
from glmlab.errors import GlmlabError
from glmlab.train.loop import METRICS
from glmlab.viz.routers import router_labels


@dataclass
class RunMetrics:
    """One run's records. `train` holds the records with a `loss`, `val` those with a `val_loss`."""

    path: Path
    name: str
    cfg: Config
    train: list[dict]
    val: list[dict]

    @property
    def tokens_per_step(self) -> int:
        t = self.cfg.train
        return t.batch_size * t.grad_accum * t.seq_len

    @property
    def routers(self) -> list[str]:
        return router_labels(self.cfg.model)

    def series(self, key: str, *, val: bool = False) -> tuple[list[int], list[float]]:
        """(steps, values) of the records that hold a number under `key`."""
        rows = [r for r in (self.val if val else self.train) if r.get(key) is not None]
        return [r["step"] for r in rows], [r[key] for r in rows]

    def keys(self) -> set[str]:
        return {k for r in self.train for k, v in r.items() if v is not None}


def load_run(path: str | Path, name: str | None = None) -> RunMetrics:
    """A run folder written by `glmlab train` -> its config and metrics, or a one-line error."""
    run = Path(path)
    if not run.is_dir():
        raise GlmlabError(f"{run} is not a folder: give a run folder written by glmlab train")
    if not (run / CONFIG).is_file():
        raise GlmlabError(f"{run} is not a run folder (no {CONFIG}): give a folder written by glmlab train")
    metrics = run / METRICS
    if not metrics.is_file():
        raise GlmlabError(f"{run} has no {METRICS} yet: train it for at least one logged step")
    train, val = [], []
    for n, line in enumerate(metrics.read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            raise GlmlabError(f"{metrics} line {n} is not JSON: remove the line or re-run training") from None
        if "loss" in record:
            train.append(record)
        elif "val_loss" in record:
            val.append(record)
    if not train:
        raise GlmlabError(f"{metrics} has no training records: train the run for at least one logged step")
    return RunMetrics(run, name or run.name, load_config(run / CONFIG), train, val)


def load_runs(paths: list[str]) -> list[RunMetrics]:
    """Several runs, named by folder (with the parent folder when two share a name)."""
    if not paths:
        raise GlmlabError("give at least one run folder")
    names = [Path(p).name for p in paths]
    labels = [
        f"{Path(p).parent.name}/{Path(p).name}" if names.count(Path(p).name) > 1 else Path(p).name
        for p in paths
    ]
    return [load_run(p, label) for p, label in zip(paths, labels, strict=True)]
