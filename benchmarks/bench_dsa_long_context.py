"""DSA against dense attention at long context: GLM-5's attention slice on one GPU (issue 16).

The model is GLM-5's attention (hidden 6144, 64 heads, q_lora 2048, kv_lora 512, rope 64, nope 192,
v 256, indexer 32 x 128, k 2048) in `--layers` decoder layers (default 2) with a small dense FFN
(intermediate 1024), no MTP and a 1024-token vocabulary, so attention dominates. It is built twice
in one process from `load_config("glm5", overrides)`: with DSA (`dsa_impl` from `--impl`, default
auto: the Triton kernels on CUDA, the torch gather path on a CPU) and dense (`use_dsa=false`, causal
SDPA), the dense one loading the DSA one's weights (all but the indexer). Batch 1, bf16 weights on a
GPU (`--precision bf16-mixed` keeps fp32 weights under bf16 autocast instead), random tokens.

Modes, each a row per context:
- `prefill`: a forward without gradients and without labels (logits for every position);
- `train`: forward with labels (the indexer's KL runs on the sparse stage), the trainer's total
  loss, backward; against dense's training step;
- `warmup` (contexts up to `--warmup-up-to`, default 32K): DSA's dense warm-up stage
  (`dsa_dense=True`, only the indexer trains, its KL alone is the loss), against the same dense
  training step;
- `decode`: one new token per row (`--decode-batch` rows, default 1) after a latent cache of
  `context` positions (random latents and indexer keys: a step's cost does not depend on their
  values), through the fixed-shape decoding step of `glmlab generate`, replayed from a CUDA
  graph on a GPU: absorbed MLA over the whole cache when dense, over the indexer's top-k when DSA.
  Both attend through the Triton sparse kernel beyond 4,096 slots, dense over every slot (flash
  decoding, since session 17); `--dense-set dsa_impl=gather` times dense through torch's path, the
  baseline of sessions 4-16.

Each configuration runs once untimed (it compiles the kernels; FlopCounterMode counts its FLOPs per
operator), then `--repeats` times (default 3), timed with CUDA events (the median is reported), and
once more under torch.profiler (skip with `--no-profile`). Peak memory is
`torch.cuda.max_memory_allocated` over the timed runs, both models' weights included (at two layers
in bf16, 0.80 GB with DSA and 0.76 GB dense: 399M and 380M parameters). A configuration that runs
out of memory shows OOM; one that fails otherwise shows ERR (its traceback goes to stderr, the exit
status is 1) and the benchmark goes on.

Columns: DSA and dense times, the measured dense/DSA ratio, the calculator's predicted ratio (the
totals of `glmlab.accounting.flops_report`, glmlab convention, for the device run on: `forward` mode
for prefill, since the calculator's `prefill` mode counts a prefill into the latent cache, whose dense
path scores all T keys in the absorbed form, which is not what this forward runs; `train` for
training; for the warm-up, `training_flops_per_token(dsa_dense=True)`, the count `glmlab train` uses;
for decoding the ratio of the bytes each step reads, `glmlab.accounting.traffic.decode_step_bytes`,
since a decoding step is bound by memory traffic, not arithmetic),
the issue's target (prefill 1.3x at 32K, 2x at 64K, 3x at 128K; training 2x at 64K), the peaks (on
training rows beside glmlab's estimate: `glmlab.accounting.memory.training_memory` without
optimiser states, plus the other model's resident weights; not with `--recompute full`), and
the achieved TFLOP/s of each attention operator of the profiled run: FLOPs counted by
FlopCounterMode (Triton kernels register theirs; SDPA is counted causally, glmlab.measure) over the
operator's device time (its kernels and those of the operators it calls; CPU time on a CPU); `n/a`
where the profile's device times add up to more than the step, so that some went to the wrong
operator.

`--recompute full` recomputes each decoder layer's activations in backward in both models'
training steps (`train.recompute`, glmlab/model/recompute.py), what lets 128K train on one GPU.
`--hf` adds transformers' GlmMoeDsaForCausalLM on the DSA model's weights (written by
`glmlab.hf.save_pretrained`): prefill time at the contexts up to `--hf-up-to` (default 32K), with
the largest logit difference from glmlab at the first of them. `--tiny` runs a scaled-down shape
(hidden 64, 4 heads, k 8, contexts 32 and 64) for the CPU smoke test. `--json PATH` writes every
figure, rewritten after each configuration so that a run cut short keeps what it measured.
`--topk-buffer-mb N` sizes the buffer the Triton top-k scores its chunks of queries into (default
the model's 1024 MB: at 128K keys about 1,900 queries a chunk; 256 MB, 500 queries a chunk, was 2.6%
slower at 64K and 1.1% at 128K for four times the launches).

    python benchmarks/bench_dsa_long_context.py [--contexts 8k,32k,64k,128k] [--layers 2] [--repeats 3]
        [--modes prefill,train,warmup,decode] [--decode-batch 1] [--compile-decode] [--warmup-up-to 32k]
        [--impl auto] [--precision bf16] [--recompute none] [--hf] [--hf-up-to 32k] [--no-profile]
        [--kernels N] [--set KEY=VALUE] [--dense-set KEY=VALUE] [--topk-select radix]
        [--topk-buffer-mb 1024] [--json PATH]
    python benchmarks/bench_dsa_long_context.py --tiny
"""

