"""The resumable runner: every unfinished cell of a spec, one after another in this process or
in N worker processes at once; finished cells are skipped, a killed cell resumes from its
checkpoint. SIGINT/SIGTERM stop the workers (each saves a checkpoint) and the tables are still
written from the cells that finished."""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import queue
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from glmlab.config import Config
from glmlab.errors import GlmlabError
from glmlab.experiment.cell import (
    RESULT,
    CellStopped,
    is_finished,
    prepare_tokenizer,
    run_cell,
    tokenizer_key,
)
from glmlab.experiment.spec import Cell, Spec

RUN_LOG = "invocations.jsonl"
REPO = Path(__file__).resolve().parent.parent.parent


def commit() -> str:
    """HEAD of the checkout glmlab runs from, marked when the work tree has changes."""
    try:
        head = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"], capture_output=True,
                              text=True, check=True).stdout.strip()  # fmt: skip
        dirty = subprocess.run(["git", "-C", str(REPO), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, check=True).stdout.strip()  # fmt: skip
    except (OSError, subprocess.CalledProcessError):
        return "unknown (not a git checkout)"
    return f"{head} (with uncommitted changes)" if dirty else head


@dataclass
class Job:
    """A tokenizer to prepare (cell is None) or a cell to run."""

    key: str
    folder: Path
    cell: Cell | None = None
    tokenizer_dir: Path | None = None


@dataclass
class RunOutcome:
    finished: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)
    stopped_by: int | None = None
    wall_s: float = 0.0


def spec_devices(device: str) -> list[str]:
    """The runner's `--device`: one device, or several separated by commas (`cuda:0,cuda:1`), which
    the worker processes take in turn."""
    return [d.strip() for d in device.split(",")]


def cell_dir(out_dir: Path, cell: Cell) -> Path:
    safe = "".join(c if c.isalnum() or c in "-_.=," else "_" for c in cell.variant)
    return out_dir / "cells" / safe / f"seed-{cell.seed}"


def _execute(job: Job, spec_info: dict, device: str) -> None:
    if job.cell is None:
        prepare_tokenizer(spec_info["tokenizer_cfgs"][job.key], job.folder)
        return
    info = {"spec": spec_info["name"], "variant": job.cell.variant, "seed": job.cell.seed,
            **spec_info["cells"][job.key]}  # fmt: skip
    run_cell(job.cell.config, job.folder, device=device, tokenizer_dir=job.tokenizer_dir,
             mtp_eval=spec_info["mtp_eval"], info=info)  # fmt: skip


def _worker(jobs, results, spec_info: dict, threads: int, device: str) -> None:
    """A worker process: run jobs on `device` until the None sentinel, reporting (key, error or None)."""
    import torch

    if threads:
        torch.set_num_threads(threads)
    if device.startswith("cuda:"):  # CUDA graphs and Triton launch on the current device's streams
        torch.cuda.set_device(torch.device(device))
    while True:
        job = jobs.get()
        if job is None:
            return
        try:
            _execute(job, spec_info, device)
            results.put((job.key, None))
        except CellStopped as err:
            results.put((job.key, f"stopped: {err}"))
            return
        except Exception as err:  # a failed cell is reported; the others go on
            results.put((job.key, f"{type(err).__name__}: {err}".splitlines()[0]))


class _Stop(Exception):
    def __init__(self, signum: int) -> None:
        self.signum = signum


def _run_pool(jobs: list[Job], spec_info: dict, parallel: int, threads: int,
              on_done: Callable[[str, str | None], None]) -> None:  # fmt: skip
    ctx = mp.get_context("spawn")
    job_q, result_q = ctx.Queue(), ctx.Queue()
    for job in jobs:
        job_q.put(job)
    devices = spec_devices(spec_info["device"])
    workers = [ctx.Process(target=_worker, daemon=False,
                           args=(job_q, result_q, spec_info, threads, devices[i % len(devices)]))
               for i in range(min(parallel, len(jobs)))]  # fmt: skip
    for _ in workers:
        job_q.put(None)
    for w in workers:
        w.start()
    remaining = {job.key for job in jobs}
    try:
        while remaining:
            try:
                key, error = result_q.get(timeout=1.0)
            except queue.Empty:
                if not any(w.is_alive() for w in workers):
                    for key in sorted(remaining):
                        on_done(key, "not run: every worker process had exited (killed, or out of memory?)")
                    return
                continue
            remaining.discard(key)
            on_done(key, error)
    finally:
        for w in workers:
            if w.is_alive() and remaining:
                w.terminate()  # SIGTERM: the training loop saves a checkpoint and returns
        for w in workers:
            w.join()


