"""Measure real runs: executed FLOPs, time, peak memory, a matmul peak, and MFU
(docs/accounting.md, "Checking against measurement").

FLOPs are counted with `torch.utils.flop_counter.FlopCounterMode` plus the formulas it lacks:
CPU scaled_dot_product_attention (counted 0 by torch) and causal SDPA everywhere (torch counts
the full S x T square; the kernels skip the masked half). Peak memory on CPU is the storage
autograd saves for backward (distinct storages, parameters excluded) plus weights, gradients
and optimiser states; on CUDA it is `torch.cuda.max_memory_allocated`.

MFU, for `glmlab train` and `glmlab profile` alike, is tokens per second times the calculator's
training FLOPs per token (`glmlab.accounting.training_flops_per_token`, glmlab convention: what
glmlab executes, MTP included) over `device_peak`, a square matmul timed once per process.
"""

from __future__ import annotations

import contextlib
import functools
import importlib
import re
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

from glmlab.config import Config
from glmlab.device import autocast, available_memory, bf16_parameters, resolve_device, synchronize
from glmlab.errors import GlmlabError

aten = torch.ops.aten


def _causal_pairs(s_q: int, s_k: int) -> int:
    """Pairs a top-left-aligned causal mask keeps: query i sees keys 0..i."""
    full = min(s_q, s_k)
    return full * (full + 1) // 2 + max(s_q - s_k, 0) * s_k


def _sdpa_formula(first: int, causal_at: int, backward: bool) -> Callable[..., int]:
    """FLOPs of an SDPA kernel from its argument shapes: QK^T and PV forward; recompute, dP,
    dV, dQ, dK backward (torch's own formulas), over the causal pairs when `is_causal`."""

    def formula(*args, out_shape=None, **kwargs) -> int:
        q, k, v = args[first : first + 3]
        causal = kwargs.get("is_causal", args[causal_at] if len(args) > causal_at else False)
        b, h, s_q, d_qk = q
        s_k, d_v = k[2], v[3]
        pairs = _causal_pairs(s_q, s_k) if causal else s_q * s_k
        per_pair = 2 * (3 * d_qk + 2 * d_v) if backward else 2 * (d_qk + d_v)
        return b * h * pairs * per_pair

    return formula


def _grouped_mm_formula(a, b, *args, out_shape=None, **kwargs) -> int:
    """`torch._grouped_mm` (the routed experts on a GPU), which FlopCounterMode does not count:
    rows [M,K] x per-group [G,K,N] (forward, input gradient), [K,M] x [M,N] split into groups
    (weight gradient), or batched [G,M,K] x [G,K,N]."""
    if len(a) == 3:
        return 2 * a[0] * a[1] * a[2] * b[-1]
    return 2 * a[0] * a[1] * b[-1]


def flop_formulas() -> dict:
    """custom_mapping for FlopCounterMode: every SDPA kernel, causal-aware, and grouped GEMMs."""
    ops = {
        "_scaled_dot_product_flash_attention_for_cpu": (0, 4, False),
        "_scaled_dot_product_flash_attention_for_cpu_backward": (1, 7, True),
        "_scaled_dot_product_flash_attention": (0, 4, False),
        "_scaled_dot_product_flash_attention_backward": (1, 11, True),
        "_scaled_dot_product_efficient_attention": (0, 6, False),
        "_scaled_dot_product_efficient_attention_backward": (1, 11, True),
        "_scaled_dot_product_cudnn_attention": (0, 6, False),
        "_scaled_dot_product_cudnn_attention_backward": (1, 14, True),
    }
    out = {}
    for name, spec in ops.items():
        op = getattr(aten, name, None)
        if op is not None:
            out[op] = _sdpa_formula(*spec)
    grouped = getattr(aten, "_grouped_mm", None)
    if grouped is not None:
        out[grouped] = _grouped_mm_formula
    return out


class _GlobalOnly:
    """Stands in for FlopCounterMode's module tracker: every count goes to 'Global'. The real
    tracker hooks every module call and backward, which slows a small MoE model tenfold."""

    parents = frozenset({"Global"})

    def __enter__(self) -> _GlobalOnly:
        return self

    def __exit__(self, *args) -> None:
        return None