from __future__ import annotations

import argparse
import dataclasses
import gc
import json
import os
import signal
import statistics
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile

from glmlab.accounting import flops_report, training_flops_per_token
from glmlab.accounting.memory import training_memory
from glmlab.accounting.traffic import decode_step_bytes
from glmlab.build import build_model
from glmlab.config import DSA_IMPLS, RECOMPUTE, Config, load_config
from glmlab.device import PRECISIONS, autocast, resolve_device
from glmlab.errors import GlmlabError
from glmlab.generate.graphs import GraphedStep
from glmlab.generate.joined import JoinedInputs
from glmlab.generate.step import model_step
from glmlab.measure import flop_counter
from glmlab.model import CausalLM, mla
from glmlab.model.losses import total_loss
from glmlab.model.recompute import apply_recompute
from glmlab.plan import resolve_dsa_impl
from glmlab.train.loop import set_stage
from glmlab.train.schedule import DENSE_WARMUP, MAIN, SPARSE

# GLM-5's attention (presets/glm5.yaml) in a short model whose FFN, vocabulary and MTP are cut down.
SLICE = ["use_moe=false", "intermediate_size=1024", "num_nextn_predict_layers=0", "vocab_size=1024"]
TINY = [
    *SLICE, "hidden_size=64", "num_attention_heads=4", "q_lora_rank=32", "kv_lora_rank=16",
    "qk_rope_head_dim=8", "qk_nope_head_dim=16", "v_head_dim=16", "index_n_heads=2", "index_head_dim=16",
    "index_topk=8", "intermediate_size=64", "vocab_size=128",
]  # fmt: skip
TINY_CONTEXTS = "32,64"
MODES = ("prefill", "train", "warmup", "decode")
# Issue 16's targets for dense time / DSA time.
TARGETS = {
    ("prefill", 32768): 1.3, ("prefill", 65536): 2.0, ("prefill", 131072): 3.0, ("train", 65536): 2.0,
    ("decode", 131072): 3.0,
}  # fmt: skip
COLUMNS = [
    "context", "mode", "DSA", "dense", "dense/DSA", "predicted", "target", "DSA peak", "dense peak",
    "DSA kernels (TFLOP/s)", "dense kernels (TFLOP/s)",
]  # fmt: skip


def tokens(text: str) -> int:
    """'8k' -> 8192, '64' -> 64."""
    value = text.strip().lower()
    scale = 1024 if value.endswith("k") else 1
    try:
        n = int(value.removesuffix("k")) * scale
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a token count: write 8k or 8192") from None
    if n < 2:
        raise argparse.ArgumentTypeError(f"{text!r}: a context needs at least 2 tokens (training shifts)")
    return n


def context_list(text: str) -> list[int]:
    """'8k,32k' -> [8192, 32768]."""
    return [tokens(part) for part in text.split(",") if part.strip()]


