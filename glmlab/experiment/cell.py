"""One cell of an experiment: train a variant at one seed in its run folder (resuming a killed
run), then measure it. The cell is finished once `result.json` exists in the run folder; it is
written last, atomically, so a killed cell is never mistaken for a finished one."""

from __future__ import annotations

import dataclasses
import json
import os
import re
import shutil
import time
import traceback
from pathlib import Path

import torch
from rich.console import Console

from glmlab.accounting import flops_report, kv_cache_bytes_per_token, parameter_counts
from glmlab.config import Config
from glmlab.data.prepare import TOKENIZER_DIR, prepare_data
from glmlab.data.tokenizer import load_tokenizer
from glmlab.experiment.load import DeviceLoad
from glmlab.train import train
from glmlab.train.loop import METRICS
from glmlab.train.rundir import is_run

RESULT = "result.json"
TRAIN_SUMMARY = "train_summary.json"
LOG = "train.log"


class CellStopped(Exception):
    """Training was stopped by a signal; its checkpoint is saved and a re-run resumes it."""

    def __init__(self, signum: int, step: int) -> None:
        super().__init__(f"stopped by signal {signum} at step {step}")
        self.signum = signum


def is_finished(run_dir: Path) -> bool:
    return (Path(run_dir) / RESULT).is_file()


def write_json(path: Path, data: dict) -> None:
    """Write to a temporary name and rename: a reader sees the old file or the whole new one."""
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(json.dumps(data, indent=1) + "\n")
    os.replace(tmp, path)


def tokenizer_key(cfg: Config) -> str:
    """Runs that share data, split seed, tokenizer kind and vocabulary share one tokenizer."""
    t = cfg.train
    text = f"{t.data}-v{t.val_fraction}-s{t.seed}-{t.tokenizer}{cfg.model.vocab_size}"
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text)


def with_tokenizer_vocab(cfg: Config, tokenizer_dir: Path | None) -> Config:
    """The config a cell trains: a shared BPE tokenizer trained on little data may hold fewer tokens
    than `vocab_size`, and the model follows it, as `glmlab train` does for a new run."""
    if tokenizer_dir is None:
        return cfg
    vocab = load_tokenizer(tokenizer_dir / TOKENIZER_DIR).vocab_size
    if vocab == cfg.model.vocab_size:
        return cfg
    return dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, vocab_size=vocab))


def prepare_tokenizer(cfg: Config, folder: Path) -> None:
    """Train (or find) the tokenizer in `folder` and fill the token cache, once for many cells."""
    if not (folder / TOKENIZER_DIR).is_dir():
        prepare_data(cfg, folder)


def _device_type(device: str) -> str:
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return device.split(":")[0]


def _curves(run_dir: Path) -> dict:
    """Training LM loss at each logged step and validation loss at each evaluation."""
    curve: dict = {"step": [], "lm_loss": [], "val_step": [], "val_loss": []}
    path = run_dir / METRICS
    for line in path.read_text().splitlines() if path.is_file() else []:
        rec = json.loads(line)
        if "lm_loss" in rec:
            curve["step"].append(rec["step"])
            curve["lm_loss"].append(rec["lm_loss"])
        if "val_loss" in rec:
            curve["val_step"].append(rec["step"])
            curve["val_loss"].append(rec["val_loss"])
    return curve


ANALYTIC_METRICS = ("train_flops_per_token", "total_train_flops", "params_total", "params_active",
                    "kv_cache_bytes_per_token", "experts_active_share")  # fmt: skip


def analytic_metrics(cfg: Config, device_type: str) -> dict:
    """What the calculator says about the cell's config: FLOPs per trained token (glmlab
    convention, MTP included), the whole run's FLOPs (dense warm-up steps counted as forward
    only: their backward pass reaches only the indexer), parameters, KV cache, experts active."""
    m, t = cfg.model, cfg.train
    per_token = flops_report(cfg, t.seq_len, "train", "glmlab", True, device=device_type).per_token
    forward = flops_report(cfg, t.seq_len, "forward", "glmlab", True, device=device_type).per_token
    warm = min(t.dsa_warmup_steps, t.steps) if m.use_dsa else 0
    tokens_per_step = t.batch_size * t.grad_accum * t.seq_len
    params = parameter_counts(m)
    out = {
        "train_flops_per_token": per_token,
        "total_train_flops": tokens_per_step * (warm * forward + (t.steps - warm) * per_token),
        "params_total": float(params["total"]),
        "params_active": float(params["active"]),
        "kv_cache_bytes_per_token": float(kv_cache_bytes_per_token(cfg, "bf16")["total"]),
    }
    if m.use_moe:
        out["experts_active_share"] = m.num_experts_per_tok / m.n_routed_experts
    return out