def _import_kernel_formulas() -> None:
    """glmlab's kernels register their FLOP formulas when imported, and a FlopCounterMode copies
    the registry when it is made. The model imports the kernels at its first GPU forward, so a
    counter made before that counted none of them (`glmlab profile glm5-1b --device cuda`: 75 of
    125 TFLOP, experiments/results/h200-session6/): import them first."""
    from glmlab.plan import triton_available

    importlib.import_module("glmlab.kernels.flex_masked")
    if triton_available():
        with contextlib.suppress(ImportError):  # a Triton that does not import runs no kernel either
            importlib.import_module("glmlab.kernels.indexer")
            importlib.import_module("glmlab.kernels.sparse_mla")


def flop_counter(per_module: bool = False) -> FlopCounterMode:
    """A quiet FlopCounterMode with glmlab's extra formulas (totals only unless `per_module`)."""
    _import_kernel_formulas()
    counter = FlopCounterMode(display=False, custom_mapping=flop_formulas())
    if not per_module:
        counter.mod_tracker = _GlobalOnly()
    return counter


@contextlib.contextmanager
def saved_tensor_bytes(exclude: list[torch.Tensor]) -> Iterator[dict]:
    """Within the block, sum the distinct storages autograd saves for backward, ignoring
    those of `exclude` (the parameters). Yields a dict whose 'bytes' is filled on exit."""
    skip = {t.untyped_storage().data_ptr() for t in exclude}
    seen: dict[int, int] = {}
    result = {"bytes": 0}

    def pack(t: torch.Tensor) -> torch.Tensor:
        storage = t.untyped_storage()
        ptr = storage.data_ptr()
        if ptr not in skip and ptr not in seen:
            seen[ptr] = storage.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        yield result
    result["bytes"] = sum(seen.values())


def matmul_peak(
    device: str | torch.device = "cpu", *, size: int | None = None, iters: int = 5, repeats: int = 5
) -> float:
    """FLOP/s of a square matmul on `device` (bf16 on CUDA, fp32 on CPU): the best of `repeats`
    batches of `iters` products, so one slow batch (another process, a clock still rising) does not
    lower it. On an H200 a batch of five 8,192-square products ran at 783-794 TFLOP/s; one batch of 50
    after another had run at 747-785, and batches timed after a second of back-to-back products at
    650-690, the power limit having lowered the clock (experiments/peak_probe.py,
    experiments/results/h200-session11/): MFU divides by the fastest rate the chip shows."""
    if iters < 1 or repeats < 1:
        raise ValueError(f"matmul_peak: iters and repeats must be at least 1, got {iters} and {repeats}")
    device = torch.device(device)
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    n = size or (8192 if device.type == "cuda" else 1024)
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    a @ b  # warm-up
    return _best_rate(lambda: [a @ b for _ in range(iters)], 2 * n**3 * iters, device, repeats)


def _best_rate(run: Callable[[], object], work: float, device: torch.device, repeats: int) -> float:
    """`work` over the shortest of `repeats` timed calls of `run`, each synchronised on `device`."""
    best = 0.0
    for _ in range(repeats):
        synchronize(device)
        start = time.perf_counter()
        run()
        synchronize(device)
        best = max(best, work / (time.perf_counter() - start))
    return best


@functools.cache
def device_peak(device: torch.device) -> float:
    """The MFU denominator: `matmul_peak` on `device`, timed once per process (so a training run
    and a profile in one command share it), on a forked RNG so that a training run's random
    stream, and so its resumption, stays untouched."""
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        return matmul_peak(device)


def copy_bandwidth(
    device: str | torch.device = "cpu", *, nbytes: int | None = None, repeats: int = 5
) -> float:
    """Bytes per second a device-to-device copy of `nbytes` (default 256 MiB, past any cache) moves,
    read and write counted (2 x its size), the best of `repeats`: the rate a memory-bound step such as
    decoding can at most read its bytes at (the 4.3 TB/s measured on an H200 is such a copy)."""
    if repeats < 1:
        raise ValueError(f"copy_bandwidth: repeats must be at least 1, got {repeats}")
    device = torch.device(device)
    n = (nbytes or 1 << 28) // 4
    src = torch.ones(n, device=device)
    dst = torch.empty_like(src)
    dst.copy_(src)  # warm-up
    return _best_rate(lambda: dst.copy_(src), 2 * 4 * n, device, repeats)