def mode_list(text: str) -> list[str]:
    modes = [m.strip() for m in text.split(",") if m.strip()]
    unknown = [m for m in modes if m not in MODES]
    if unknown or not modes:
        raise argparse.ArgumentTypeError(f"{text!r}: modes are a comma-separated subset of {','.join(MODES)}")
    return modes


def label(n: int) -> str:
    return f"{n // 1024}K" if n % 1024 == 0 else str(n)


# ---- models --------------------------------------------------------------------------------


def configs(
    overrides: list[str],
    layers: int,
    impl: str,
    longest: int,
    dsa_only: list[str],
    dense_only: list[str] = (),
) -> tuple[Config, Config]:
    """The DSA and the dense config of the slice; `dsa_only` and `dense_only` override one alone."""
    common = [
        *overrides, f"num_hidden_layers={layers}", f"dsa_impl={impl}",
        f"max_position_embeddings={longest}", f"train.seq_len={longest}",
    ]  # fmt: skip
    return load_config("glm5", [*common, *dsa_only]), load_config(
        "glm5", [*common, "use_dsa=false", *dense_only]
    )


def build_pair(dsa_cfg: Config, dense_cfg: Config, device: torch.device, dtype: torch.dtype):
    """Both models on `device` in `dtype`; the dense one holds the DSA one's weights but the indexer's."""
    torch.manual_seed(0)
    dsa = build_model(dsa_cfg, device).to(dtype)
    dense = build_model(dense_cfg, device).to(dtype)
    result = dense.load_state_dict(dsa.state_dict(), strict=False)
    assert not result.missing_keys and all(".indexer." in k for k in result.unexpected_keys)
    return dsa, dense


# ---- one configuration: warm-up with FLOP counts, timed runs, a profiled run ---------------


@dataclasses.dataclass
class Measured:
    """One configuration's figures, or why it has none (`error`)."""

    seconds: float | None = None
    times: list[float] = dataclasses.field(default_factory=list)
    peak_bytes: int | None = None
    # operator -> its FLOPs, seconds and TFLOP/s in the profiled run (None: not believable, `run`)
    ops: dict[str, dict[str, float | None]] = dataclasses.field(default_factory=dict)
    # the profiled run's slowest kernels (`--kernels N`): [name, milliseconds, launches]
    top: list[list] = dataclasses.field(default_factory=list)
    error: str | None = None

    def cell(self) -> str:
        return self.error or f"{self.seconds:.3f} s"

    def peak(self) -> str:
        if self.error:
            return self.error
        return "-" if self.peak_bytes is None else f"{self.peak_bytes / 1e9:.1f} GB"

    def kernels(self) -> str:
        """The attention operators' TFLOP/s (Triton kernels, SDPA)."""
        if self.error:
            return self.error
        shown = [
            f"{short(name)} " + ("n/a" if op["tflops"] is None else f"{op['tflops']:.3g}")
            for name, op in self.ops.items()
            if attention_op(name)
        ]
        return ", ".join(shown) or "-"


def attention_op(name: str) -> bool:
    return name.startswith("glmlab::") or "scaled_dot_product" in name


def short(name: str) -> str:
    """'glmlab::sparse_mla_fwd' -> 'sparse_mla_fwd'; SDPA ops lose their common prefix."""
    return name.split("::", 1)[-1].removeprefix("_scaled_dot_product_")


def timed(step: Callable[[], None], device: torch.device) -> float:
    """Seconds of one step: CUDA events on a GPU, the wall clock on a CPU."""
    if device.type != "cuda":
        start = time.perf_counter()
        step()
        return time.perf_counter() - start
    torch.cuda.synchronize(device)
    begin, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    begin.record()
    step()
    end.record()
    end.synchronize()
    return begin.elapsed_time(end) / 1e3


