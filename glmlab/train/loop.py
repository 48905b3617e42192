"""The training loop: DSA stages, the auxiliary-loss-free bias update, evaluation, checkpoints,
signals and the progress display (docs/architecture.md, "Training")."""

from __future__ import annotations

import contextlib
import math
import os
import random
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from glmlab.accounting import training_flops_per_token
from glmlab.build import build_model
from glmlab.checkpoint import (
    CONFIG,
    OPTIMIZER,
    SHARDED,
    latest_checkpoint,
    load_checkpoint_config,
    load_state,
    load_weights,
    save_checkpoint,
    write_config,
)
from glmlab.config import Config
from glmlab.data.batching import Batches, validation_batches
from glmlab.data.prepare import RunData, prepare_data
from glmlab.device import autocast, bf16_parameters, resolve_device
from glmlab.errors import GlmlabError
from glmlab.measure import device_peak, mfu, peak_memory, reset_peak_memory
from glmlab.model import CausalLM
from glmlab.model.compile import compile_layers
from glmlab.model.losses import next_token_loss, total_loss
from glmlab.model.recompute import apply_recompute
from glmlab.parallel.checkpoint import resume_one_process_checkpoint, save_sharded_checkpoint
from glmlab.parallel.dcp import is_sharded, load_sharded
from glmlab.parallel.parallelize import parallelize, plain_tensor
from glmlab.parallel.world import current_world
from glmlab.plan import Call, attention_plan, keeps_sparse_probs, layer_kinds
from glmlab.report.train import collapse_warning, eval_line, step_lines
from glmlab.train.gc_schedule import scheduled_gc
from glmlab.train.metrics import MetricsLog, load_imbalance, rank_imbalance
from glmlab.train.optim import build_optimizer
from glmlab.train.rundir import ensure_writable, refuse_leftover_run, removed_on_failure, resume_hint
from glmlab.train.schedule import DENSE_WARMUP, lr_at, stage_at

METRICS = "metrics.jsonl"


@torch.no_grad()
def update_router_biases(model: CausalLM, counts: torch.Tensor, gamma: float) -> None:
    """Auxiliary-loss-free balancing (docs/architecture.md, "Mixture of Experts"):
    b_e += gamma * sign(mean load - load_e) for each router; `counts` [routers, E] are the tokens each
    expert received this step."""
    c = counts.float()
    step = gamma * torch.sign(c.mean(-1, keepdim=True) - c)
    for router, delta in zip(model.routers(), step, strict=True):
        router.e_score_correction_bias.add_(delta.to(router.e_score_correction_bias))


def set_stage(model: CausalLM, stage: str, *, freeze: bool = True) -> None:
    """Stage 1 trains only the indexer; every other stage trains every parameter.

    Only the indexer receives gradients in stage 1 either way (its loss reads detached inputs and
    a detached target); `freeze` also stops autograd from recording the rest (unfrozen, a warm-up
    step keeps one micro-batch's activations of the whole model until its backward is done).
    FSDP2 cannot have it: each unit fixes its gradient-reduction dtype at its first forward from
    the parameters then trainable, so the root unit (embedding, head), frozen then, later reduced
    its bf16 gradients without the cast to fp32 and stopped the first sparse step ("attempting to
    assign a gradient with dtype BFloat16 to a tensor with grad_dtype Float"; glm5-1b on two
    H200s, torch 2.11)."""
    indexer = _indexer_ids(model)
    for p in model.parameters():
        p.requires_grad_(not freeze or stage != DENSE_WARMUP or id(p) in indexer)


def drop_untrained_gradients(model: CausalLM) -> None:
    """Stage 1: clear every gradient but the indexer's. Eager autograd leaves the others None (the
    indexer's loss reads detached inputs), but the backward of a compiled layer left trainable
    (`set_stage` under FSDP2) returns zeros for every parameter it was given, and AdamW would still
    decay those and count a step for them: compiled glm5-1b under FSDP2 read LM loss 5.35 at step 4
    where one GPU read 7.08 (experiments/results/h200-session20/, call 4)."""
    indexer = _indexer_ids(model)
    for p in model.parameters():
        if id(p) not in indexer:
            p.grad = None


def _indexer_ids(model: CausalLM) -> set[int]:
    return {id(p) for p in model.indexer_parameters()}