def reset_peak_memory(device: torch.device) -> None:
    """Start a new peak: CUDA's allocator statistics, or on Linux the process's resident high-water
    mark (elsewhere the peak stays the process's since it started)."""
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        return
    with contextlib.suppress(OSError):
        Path("/proc/self/clear_refs").write_text("5")


def peak_memory(device: torch.device) -> tuple[float, str]:
    """Bytes at the peak since `reset_peak_memory`, and what they measure."""
    if device.type == "cuda":
        return float(torch.cuda.max_memory_allocated(device)), "CUDA memory allocated by torch"
    status = Path("/proc/self/status")
    found = re.search(r"VmHWM:\s+(\d+)\s+kB", status.read_text()) if status.is_file() else None
    if found:
        return float(found.group(1)) * 1024, "peak resident memory of the process (VmHWM)"
    import resource

    return float(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024, "peak RSS since process start"


def mfu(tokens_per_s: float, flops_per_token: float, peak: float) -> float:
    """Model FLOPs utilisation: achieved model FLOP/s over the peak (see the module docstring)."""
    return tokens_per_s * flops_per_token / peak


def _state_bytes(tensors: list[torch.Tensor]) -> int:
    return sum(t.numel() * t.element_size() for t in tensors)


def profile(
    cfg: Config,
    seq_len: int | None = None,
    batch: int | None = None,
    steps: int = 2,
    device: str = "auto",
    decode_steps: int = 4,
) -> dict:
    """Run real training steps (forward with labels so every loss path runs, backward, AdamW
    step) and cached decoding steps in `train.precision` as the trainer applies it (bf16 weights
    for bf16, autocast for bf16-mixed on CUDA); return time, executed FLOPs, peak memory and MFU
    next to the `glmlab`-convention estimate. Memory is compared like with like: on CUDA the
    allocator's peak against `training_memory`'s `peak`, on a CPU the saved tensors plus states
    against its `total`. A config whose estimated peak exceeds what the device has free is
    refused first."""
    from glmlab.accounting import flops_report, training_flops_per_token, training_memory
    from glmlab.accounting.traffic import decode_step_bytes
    from glmlab.build import build_model
    from glmlab.model.losses import total_loss

    S = cfg.train.seq_len if seq_len is None else seq_len
    B = cfg.train.batch_size if batch is None else batch
    if S < 2 or B < 1 or steps < 1:
        raise GlmlabError(
            f"profile needs --seq >= 2, --batch >= 1 and --steps >= 1, got {S}, {B} and {steps}"
        )
    if S > cfg.model.max_position_embeddings:
        raise GlmlabError(
            f"--seq {S} exceeds max_position_embeddings {cfg.model.max_position_embeddings}; lower --seq"
        )
    if S < decode_steps + 2:
        raise GlmlabError(
            f"--seq {S} leaves no room to decode {decode_steps} tokens; use --seq {decode_steps + 2} or more"
        )
    dev = resolve_device(device)
    cuda = dev.type == "cuda"
    precision = cfg.train.precision
    memory = training_memory(cfg, S, B, precision, device=dev.type)
    free = available_memory(dev)
    if memory["peak"] > free:
        raise GlmlabError(
            f"profiling {cfg.name} at seq {S}, batch {B} needs about {memory['peak'] / 1e9:,.1f} GB, and "
            f"{dev} has {free / 1e9:,.1f} GB free: profile a smaller config (glm5-tiny, lower --seq or "
            f"--batch), or get the estimate alone with glmlab flops {cfg.name}"
        )
    bandwidth = copy_bandwidth(dev)  # before the model and its states take the device's memory
    torch.manual_seed(cfg.train.seed)
    model = build_model(cfg, dev)
    if precision == "bf16":
        bf16_parameters(model)
    params = list(model.parameters())
    opt = torch.optim.AdamW(
        params, lr=cfg.train.lr, betas=(cfg.train.beta1, cfg.train.beta2), weight_decay=cfg.train.weight_decay
    )
    ids = torch.randint(0, cfg.model.vocab_size, (B, S), device=dev)

    def step() -> None:
        with autocast(dev, precision):
            out = model(ids, labels=ids)
            loss = total_loss(out, cfg.train, dense_warmup=False).total
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    # one counted step (also the warm-up), then the timed ones
    if cuda:
        torch.cuda.reset_peak_memory_stats(dev)
    with saved_tensor_bytes(params) as saved, flop_counter() as counter:
        step()
    flops_measured = counter.get_total_flops()
    states = _state_bytes([t for s in opt.state.values() for t in s.values() if torch.is_tensor(t)])
    weights = _state_bytes(params)
    if cuda:
        synchronize(dev)
        torch.cuda.reset_peak_memory_stats(dev)
    start = time.perf_counter()
    for _ in range(steps):
        step()
    synchronize(dev)
    step_time = (time.perf_counter() - start) / steps
    peak_measured = torch.cuda.max_memory_allocated(dev) if cuda else saved["bytes"] + 2 * weights + states
    estimated_peak = memory["peak"] if cuda else memory["total"]

    # decoding within the sequence length: prefill P tokens into a cache, then one token at a time
    # (one counted at position P, then the timed ones)
    model.eval()
    prefill = S - 1 - decode_steps
    cache = model.new_cache(B, S)
    with torch.no_grad(), autocast(dev, precision):
        model(ids[:, :prefill], cache=cache, logits_to_keep=1)
        token = ids[:, prefill : prefill + 1]
        with flop_counter() as counter:
            model(token, cache=cache)
        decode_flops = counter.get_total_flops()
        synchronize(dev)
        start = time.perf_counter()
        for _ in range(decode_steps):
            model(token, cache=cache)
        synchronize(dev)
        decode_time = (time.perf_counter() - start) / decode_steps

    estimate = flops_report(cfg, S, "train", "glmlab", device=dev.type)
    decode_estimate = flops_report(cfg, S, "decode", "glmlab", mtp=False, position=prefill, device=dev.type)
    # what the timed decoding steps read on average (weights in their stored dtype, the cache in the
    # model's), and the time that takes at this device's copy rate: their roofline (docs/accounting.md)
    stored = "fp32" if params[0].dtype == torch.float32 else "bf16"
    contexts = range(prefill + 2, prefill + 2 + decode_steps)  # the timed steps' positions, plus one
    decode_bytes = (
        sum(decode_step_bytes(cfg, c, B, weight_dtype=stored, cache_dtype=stored)["total"] for c in contexts)
        / decode_steps
    )
    peak = device_peak(dev)
    tokens_per_s = B * S / step_time
    result = {
        "config": cfg.name, "device": str(dev), "seq_len": S, "batch": B, "steps": steps,
        "step_time_s": step_time, "tokens_per_s": tokens_per_s,
        "flops_estimated": estimate.total * B, "flops_measured": flops_measured,
        "flops_ratio": estimate.total * B / flops_measured if flops_measured else None,
        "precision": precision, "peak_memory_estimated_bytes": estimated_peak,
        "peak_memory_measured_bytes": peak_measured, "peak_memory_ratio": estimated_peak / peak_measured,
        "memory_estimated": {k: v for k, v in memory.items() if k != "activations_by_part"},
        "memory_measured": {"activations": saved["bytes"], "weights": weights, "gradients": weights,
                            "optimizer": states} if not cuda else {"max_memory_allocated": peak_measured},
        "achieved_flops_per_s": flops_measured / step_time, "matmul_peak_flops_per_s": peak,
        "mfu": mfu(tokens_per_s, training_flops_per_token(cfg, S, device=dev.type), peak),
        "decode_flops_estimated": decode_estimate.total * B, "decode_flops_measured": decode_flops,
        "decode_step_time_s": decode_time, "decode_tokens_per_s": B / decode_time,
        "decode_bytes_estimated": decode_bytes, "copy_bandwidth_bytes_per_s": bandwidth,
        "decode_roofline_s": decode_bytes / bandwidth,
    }  # fmt: skip
    return result