def operator_seconds(prof, names: set[str], device: torch.device) -> dict[str, float]:
    """Seconds per operator in a profile: device time (its kernels and its callees') on a GPU, CPU
    time on a CPU; an operator called from inside itself (a custom op's autograd wrapper) counts once."""
    out: dict[str, float] = {}
    for event in prof.events():
        if event.name not in names:
            continue
        parent = event.cpu_parent
        while parent is not None and parent.name != event.name:
            parent = parent.cpu_parent
        if parent is not None:
            continue
        us = event.device_time_total if device.type == "cuda" else event.cpu_time_total
        out[event.name] = out.get(event.name, 0.0) + us / 1e6
    return out


def slowest_kernels(prof, n: int) -> list[list]:
    """The n kernels with the most device time in a profile: [name (cut to 90 characters), ms, launches]."""
    kernels = [e for e in prof.key_averages() if e.device_type == torch.autograd.DeviceType.CUDA]
    kernels.sort(key=lambda e: -e.self_device_time_total)
    return [[e.key[:90], e.self_device_time_total / 1e3, e.count] for e in kernels[:n]]


def run(
    step: Callable[[], None], device: torch.device, repeats: int, *, profiled: bool, kernels: int = 0
) -> Measured:
    """Warm-up (FLOPs counted per operator), `repeats` timed runs, then a profiled one."""
    with flop_counter() as counter:
        step()
    counted = counter.get_flop_counts().get("Global", {})  # none in a CUDA graph's replay (decoding)
    flops = {str(op).replace(".", "::", 1): n for op, n in counted.items() if n}
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
    times = [timed(step, device) for _ in range(repeats)]
    out = Measured(statistics.median(times), times)
    if device.type == "cuda":
        out.peak_bytes = torch.cuda.max_memory_allocated(device)
    if profiled:
        activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
        with profile(activities=activities) as prof:
            step()
        seconds = operator_seconds(prof, set(flops), device)
        # On a GPU the operators' device times cannot add up to more than the step: where they do,
        # the profiler credited kernels to the wrong operators (index_topk at 128K was given 77 s
        # with 568 launches a kernel; others in the same profile got too much, under any one limit)
        believable = device.type != "cuda" or sum(seconds.values()) <= 1.1 * out.seconds
        if not believable:
            print(f"    profiler: the operators' device times add up to {sum(seconds.values()):.2f} s in a "
                  f"{out.seconds:.3f} s step: no rates shown", flush=True)  # fmt: skip
        for name, s in sorted(seconds.items(), key=lambda item: -item[1]):
            if s > 0:
                rate = flops[name] / s / 1e12 if believable else None
                out.ops[name] = {"flops": flops[name], "seconds": s if believable else None, "tflops": rate}
        if device.type == "cuda" and kernels:
            out.top = slowest_kernels(prof, kernels)
    return out


def attempt(
    step: Callable[[], None], device: torch.device, repeats: int, *, profiled: bool, kernels: int = 0
) -> Measured:
    """`run`, with running out of memory (OOM) or failing (ERR, traceback on stderr) as outcomes."""
    try:
        result = run(step, device, repeats, profiled=profiled, kernels=kernels)
    except torch.cuda.OutOfMemoryError:
        result = Measured(error="OOM")
    except Exception:  # a broken configuration is reported; the others still run
        traceback.print_exc()
        result = Measured(error="ERR")
    if result.error:
        gc.collect()  # the failed step's tensors, held by its traceback until here
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return result


# ---- the steps -----------------------------------------------------------------------------


def random_ids(vocab: int, S: int, device: torch.device) -> torch.Tensor:
    """One sequence of S random tokens, the same for every model at this context."""
    return torch.randint(0, vocab, (1, S), device=device, generator=torch.Generator(device).manual_seed(S))


def prefill_step(model: torch.nn.Module, ids: torch.Tensor, cast) -> Callable[[], None]:
    """A forward without gradients or labels (glmlab's model or transformers')."""

    def step() -> None:
        with torch.no_grad(), cast():
            model(ids)

    return step


def train_step(model: CausalLM, cfg: Config, ids: torch.Tensor, cast, *, warmup: bool) -> Callable[[], None]:
    """The trainer's step without the optimiser: forward with labels, its total loss, backward."""
    stage = DENSE_WARMUP if warmup else (SPARSE if cfg.model.use_dsa else MAIN)

    def step() -> None:
        set_stage(model, stage)
        try:
            with cast():
                out = model(ids, labels=ids, dsa_dense=warmup)
            total_loss(out, cfg.train, dense_warmup=warmup).total.backward()
        finally:  # also after running out of memory half-way through backward
            model.zero_grad(set_to_none=True)

    return step