@torch.no_grad()
def evaluate(model: CausalLM, batches: list[torch.Tensor], token_bytes: torch.Tensor, dense: bool, autocast):
    """Validation LM loss (nats per token) and bits per byte of the predicted text."""
    model.eval()
    nats, tokens, n_bytes = 0.0, 0, 0
    for x in batches:
        x = x.to(token_bytes.device)
        with autocast():
            logits = model(x, dsa_dense=dense).logits
        targets = x[:, 1:]
        nats += float(next_token_loss(logits, x, shift=1, reduction="sum"))
        tokens += targets.numel()
        n_bytes += int(token_bytes[targets].sum())
    model.train()
    return nats / tokens, nats / max(1, n_bytes) / math.log(2)


@torch.no_grad()
def indexer_recall(model: CausalLM, x: torch.Tensor, autocast) -> float | None:
    """Share of dense attention probability inside the indexer's top-k, on this batch; None without
    running the model where no layer's plan reports it (the Triton and Flex paths keep no dense
    probabilities to measure it with)."""
    m, S = model.config, x.shape[1]
    call = Call(S, S, cache=False, labels=True, dsa_dense=True, device=x.device.type)
    if not any(attention_plan(m, kind, call).recall for kind in layer_kinds(m) if kind.indexer):
        return None
    with autocast():
        out = model(x, labels=x, dsa_dense=True)
    return None if out.indexer_recall is None else float(out.indexer_recall)


def _rng_state(device: torch.device) -> dict:
    state = {"torch": torch.get_rng_state(), "python": random.getstate()}
    state["numpy"] = list(np.random.get_state())
    state["numpy"][1] = state["numpy"][1].tolist()
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def _set_rng_state(state: dict, device: torch.device) -> None:
    torch.set_rng_state(state["torch"])
    kind, keys, *rest = state["numpy"]
    np.random.set_state((kind, np.array(keys, dtype=np.uint32), *rest))
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    if device.type == "cuda" and "cuda" in state:
        torch.cuda.set_rng_state(state["cuda"], device)