def run_jobs(jobs: list[Job], spec_info: dict, parallel: int,
             on_done: Callable[[str, str | None], None]) -> None:  # fmt: skip
    """Run the jobs here (parallel 1) or in `parallel` spawned processes, splitting the CPU's
    threads between them."""
    if not jobs:
        return
    if parallel <= 1:
        for job in jobs:
            try:
                _execute(job, spec_info, spec_devices(spec_info["device"])[0])
                on_done(job.key, None)
            except CellStopped:
                raise
            except GlmlabError as err:
                on_done(job.key, str(err))
            except Exception as err:
                on_done(job.key, f"{type(err).__name__}: {err}".splitlines()[0])
        return
    threads = 0 if spec_info["device"].startswith("cuda") else max(1, (os.cpu_count() or 1) // parallel)
    _run_pool(jobs, spec_info, parallel, threads, on_done)


def run_spec(spec: Spec, out_dir: Path, *, parallel: int = 1, device: str = "auto",
             max_cells: int | None = None, echo: Callable[[str], None] = print,
             command: str = "") -> RunOutcome:  # fmt: skip
    """Run every unfinished cell of `spec` under `out_dir` (the first `max_cells` of them in the
    spec's order, seed by seed, when given: a study split over several calls); returns what finished,
    was skipped or failed. A signal stops the run (outcome.stopped_by) with finished cells kept."""
    started, stamp, head = time.perf_counter(), time.strftime("%Y-%m-%d %H:%M:%S %Z"), commit()
    out_dir.mkdir(parents=True, exist_ok=True)
    outcome = RunOutcome()
    pending: list[Cell] = []
    for cell in spec.cells:
        (outcome.skipped if _finished(cell, cell_dir(out_dir, cell)) else pending).append(cell)
    if outcome.skipped:
        echo(f"{len(outcome.skipped)} of {len(spec.cells)} cells already finished: skipped")
    if max_cells is not None and len(pending) > max_cells:
        echo(f"running {max_cells} of the {len(pending)} unfinished cells (--max-cells)")
        pending = pending[:max_cells]
    tok_cfgs = {tokenizer_key(c.config): c.config for c in pending if c.config.train.tokenizer == "bpe"}
    spec_info = {
        "name": spec.name, "device": device, "mtp_eval": spec.mtp_eval, "tokenizer_cfgs": tok_cfgs,
        "cells": {c.key: {"levels": spec.variant(c.variant).levels,
                          "overrides": spec.variant(c.variant).overrides} for c in pending},
    }  # fmt: skip
    tok_root = out_dir / "tokenizers"
    tok_jobs = [Job(key, tok_root / key) for key in tok_cfgs]
    cell_jobs = [
        Job(c.key, cell_dir(out_dir, c), c,
            tok_root / tokenizer_key(c.config) if c.config.train.tokenizer == "bpe" else None)
        for c in pending
    ]  # fmt: skip
    done = {"n": len(outcome.skipped)}

    def on_tokenizer(key: str, error: str | None) -> None:
        if error:
            outcome.failed[f"tokenizer {key}"] = error
        else:
            echo(f"tokenizer {key} ready")

    def on_cell(key: str, error: str | None) -> None:
        done["n"] += 1
        if error is None:
            outcome.finished.append(key)
            result = json.loads((cell_dir(out_dir, _cell(spec, key)) / RESULT).read_text())
            m = result["metrics"]
            line = f"val loss {m['val_loss']:.4f}" if "val_loss" in m else "no val loss"
            echo(f"[{done['n']}/{len(spec.cells)}] {key}: {line}, {m.get('tokens_per_s', 0):,.0f} tokens/s")
        elif error.startswith("stopped"):
            echo(f"[{done['n']}/{len(spec.cells)}] {key}: {error} (a re-run resumes it)")
        else:
            outcome.failed[key] = error
            echo(f"[{done['n']}/{len(spec.cells)}] {key} FAILED: {error} "
                 f"(log: {cell_dir(out_dir, _cell(spec, key)) / 'train.log'})")  # fmt: skip

    def stop(signum, frame) -> None:
        raise _Stop(signum)

    old = {s: signal.signal(s, stop) for s in (signal.SIGTERM,)} if parallel > 1 else {}
    try:
        run_jobs(tok_jobs, spec_info, parallel, on_tokenizer)
        if not any(k.startswith("tokenizer") for k in outcome.failed):
            run_jobs(cell_jobs, spec_info, parallel, on_cell)
    except CellStopped as err:
        outcome.stopped_by = err.signum
    except (_Stop, KeyboardInterrupt) as err:
        outcome.stopped_by = err.signum if isinstance(err, _Stop) else signal.SIGINT
    finally:
        for s, handler in old.items():
            signal.signal(s, handler)
    outcome.wall_s = time.perf_counter() - started
    record = {"command": command or " ".join(sys.argv), "started": stamp, "commit": head,
              "wall_s": round(outcome.wall_s, 1), "finished": len(outcome.finished),
              "skipped": len(outcome.skipped), "failed": len(outcome.failed),
              "stopped_by": outcome.stopped_by, "parallel": parallel}  # fmt: skip
    with open(out_dir / RUN_LOG, "a") as f:
        f.write(json.dumps(record) + "\n")
    return outcome


def _finished(cell: Cell, folder: Path) -> bool:
    """A finished cell must have run this cell's config: a spec edited since is an error."""
    if not is_finished(folder):
        return False
    changed = config_changes(json.loads((folder / RESULT).read_text())["config"], cell.config.to_dict())
    if changed:
        raise GlmlabError(f"cell {cell.key} in {folder} finished with another config ({', '.join(changed)} "
                          "differ): the spec or --steps changed since; use a new --out")  # fmt: skip
    return True


def config_changes(ran: dict, now: dict) -> list[str]:
    """Fields in which a finished cell's config differs from the spec's now (`train.` prefixed for the
    training fields). A field the finished cell predates (glmlab gained it since) counts as unchanged
    while it holds its default, which is what that run did."""
    defaults = Config().to_dict()

    def differ(old: dict, new: dict, base: dict, prefix: str) -> list[str]:
        keys = (set(old) | set(new)) - {"train"}
        return [prefix + k for k in keys if old.get(k, base.get(k)) != new.get(k)]

    model = differ(ran, now, defaults, "")
    return sorted(model + differ(ran.get("train", {}), now["train"], defaults["train"], "train."))


def _cell(spec: Spec, key: str) -> Cell:
    return next(c for c in spec.cells if c.key == key)