def _train(cfg: Config, run_dir: Path, device: str, tokenizer_dir: Path | None, log) -> dict:
    summary_path = run_dir / TRAIN_SUMMARY
    if summary_path.is_file():
        return json.loads(summary_path.read_text())
    resume = is_run(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    if not resume and tokenizer_dir is not None and not (run_dir / TOKENIZER_DIR).exists():
        shutil.copytree(tokenizer_dir / TOKENIZER_DIR, run_dir / TOKENIZER_DIR)
    console = Console(file=log, width=140, force_terminal=False)
    with DeviceLoad(device) as load:
        result = train(cfg, run_dir, resume=resume, device=device, console=console, show_progress=False)
    if result.signum is not None:
        raise CellStopped(result.signum, result.step)
    summary = dict(result.summary)
    if not summary.get("tokens") and result.step:  # killed after the last checkpoint: nothing left to train
        t = cfg.train
        summary["tokens"] = result.step * t.batch_size * t.grad_accum * t.seq_len
        summary["tokens_per_s"] = summary["tokens"] / max(summary.get("train_time_s", 0.0), 1e-9)
        evals = [r for r in map(json.loads, (run_dir / METRICS).read_text().splitlines()) if "val_loss" in r]
        summary.update({k: evals[-1][k] for k in ("val_loss", "val_bpb")} if evals else {})
    summary["resumed"] = resume  # the trainer's summary holds its peak memory
    summary["device_load"] = load.mean
    write_json(summary_path, summary)
    return summary


SUMMARY_METRICS = ("val_loss", "val_bpb", "final_lm_loss", "final_mtp_loss", "tokens_per_s", "train_time_s",
                   "peak_memory_bytes", "expert_imbalance", "indexer_recall", "device_load")  # fmt: skip


def run_cell(
    cfg: Config, run_dir: Path, *, device: str = "auto", tokenizer_dir: Path | None = None,
    mtp_eval: dict | None = None, info: dict | None = None,
) -> dict:  # fmt: skip
    """Train (or resume) the cell, measure it and write `result.json`; returns the result.
    `mtp_eval` ({domains, prompts, max_new_tokens}) sets the speculative-decoding measurement
    made when the model has MTP modules; `info` is stored with the result. The result records
    the spec's config; the model trained may have a smaller vocabulary (`trained_vocab_size`)."""
    spec_cfg, cfg = cfg, with_tokenizer_vocab(cfg, tokenizer_dir)
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    with open(run_dir / LOG, "a") as log:
        try:
            summary = _train(cfg, run_dir, device, tokenizer_dir, log)
            metrics = {k: float(summary[k]) for k in SUMMARY_METRICS if summary.get(k) is not None}
            device_type = _device_type(device)
            metrics.update(analytic_metrics(cfg, device_type))
            mtp = None
            depth = cfg.model.num_nextn_predict_layers
            if depth > 0 and cfg.model.num_mtp_modules > 0:
                from glmlab.experiment.speculative import speculative_metrics
                from glmlab.generate import Generator

                settings = {"domains": ["code", "prose", "json", "sql"], "prompts": 3, "max_new_tokens": 48}
                settings.update(mtp_eval or {})
                gen = Generator.from_source(str(run_dir), device)
                threads = torch.get_num_threads()
                if gen.device.type == "cpu":
                    torch.set_num_threads(1)  # batch-1 decoding: one thread, as benchmarks/ time it
                try:
                    mtp = speculative_metrics(gen, depth, **settings)
                finally:
                    torch.set_num_threads(threads)
                metrics.update(_flatten_mtp(mtp))
        except CellStopped as err:
            log.write(f"{err}: a re-run of the experiment resumes this cell from its checkpoint\n")
            raise
        except Exception:
            log.write(traceback.format_exc())
            raise
    result = {
        **(info or {}),
        "config": spec_cfg.to_dict(),
        "trained_vocab_size": cfg.model.vocab_size,
        "device": device_name(device),
        "metrics": metrics,
        "peak_memory_kind": summary.get("peak_memory_kind"),
        "resumed": summary.get("resumed", False),
        "mtp": mtp,
        "curve": _curves(run_dir),
        "measure_seconds": time.perf_counter() - started,
    }
    write_json(run_dir / RESULT, result)
    return result


def _flatten_mtp(mtp: dict) -> dict:
    """Scalar metrics: acceptance at each depth and speed-up, per domain and averaged over domains."""
    per_domain: dict = {}
    for domain, row in mtp.items():
        for j, a in enumerate(row["acceptance"], 1):
            if a is not None:
                per_domain.setdefault(f"mtp_accept_d{j}", {})[domain] = a
        if row["speedup"] is not None:
            per_domain.setdefault("spec_speedup", {})[domain] = row["speedup"]
    out = {}
    for key, values in per_domain.items():
        out[key] = sum(values.values()) / len(values)
        out.update({f"{key}_{domain}": v for domain, v in values.items()})
    return out


def device_name(device: str) -> str:
    """The accelerator's name, or the CPU's model and core count."""
    if _device_type(device) == "cuda":
        return torch.cuda.get_device_name(None if device in ("auto", "cuda") else torch.device(device))
    model = ""
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        found = re.search(r"model name\s*:\s*(.+)", cpuinfo.read_text())
        model = found.group(1).strip() if found else ""
    return f"CPU {model} ({os.cpu_count()} cores)".replace("  ", " ")