def decode_step(
    model: CausalLM, S: int, batch: int, device: torch.device, dtype: torch.dtype, cast: Callable,
    *, compiled: bool = False,
) -> Callable[[], None]:  # fmt: skip
    """One token per row at position S after a cache of S random latents: the fixed-shape step
    `glmlab generate` runs (glmlab/generate/step.py), replayed from a CUDA graph on a GPU;
    `compiled` puts it through torch.compile first (fused elementwise kernels, then the graph)."""
    cache = model.new_cache(batch, S + 1, device=device, dtype=dtype)
    gen = torch.Generator(device).manual_seed(S)
    for layer in cache.layers:
        layer.latent[:, :S].normal_(generator=gen)
        if layer.index_keys is not None:
            layer.index_keys[:, :S].normal_(generator=gen)
    tokens = torch.randint(0, model.config.vocab_size, (batch, 1), device=device, generator=gen)
    joined = JoinedInputs(model)
    pos = torch.full((batch, 1), S, device=device)

    def one_token(ids: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        with torch.no_grad(), cast():
            return model_step(model, ids, positions, cache.layers, S + 1, joined=joined)[0]

    fn = torch.compile(one_token, dynamic=False) if compiled else one_token
    run = GraphedStep(fn) if device.type == "cuda" else fn
    # compiled and captured here, not in `run`'s first call under the FLOP counter, whose dispatch
    # mode torch.compile does not compile under (session 16's first compiled steps launched the eager
    # kernels, experiments/results/h200-session16/, call 3)
    run(tokens, pos)
    return lambda: run(tokens, pos)


def predicted(dsa_cfg: Config, dense_cfg: Config, S: int, mode: str, device: str, batch: int = 1) -> float:
    """The calculator's dense/DSA ratio for the run of `mode` (see the module docstring): of FLOPs, or
    for decoding (`batch` rows over S cached positions and the new one) of the bytes a step reads."""
    if mode == "decode":
        dense_bytes, dsa_bytes = (decode_step_bytes(c, S + 1, batch)["total"] for c in (dense_cfg, dsa_cfg))
        return dense_bytes / dsa_bytes
    kind = "forward" if mode == "prefill" else "train"
    dense = flops_report(dense_cfg, S, kind, mtp=False, device=device).total
    if mode == "warmup":
        return dense / (training_flops_per_token(dsa_cfg, S, mtp=False, device=device, dsa_dense=True) * S)
    return dense / flops_report(dsa_cfg, S, kind, mtp=False, device=device).total


# ---- output --------------------------------------------------------------------------------


def estimated_peak(cfg: Config, S: int, mode: str, precision: str, device: str, beside: int) -> float | None:
    """glmlab's estimate of a training step's peak memory (glmlab.accounting.memory, no optimiser
    states: the benchmark steps none), plus `beside` bytes of the other model's weights, which are
    resident too; None where the estimate does not model the step (prefill, decode, the warm-up,
    recomputation)."""
    if mode != "train":
        return None
    m = training_memory(cfg, S, 1, precision, mtp=False, device=device)
    return m["peak"] - m["optimizer"] + beside


def with_estimate(cell: str, estimate: float | None) -> str:
    if estimate is None or cell == "ERR":  # an OOM keeps it: did the estimate say it fits?
        return cell
    size = f"{estimate / 1e9:.1f} GB" if estimate >= 1e9 else f"{estimate / 1e6:.1f} MB"
    return f"{cell} (est {size})"


def ratio(dense: Measured, dsa: Measured) -> str:
    return "-" if dense.error or dsa.error else f"{dense.seconds / dsa.seconds:.2f}x"


def table_row(row: dict, dsa: Measured, dense: Measured) -> list[str]:
    target = f"{row['target']:g}x" if row["target"] else "-"
    return [
        label(row["context"]), row["mode"], dsa.cell(), dense.cell(), ratio(dense, dsa),
        f"{row['predicted']:.2f}x", target, with_estimate(dsa.peak(), row["dsa_peak_estimate"]),
        with_estimate(dense.peak(), row["dense_peak_estimate"]), dsa.kernels(), dense.kernels(),
    ]  # fmt: skip


def markdown(columns: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    return "\n".join([*lines, *("| " + " | ".join(r) + " |" for r in rows)])


def write_json(path: Path | None, report: dict) -> None:
    """The whole report, replaced atomically (a reader never sees half a file)."""
    if path is None:
        return
    partial = path.with_name(path.name + ".partial")
    partial.write_text(json.dumps(report, indent=1))
    os.replace(partial, path)


# ---- transformers --------------------------------------------------------------------------


def against_transformers(dsa: CausalLM, contexts: list[int], vocab: int, device, dtype, cast, repeats: int):
    """Prefill of glmlab (DSA) and of transformers' GlmMoeDsaForCausalLM on the same weights."""
    from transformers import AutoModelForCausalLM

    from glmlab.hf import save_pretrained

    with tempfile.TemporaryDirectory() as folder:
        save_pretrained(dsa, folder)
        hf = AutoModelForCausalLM.from_pretrained(folder).to(device, dtype).eval()
    hf.config.use_cache = False  # a prefill without building transformers' cache
    rows, figures = [], []
    for i, S in enumerate(contexts):
        ids = random_ids(vocab, S, device)
        ours = attempt(prefill_step(dsa, ids, cast), device, repeats, profiled=False)
        theirs = attempt(prefill_step(hf, ids, cast), device, repeats, profiled=False)
        diff = "-"
        if i == 0 and not (ours.error or theirs.error):
            with torch.no_grad(), cast():
                a, b = dsa(ids).logits.float(), hf(ids).logits.float()
            diff = f"{(a - b).abs().max().item() / b.abs().max().item():.1e}"
            del a, b
        speedup = "-" if ours.error or theirs.error else f"{theirs.seconds / ours.seconds:.2f}x"
        rows.append([label(S), ours.cell(), theirs.cell(), speedup, ours.peak(), theirs.peak(), diff])
        figures.append(
            {
                "context": S,
                "glmlab": dataclasses.asdict(ours),
                "transformers": dataclasses.asdict(theirs),
                "diff": diff,
            }
        )
        print(
            f"  transformers prefill {label(S)}: glmlab {ours.cell()}, transformers {theirs.cell()}",
            flush=True,
        )
    columns = ["context", "glmlab DSA", "transformers", "transformers/glmlab", "glmlab peak",
               "transformers peak", "max |logit diff| / max |logit|"]  # fmt: skip
    return markdown(columns, rows), figures


# ---- main ----------------------------------------------------------------------------------


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--contexts", type=context_list, help="comma-separated (default 8k,32k,64k,128k)")
    parser.add_argument("--layers", type=int, default=2, help="decoder layers (default 2)")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per configuration (default 3)")
    parser.add_argument("--modes", type=mode_list, default=["prefill", "train", "warmup"],
                        help="subset of prefill,train,warmup,decode (default: all but decode)")  # fmt: skip
    parser.add_argument("--decode-batch", type=int, default=1, help="rows decoded together (default 1)")
    parser.add_argument("--compile-decode", action="store_true", help="torch.compile both decode steps")
    parser.add_argument("--recompute", choices=RECOMPUTE, default="none",
                        help="train.recompute of both models' training steps (default none)")  # fmt: skip
    parser.add_argument("--warmup-up-to", type=tokens, default=32768, help="longest warm-up context (32k)")
    parser.add_argument("--impl", choices=DSA_IMPLS, default="auto", help="DSA's dsa_impl (default auto)")
    parser.add_argument("--precision", choices=PRECISIONS, help="default: bf16 on a GPU, fp32 on a CPU")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    parser.add_argument("--hf", action="store_true", help="also transformers' prefill on the same weights")
    parser.add_argument("--hf-up-to", type=tokens, default=32768, help="longest transformers context (32k)")
    parser.add_argument("--no-profile", action="store_true", help="skip the profiled run (no kernel TFLOP/s)")
    parser.add_argument(
        "--tiny", action="store_true", help=f"hidden 64, 4 heads, k 8, contexts {TINY_CONTEXTS}"
    )
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="DSA model override, e.g. index_dtype=fp8 (repeatable)")  # fmt: skip
    parser.add_argument("--dense-set", action="append", default=[], metavar="KEY=VALUE",
                        help="dense model override, e.g. dsa_impl=gather: decoding through torch's "
                             "absorbed attention, not flash decoding (repeatable)")  # fmt: skip
    parser.add_argument(
        "--kernels", type=int, default=0, help="print the N slowest kernels of each profiled run"
    )
    parser.add_argument("--json", type=Path, help="write every figure to this file")
    parser.add_argument("--topk-buffer-mb", type=int, help="the Triton top-k's score buffer (default 1024)")
    parser.add_argument(
        "--topk-select",
        choices=("torch", "radix"),
        help="how the Triton top-k selects (default: the model's)",
    )
    args = parser.parse_args(argv)
    if args.layers < 1 or args.repeats < 1 or args.decode_batch < 1:
        parser.error("--layers, --repeats and --decode-batch must be at least 1")
    if args.contexts is None:
        args.contexts = context_list(TINY_CONTEXTS if args.tiny else "8k,32k,64k,128k")
    if not args.contexts:
        parser.error("--contexts is empty: give at least one, e.g. 8k")
    if args.json is not None and not args.json.parent.is_dir():
        parser.error(f"--json {args.json}: folder {args.json.parent} does not exist")
    return args


def measure_all(
    args, models, cast, device: torch.device, report: dict, rows: list[list[str]], *, precision: str
) -> bool:
    """Every (context, mode) row into `rows` and `report` (rewritten to --json after each); True when
    a configuration failed other than by running out of memory."""
    (dsa_cfg, dsa), (dense_cfg, dense) = models
    weights = {id(m): sum(p.numel() * p.element_size() for p in m.parameters()) for m in (dsa, dense)}
    failed = False
    for S in args.contexts:
        ids = random_ids(dsa_cfg.model.vocab_size, S, device)
        dense_runs: dict[str, Measured] = {}  # warm-up rows compare with dense training
        for mode in args.modes:
            if mode == "warmup" and S > args.warmup_up_to:
                continue
            kind = mode if mode in ("prefill", "decode") else "train"
            if mode == "prefill":
                dsa_step, dense_step = prefill_step(dsa, ids, cast), prefill_step(dense, ids, cast)
            elif mode == "decode":
                dtype = next(dsa.parameters()).dtype
                dsa_step = decode_step(
                    dsa, S, args.decode_batch, device, dtype, cast, compiled=args.compile_decode
                )
                dense_step = decode_step(
                    dense, S, args.decode_batch, device, dtype, cast, compiled=args.compile_decode
                )
            else:
                dsa_step = train_step(dsa, dsa_cfg, ids, cast, warmup=mode == "warmup")
                dense_step = train_step(dense, dense_cfg, ids, cast, warmup=False)
            profiled = not args.no_profile
            dsa_run = attempt(dsa_step, device, args.repeats, profiled=profiled, kernels=args.kernels)
            if kind not in dense_runs:
                dense_runs[kind] = attempt(
                    dense_step, device, args.repeats, profiled=profiled, kernels=args.kernels
                )
            dense_run = dense_runs[kind]
            row = {
                "context": S, "mode": mode,
                "predicted": predicted(dsa_cfg, dense_cfg, S, mode, device.type, args.decode_batch),
                "target": TARGETS.get((mode, S)), "dsa": dataclasses.asdict(dsa_run),
                "dense": dataclasses.asdict(dense_run),
                "ratio": None if dsa_run.error or dense_run.error else dense_run.seconds / dsa_run.seconds,
            }  # fmt: skip
            estimate = mode == "train" and args.recompute == "none"
            for side, cfg, other in (("dsa", dsa_cfg, dense), ("dense", dense_cfg, dsa)):
                beside = weights[id(other)]
                peak = estimated_peak(cfg, S, mode, precision, device.type, beside) if estimate else None
                row[f"{side}_peak_estimate"] = peak
            failed |= "ERR" in (dsa_run.error, dense_run.error)
            rows.append(table_row(row, dsa_run, dense_run))
            report["rows"].append(row)
            write_json(args.json, report)
            print(f"  {label(S)} {mode}: DSA {dsa_run.cell()}, dense {dense_run.cell()}", flush=True)
            for side, measured in (("DSA", dsa_run), ("dense", dense_run)):
                for name, ms, launches in measured.top:
                    print(f"    {side} {ms:9.2f} ms {launches:5d}x  {name}", flush=True)
    return failed


def stop_on_sigterm(signum, frame) -> None:
    """`timeout` ends a run with SIGTERM: leave through SystemExit, so the rows so far are printed."""
    raise SystemExit(128 + signum)


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; 0, or 1 when a configuration failed other than by running out of memory."""
    args = parse(argv)
    if args.topk_select:
        mla.TOPK_SELECT = args.topk_select  # the model reads it at each call
    if args.topk_buffer_mb:
        mla.TOPK_BUFFER_BYTES = args.topk_buffer_mb << 20
    device = resolve_device(args.device)
    precision = args.precision or ("bf16" if device.type == "cuda" else "fp32")
    dtype = torch.bfloat16 if precision == "bf16" else torch.float32
    cast = lambda: autocast(device, precision)
    shape = TINY if args.tiny else SLICE
    dsa_cfg, dense_cfg = configs(shape, args.layers, args.impl, max(args.contexts), args.set, args.dense_set)
    dsa, dense = build_pair(dsa_cfg, dense_cfg, device, dtype)
    for model in (dsa, dense):
        apply_recompute(model, args.recompute)
    m = dsa_cfg.model
    where = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    forward = resolve_dsa_impl(args.impl, device.type, max(args.contexts))
    training = resolve_dsa_impl(args.impl, device.type, max(args.contexts), indexer_loss=True)
    impl = forward if forward == training else f"{forward} (training the indexer: {training})"
    print(f"{where}, torch {torch.__version__}; {args.layers} layers: hidden {m.hidden_size}, "
          f"{m.num_attention_heads} heads, q_lora {m.q_lora_rank}, kv_lora {m.kv_lora_rank}, rope "
          f"{m.qk_rope_head_dim}, nope {m.qk_nope_head_dim}, v {m.v_head_dim}, indexer {m.index_n_heads} x "
          f"{m.index_head_dim}, k {m.index_topk}; batch 1, {precision}, DSA dsa_impl={impl}, recompute "
          f"{args.recompute}; median of "
          f"{args.repeats}", flush=True)  # fmt: skip
    report = {
        "device": where, "torch": torch.__version__, "precision": precision, "dsa_impl": impl,
        "layers": args.layers, "repeats": args.repeats, "recompute": args.recompute,
        "config": dsa_cfg.to_dict(), "rows": [],
    }  # fmt: skip
    rows: list[list[str]] = []
    try:
        failed = measure_all(args, ((dsa_cfg, dsa), (dense_cfg, dense)), cast, device, report, rows,
                             precision=precision)  # fmt: skip
    finally:  # also when stopped: the rows measured so far
        print()
        print(markdown(COLUMNS, rows), flush=True)
    if args.hf:
        hf_contexts = [S for S in args.contexts if S <= args.hf_up_to]
        table, figures = against_transformers(
            dsa, hf_contexts, m.vocab_size, device, dtype, cast, args.repeats
        )
        report["transformers"] = figures
        write_json(args.json, report)
        failed |= any("ERR" in (f["glmlab"]["error"], f["transformers"]["error"]) for f in figures)
        print()
        print(table)
    return 1 if failed else 0


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, stop_on_sigterm)
    try:
        sys.exit(main())
    except GlmlabError as error:  # a device that is not there
        print(f"error: {error}", file=sys.stderr)
        sys.exit(2)