class StopSignal:
    """SIGINT/SIGTERM set a flag; the loop saves a checkpoint and returns. A second signal
    falls through to the default handler (an immediate stop)."""

    def __init__(self) -> None:
        self.signum: int | None = None
        self._old: dict[int, object] = {}

    def _handle(self, signum, frame) -> None:
        self.signum = signum
        for s, old in self._old.items():
            signal.signal(s, old)

    def __enter__(self) -> StopSignal:
        for s in (signal.SIGINT, signal.SIGTERM):
            self._old[s] = signal.signal(s, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        for s, old in self._old.items():
            signal.signal(s, old)


UNSTABLE_HINT = "lower train.lr or raise warmup_steps"


def nonfinite_gradients(model: torch.nn.Module, step: int) -> str:
    """The error for a step whose gradient norm is not finite: the parameters whose gradients (this
    rank's shards) hold NaN or infinity, the first few by name, or that none does (the norm overflowed,
    or the non-finite values are in other ranks' shards)."""
    from torch.distributed.tensor import DTensor

    local = {
        n: p.grad.to_local() if isinstance(p.grad, DTensor) else p.grad for n, p in model.named_parameters()
    }
    bad = [name for name, g in local.items() if g is not None and not torch.isfinite(g).all()]
    where = ", ".join(bad[:4]) + (f" and {len(bad) - 4} more" if len(bad) > 4 else "")
    if not bad:
        where = "no gradient of this rank's parameters (the norm overflowed, or another rank's are)"
    return (
        f"the gradient is not finite at step {step}, in {where}: the run stopped before the optimiser step; "
        + UNSTABLE_HINT
    )


@dataclass
class StepResult:
    """One optimiser step: host-side facts (step, stage, lr) beside the device tensors it measured.
    The step never waits for the GPU; `metrics` reads the tensors when a record is written."""

    step: int
    stage: str
    lr: float
    losses: dict[str, torch.Tensor]  # 0-d: "loss" (what was optimised) and its parts, micro-batch means
    grad_norm: torch.Tensor
    expert_counts: torch.Tensor | None  # [routers, E] tokens per expert, summed over micro-batches
    batch: torch.Tensor  # the last micro-batch (the indexer's recall is measured on it)

    def metrics(self) -> dict:
        """The logged values, read from the device in one transfer."""
        values = torch.stack([v.float() for v in (*self.losses.values(), self.grad_norm)]).tolist()
        read = dict(zip([*self.losses, "grad_norm"], values, strict=True))
        return {"step": self.step, "stage": self.stage, "lr": self.lr, **read}


@dataclass
class TrainResult:
    run_dir: Path
    step: int
    signum: int | None = None  # the signal that stopped the run early, if any
    summary: dict = field(default_factory=dict)


class Trainer:
    """Owns the model, optimiser, data and run folder of one `glmlab train` invocation."""

    def __init__(self, cfg: Config, run_dir: Path, resume: bool, device: str = "auto",
                 console: Console | None = None) -> None:  # fmt: skip
        self.cfg, self.run_dir, self.device = cfg, Path(run_dir), resolve_device(device)
        self.console = console or Console()
        self.world = current_world(self.device.type)  # rank and size; a world of one unless launched
        t = cfg.train
        ensure_writable(self.run_dir)
        checkpoint = latest_checkpoint(self.run_dir) if resume else None
        if not resume:  # rank 0 looks before any rank writes (the others wait for its answer)
            self.world.from_main(refuse_leftover_run, self.run_dir)
        if checkpoint is not None:
            saved = load_checkpoint_config(checkpoint)
            if saved.model != cfg.model:
                raise GlmlabError(f"checkpoint {checkpoint} is for another model config: use a new --out")
        self.data: RunData = self.world.main_first(prepare_data, cfg, self.run_dir)  # rank 0 writes
        cfg = self.cfg = self.world.broadcast(self.data.config)  # a new run's vocab follows its tokenizer
        if self.data.note:
            self.console.print(self.data.note)
        write_config(cfg, self.run_dir / CONFIG)
        self.horizon = t.steps  # the LR schedule's length, fixed when the run starts (schedule.py)
        torch.manual_seed(t.seed)
        self.model = build_model(cfg, self.device).train()
        if t.precision == "bf16":
            bf16_parameters(self.model)
        apply_recompute(self.model, t.recompute)
        if t.compile:
            compile_layers(self.model)
        self.model = parallelize(self.model, self.world, expert_parallel=t.expert_parallel,
                                 ep_dispatch=t.ep_dispatch, precision=t.precision)  # fmt: skip
        self.optimizer = build_optimizer(self.model, t)
        self.batches = Batches(self.data.train, t.seq_len, t.batch_size, t.seed)
        self.val = validation_batches(self.data.val, t.seq_len, t.batch_size, t.eval_batches)
        self.token_bytes = torch.tensor(self.data.tokenizer.token_bytes(), device=self.device)
        self.step, self.position, self.elapsed = 0, 0, 0.0
        self.log = MetricsLog(self.run_dir / METRICS if self.world.is_main else Path(os.devnull))
        if checkpoint is not None and is_sharded(checkpoint / SHARDED):
            load_sharded(checkpoint / SHARDED, self.model, self.optimizer)  # written by any number of ranks
        elif checkpoint is not None and self.world.distributed:
            resume_one_process_checkpoint(checkpoint, self.model, self.optimizer)
        elif checkpoint is not None:
            load_weights(self.model, checkpoint)
            try:
                self.optimizer.load_state_dict(load_state(checkpoint, OPTIMIZER))
            except (KeyError, ValueError) as err:
                raise GlmlabError(f"optimizer state in {checkpoint} does not match this run: {err}") from None
        if checkpoint is not None:
            state = load_state(checkpoint)
            self.step, self.position, self.elapsed = state["step"], state["position"], state["elapsed"]
            self.horizon = state.get("horizon", saved.train.steps)
            _set_rng_state(state["rng"], self.device)
            self.log.truncate_after(self.step)
        if t.tensorboard and self.world.is_main:
            from glmlab.viz.tensorboard import TensorBoardLog

            self.log.sink = TensorBoardLog(self.run_dir, self.model, start_step=self.step)
        self.autocast = lambda: autocast(self.device, t.precision)
        self.peak = device_peak(self.device) * self.world.size  # MFU of the whole world
        self.flops_per_token = {  # the dense warm-up trains only the indexer: counted apart
            warmup: training_flops_per_token(cfg, t.seq_len, device=self.device.type, dsa_dense=warmup)
            for warmup in (False, True)
        }
        self.last_eval: dict = {}

    # ---- one optimiser step ----------------------------------------------------------------

    def train_step(self) -> StepResult:
        """Forward/backward over grad_accum micro-batches, clip, step, move the router biases.
        Nothing here reads a value back from the device (see `StepResult`)."""
        cfg, t = self.cfg, self.cfg.train
        stage = stage_at(self.step, cfg)
        dense_warmup = stage == DENSE_WARMUP
        set_stage(self.model, stage, freeze=not self.world.distributed)
        lr = lr_at(self.step, cfg, horizon=self.horizon)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        sums: dict[str, torch.Tensor] = {}
        counts = None
        for _ in range(t.grad_accum):
            x = self._next_batch()
            with self.autocast():
                out = self.model(x, labels=x, dsa_dense=dense_warmup)
            losses = total_loss(out, t, dense_warmup=dense_warmup)
            (losses.total / t.grad_accum).backward()
            depths = {f"mtp_loss_{d}": v.detach() for d, v in enumerate(out.mtp_losses, 1)}
            parts = {"loss": losses.total.detach(), **losses.parts, **(depths if len(depths) > 1 else {})}
            for k, v in parts.items():  # per MTP depth when D > 1
                sums[k] = sums.get(k, 0) + v.float() / t.grad_accum
            if out.expert_counts is not None:
                counts = out.expert_counts if counts is None else counts + out.expert_counts
            # an unfrozen warm-up (FSDP2: `set_stage`) records the whole model's graph and backward
            # runs only the indexer's part: drop the rest before the next micro-batch's forward
            del out, losses
        if dense_warmup:
            drop_untrained_gradients(self.model)
        trainable = [p for p in self.model.parameters() if p.requires_grad]
        clip = t.grad_clip if t.grad_clip > 0 else float("inf")
        # the norm, then the clip: a check between them sees the gradients before a NaN norm scales them all
        norm = torch.nn.utils.get_total_norm([p.grad for p in trainable if p.grad is not None])
        grad_norm = plain_tensor(norm)
        if t.check_gradients and not torch.isfinite(grad_norm).item():
            raise GlmlabError(nonfinite_gradients(self.model, self.step + 1))
        torch.nn.utils.clip_grads_with_norm_(trainable, clip, norm)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        counts = self.world.sum(counts)  # every rank's loads: the biases move as for the global batch
        if counts is not None and stage != DENSE_WARMUP and t.bias_update_gamma > 0:
            update_router_biases(self.model, counts, t.bias_update_gamma)
        self.step += 1
        return StepResult(self.step, stage, lr, sums, grad_norm, counts, x)

    def _next_batch(self) -> torch.Tensor:
        """The next micro-batch on the device. To a GPU it goes from pinned memory, asynchronously:
        a copy from ordinary memory would wait for the work already queued."""
        batch = self.world.rows(self.batches.batch(self.position))  # this rank's share
        self.position += self.cfg.train.batch_size
        if self.device.type == "cuda":
            batch = batch.pin_memory()
        return batch.to(self.device, non_blocking=True)

    def _settle(self, window: list[StepResult]) -> dict:
        """Wait for the steps since the last read; the first non-finite loss or gradient norm among
        them stops the run, before anything is saved. Returns the last step's metrics."""
        read = torch.stack([v for r in window for v in (r.losses["loss"], r.grad_norm.float())]).tolist()
        for r, loss, norm in zip(window, read[0::2], read[1::2], strict=True):
            what = f"loss is {loss}" if not math.isfinite(loss) else f"gradient norm is {norm}"
            if not math.isfinite(loss) or not math.isfinite(norm):
                kept = latest_checkpoint(self.run_dir)
                where = f"last good checkpoint {kept}" if kept else "no checkpoint was written yet"
                names = (
                    ""
                    if self.cfg.train.check_gradients
                    else " (train.check_gradients=true names the parameters)"
                )
                raise GlmlabError(
                    f"{what} at step {r.step}: the run stopped; {where}; {UNSTABLE_HINT}{names}"
                )
        return window[-1].metrics()

    # ---- checkpoints and evaluation ----------------------------------------------------------

    def save(self) -> Path:
        state = {"position": self.position, "stage": stage_at(max(self.step - 1, 0), self.cfg),
                 "elapsed": self.elapsed, "rng": _rng_state(self.device),
                 "horizon": self.horizon}  # fmt: skip
        if self.world.distributed:
            return save_sharded_checkpoint(self.world, self.run_dir, self.step, self.model, self.optimizer,
                                           state, self.cfg, self.data.tokenizer)  # fmt: skip
        return save_checkpoint(self.run_dir, self.step, self.model, self.optimizer, state, self.cfg,
                               self.data.tokenizer)  # fmt: skip

    def evaluate(self) -> dict:
        dense = stage_at(max(self.step - 1, 0), self.cfg) == DENSE_WARMUP
        loss, bpb = evaluate(self.model, self.val, self.token_bytes, dense, self.autocast)
        self.last_eval = {"val_loss": loss, "val_bpb": bpb}
        return self.last_eval

    # ---- the run ---------------------------------------------------------------------------------

    def run(self, show_progress: bool = True) -> TrainResult:
        t = self.cfg.train
        reset_peak_memory(self.device)
        if self.step >= t.steps:
            self.console.print(f"run {self.run_dir} is already at step {self.step} of {t.steps}: continue "
                               f"with {resume_hint(self.run_dir)}, N > {self.step}")  # fmt: skip
            return TrainResult(self.run_dir, self.step, summary=self._summary({}, 0.0))
        if t.steps > self.horizon:
            final = lr_at(self.horizon, self.cfg, horizon=self.horizon)
            self.console.print(f"extending the run from {self.horizon} to {t.steps} steps: the learning "
                               f"rate keeps its {self.horizon}-step schedule, and steps {self.horizon + 1}-"
                               f"{t.steps} run at its final value {final:.2e}")  # fmt: skip
        tokens_per_step = t.batch_size * t.grad_accum * t.seq_len
        columns = [TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                   TimeElapsedColumn(), TextColumn("eta"), TimeRemainingColumn(),
                   TextColumn("{task.fields[info]}")]  # fmt: skip
        # Steps are queued without waiting for the GPU; the loop waits (and times the steps since
        # the last wait) only where it reads results: a log record, a checkpoint, an evaluation.
        window: list[StepResult] = []
        window_time, window_steps, window_counts = 0.0, 0, None
        last: dict = {}
        warned = False  # the routing-collapse warning: once per process (again after a --resume)
        ceiling = self.cfg.model.n_routed_experts / self.cfg.model.num_experts_per_tok
        with (
            StopSignal() as stop,
            scheduled_gc(t.gc_interval) as collector,
            Progress(*columns, console=self.console, disable=not show_progress, transient=False) as progress,
        ):
            task = progress.add_task("train", total=t.steps, completed=self.step, info="")
            start = time.perf_counter()
            while self.step < t.steps and not self.world.stop_requested(stop):  # all ranks agree
                result = self.train_step()
                collector.after_step(self.step)
                window.append(result)
                if result.expert_counts is not None:
                    counts = result.expert_counts
                    window_counts = counts if window_counts is None else window_counts + counts
                progress.update(task, completed=self.step)
                done = self.step == t.steps
                log_now = self.step % t.log_interval == 0 or self.step in (1, t.steps)
                save_now = (t.checkpoint_interval and self.step % t.checkpoint_interval == 0) or done
                eval_now = (t.eval_interval and self.step % t.eval_interval == 0) or done
                if not (log_now or save_now or eval_now or stop.signum is not None):
                    continue
                metrics = self._settle(window)
                took = time.perf_counter() - start
                self.elapsed += took
                window_time, window_steps, window = window_time + took, window_steps + len(window), []
                if log_now:
                    last = self._log(metrics, result.batch, window_time, window_steps, window_counts,
                                     tokens_per_step)  # fmt: skip
                    objective = "indexer KL" if last["stage"] == DENSE_WARMUP else "loss"
                    progress.update(task, info=f"{objective} {last['loss']:.3f}")
                    for line in step_lines(last, dense_warmup=last["stage"] == DENSE_WARMUP):
                        progress.console.print(line, highlight=False)
                    if not warned and last["stage"] != DENSE_WARMUP:
                        warning = collapse_warning(last, ceiling=ceiling)
                        for line in warning:
                            progress.console.print(line, style="yellow", highlight=False)
                        warned = bool(warning)
                    window_time, window_steps, window_counts = 0.0, 0, None
                if save_now:
                    self.save()
                if eval_now:
                    record = {"step": self.step, **self.evaluate()}
                    self.log.write(record)
                    progress.console.print(eval_line(record), highlight=False)
                start = time.perf_counter()
            if window:  # stopped by a signal between two reads: settle before its checkpoint
                self._settle(window)
                self.elapsed += time.perf_counter() - start
        self.log.close()
        if stop.signum is not None:
            path = self.save()
            name = signal.Signals(stop.signum).name
            self.console.print(f"{name} received: saved checkpoint {path} at step {self.step}; "
                               f"continue with: glmlab train {self.run_dir} --resume")  # fmt: skip
        return TrainResult(self.run_dir, self.step, stop.signum, self._summary(last, tokens_per_step))

    def _log(self, metrics: dict, batch: torch.Tensor, window_time: float, window_steps: int, counts,
             tokens_per_step: int) -> dict:  # fmt: skip
        """Write one record: `metrics` (StepResult.metrics) with the window's rates and loads."""
        tokens_per_s = tokens_per_step * window_steps / max(window_time, 1e-9)
        record = dict(metrics)
        flops_per_token = self.flops_per_token[metrics["stage"] == DENSE_WARMUP]
        record.update(tokens_per_s=tokens_per_s, mfu=mfu(tokens_per_s, flops_per_token, self.peak))
        if counts is not None:
            per_layer = load_imbalance(counts)
            record["expert_imbalance"] = sum(per_layer) / len(per_layer)
            record["expert_imbalance_per_layer"] = per_layer
            record["expert_load"] = counts.tolist()  # tokens per expert since the last record
            ep = self.cfg.train.expert_parallel
            if self.world.distributed and ep > 1:
                per_rank = rank_imbalance(counts, ep)
                record["expert_rank_imbalance"] = sum(per_rank) / len(per_rank)
        if self.cfg.model.use_dsa:
            record["indexer_recall"] = indexer_recall(self.model, batch, self.autocast)
        record = self.world.average(record)  # each rank's share -> the global batch's values
        self.log.write(record)
        return record

    def _summary(self, last: dict, tokens_per_step: int) -> dict:
        out = {"run_dir": str(self.run_dir), "steps": self.step, "tokens": self.step * tokens_per_step,
               "train_time_s": self.elapsed, "data": self.data.source,
               "tokenizer": f"{self.data.tokenizer.kind} ({self.data.tokenizer.vocab_size})"}  # fmt: skip
        if self.elapsed:
            out["tokens_per_s"] = out["tokens"] / self.elapsed  # the whole run, compiling included
        if last.get("tokens_per_s") is not None:  # the last log window's, the one `mfu` is of
            out["last_tokens_per_s"] = last["tokens_per_s"]
        for key in ("loss", "lm_loss", "mtp_loss", "expert_imbalance", "indexer_recall", "mfu"):
            if last.get(key) is not None:
                out[f"final_{key}" if key in ("loss", "lm_loss", "mtp_loss") else key] = last[key]
        if last.get("stage") == DENSE_WARMUP and "final_loss" in out:  # what the warm-up optimises
            out["final_indexer_kl"] = out.pop("final_loss")
        out.update(self.last_eval)
        out["peak_memory_bytes"], out["peak_memory_kind"] = peak_memory(self.device)
        return out


def train(cfg: Config, run_dir: Path, resume: bool = False, device: str = "auto",
          console: Console | None = None, show_progress: bool = True) -> TrainResult:  # fmt: skip
    """Train `cfg` in `run_dir` (new, or resumed from its latest checkpoint) to train.steps. A new
    run that fails before its first checkpoint leaves no folder behind."""
    with contextlib.nullcontext() if resume else removed_on_failure(Path(run_dir)):
        return _run(cfg, run_dir, resume=resume, device=device, console=console, show_progress=show_progress)


def _run(cfg: Config, run_dir: Path, *, resume: bool, device: str, console: Console | None,
         show_progress: bool) -> TrainResult:  # fmt: skip
    """Build the trainer and run it; running out of device memory is a one-line error with what to
    change, not a traceback (the last checkpoint stays as it was)."""
    trainer = None
    try:
        trainer = Trainer(cfg, run_dir, resume, device, console)
        return trainer.run(show_progress)
    except torch.OutOfMemoryError:
        where = f"after step {trainer.step}" if trainer is not None else "while building the model"
        on = resolve_device(device)
        used = trainer.cfg if trainer is not None else cfg
        kept = keeps_sparse_probs(used.model, used.train.seq_len, on.type)
        probs = ", set sparse_keep_probs_gib=0 (sparse attention then recomputes its probabilities)"
        raise GlmlabError(
            f"out of memory on {on} {where}: lower train.batch_size (raise train.grad_accum to keep the "
            f"batch), set train.recompute=full{probs if kept else ''}; `glmlab profile CONFIG --device cuda` "
            "estimates the peak"
        ) from None
