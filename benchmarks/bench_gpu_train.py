"""GPU training speed: glmlab against transformers' GlmMoeDsaForCausalLM on the same weights.

For each shape (PRESET:BATCHxSEQ) glmlab builds a seeded random model with MTP off, times
forward + backward of the next-token cross-entropy under bf16 autocast (fp32 weights, as
`train.precision: bf16-mixed` runs), writes the weights with `glmlab.save_pretrained`, frees
its model, and times transformers' model read from that folder on the same step and tokens.
Printed per shape: glmlab's step time (median of the timed steps), tokens/s, MFU (FLOPs that
glmlab.accounting counts for the step, glmlab convention on CUDA, over the bf16 matmul peak
measured here by glmlab.measure.matmul_peak), peak memory, and transformers' time over glmlab's.
The counted FLOPs are those of this step: without labels (no indexer KL). `--labels` runs glmlab's
training loss as `glmlab train` computes it in DSA's sparse stage (LM loss, indexer KL, balance
loss) and counts it (glmlab only: the transformers model has no such loss).

- `--set FIELD=VALUE` overrides glmlab's config (e.g. `--set dsa_impl=mask`); transformers runs
  the weights as they are.
- `--compile` compiles glmlab's decoder layers (`train.compile`); the warm-up steps pay it.
- `--profile` prints glmlab's top CUDA kernels over two steps, with the kernel count per step.
- `--topk-select torch|radix` overrides how the Triton indexer selects its top-k (by default
  `torch.topk` below RADIX_FROM_KEYS keys, glmlab/model/mla.py).
- `--json FILE` also writes every figure as JSON.

    python benchmarks/bench_gpu_train.py [--shape glm5-small:16x1024 ...] [--steps 10] [--warmup 3]
        [--set FIELD=VALUE ...] [--compile] [--no-hf] [--labels] [--profile] [--topk-select radix]
        [--json FILE]
"""

from __future__ import annotations

import argparse
import gc
import json
import statistics
import tempfile
import time

import torch
import torch.nn.functional as F

from glmlab.config import TrainConfig

SHAPES = ["glm5-small:16x1024", "glm5-small:2x8192", "glm5-small:1x16384", "glm5-1b:1x4096"]


def parse_shape(text: str) -> tuple[str, int, int]:
    """'glm5-small:16x1024' -> ('glm5-small', 16, 1024)."""
    try:
        preset, dims = text.rsplit(":", 1)
        batch, seq = (int(v) for v in dims.lower().split("x"))
    except ValueError:
        raise SystemExit(
            f"error: --shape {text!r} is not PRESET:BATCHxSEQ: use e.g. glm5-small:16x1024"
        ) from None
    return preset, batch, seq


def loss_of(logits: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(logits[:, :-1].flatten(0, 1).float(), ids[:, 1:].flatten())


def step(model: torch.nn.Module, ids: torch.Tensor, train_cfg: TrainConfig | None = None) -> None:
    """Forward + backward of the next-token cross-entropy, or with `train_cfg` glmlab's training
    loss (labels given: the indexer's KL and the balance loss run, as in `glmlab train`)."""
    with torch.autocast("cuda", dtype=torch.bfloat16):
        if train_cfg is None:
            loss = loss_of(model(ids).logits, ids)
        else:
            from glmlab.model.losses import total_loss

            loss = total_loss(model(ids, labels=ids), train_cfg, dense_warmup=False).total
    loss.backward()
    model.zero_grad(set_to_none=True)


def time_steps(
    model: torch.nn.Module, ids: torch.Tensor, warmup: int, steps: int, train_cfg: TrainConfig | None = None
) -> dict:
    """Median seconds per step (each step timed to the GPU's completion) and peak memory."""
    for _ in range(warmup):
        step(model, ids, train_cfg)
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        step(model, ids, train_cfg)
        torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return {
        "step_s": statistics.median(times),
        "steps_s": times,
        "peak_bytes": torch.cuda.max_memory_allocated(),
    }


def profile_steps(
    model: torch.nn.Module, ids: torch.Tensor, train_cfg: TrainConfig | None = None, steps: int = 2
) -> None:
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        for _ in range(steps):
            step(model, ids, train_cfg)
        torch.cuda.synchronize()
    events = prof.key_averages()
    kernels = sum(e.count for e in events if e.device_type == torch.autograd.DeviceType.CUDA)
    print(events.table(sort_by="self_cuda_time_total", row_limit=40))
    print(f"  {kernels / steps:,.0f} GPU kernels per step")


def first_logits(model: torch.nn.Module, ids: torch.Tensor) -> torch.Tensor:
    with torch.no_grad(), torch.autocast("cuda", dtype=torch.bfloat16):
        return model(ids[:1, :256]).logits[0, :8].float()


def release(model: torch.nn.Module) -> None:
    model.to("meta")
    gc.collect()
    torch.cuda.empty_cache()


def run_shape(text: str, args: argparse.Namespace, peak: float) -> dict:
    from glmlab.accounting import flops_report
    from glmlab.build import build_model
    from glmlab.config import load_config
    from glmlab.hf import save_pretrained

    preset, batch, seq = parse_shape(text)
    base = load_config(preset)
    context = max(seq, base.model.max_position_embeddings)
    fields = [
        "num_nextn_predict_layers=0",
        f"train.seq_len={seq}",
        f"train.batch_size={batch}",
        f"max_position_embeddings={context}",
        *args.set,
    ]
    cfg = load_config(preset, fields)
    report = flops_report(cfg, seq, "train", "glmlab", mtp=False, device="cuda", labels=args.labels)
    flops = report.total * batch
    ids = torch.randint(
        0, cfg.model.vocab_size, (batch, seq), device="cuda", generator=torch.Generator("cuda").manual_seed(0)
    )
    torch.manual_seed(0)
    model = build_model(cfg, "cuda").train()
    train_cfg = None
    if args.labels:
        from glmlab.train.loop import set_stage
        from glmlab.train.schedule import MAIN, SPARSE

        set_stage(model, SPARSE if cfg.model.use_dsa else MAIN)
        train_cfg = cfg.train
    if args.compile:
        from glmlab.model.compile import compile_layers

        compile_layers(model)
    result = {"shape": text, "tokens": batch * seq, "flops": flops, "set": args.set, "compile": args.compile,
              "labels": args.labels}  # fmt: skip
    try:
        result["glmlab"] = time_steps(model, ids, args.warmup, args.steps, train_cfg)
        if args.profile:
            profile_steps(model, ids, train_cfg)
    except torch.OutOfMemoryError:
        result["glmlab"] = {"error": "out of memory"}
    g = result["glmlab"]
    if "step_s" in g:
        g["tokens_per_s"] = batch * seq / g["step_s"]
        g["mfu"] = flops / g["step_s"] / peak
    if not (args.no_hf or args.labels):
        from transformers import AutoModelForCausalLM

        with tempfile.TemporaryDirectory() as folder:
            reference = first_logits(model, ids)
            save_pretrained(model, folder)
            release(model)
            hf = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).cuda().train()
        result["max_logit_diff"] = (first_logits(hf, ids) - reference).abs().max().item()
        result["hf_attention"] = getattr(hf.config, "_attn_implementation", None)
        try:
            result["transformers"] = time_steps(hf, ids, args.warmup, args.steps)
        except torch.OutOfMemoryError:
            result["transformers"] = {"error": "out of memory"}
        release(hf)
        if "step_s" in g and "step_s" in result["transformers"]:
            result["ratio"] = result["transformers"]["step_s"] / g["step_s"]
    else:
        release(model)
    return result


def line(r: dict) -> str:
    g, parts = r["glmlab"], [f"{r['shape']:<20}"]
    if "step_s" in g:
        parts.append(
            f"glmlab {g['step_s']:.3f} s, {g['tokens_per_s']:>9,.0f} tok/s, "
            f"MFU {100 * g['mfu']:4.1f}%, peak {g['peak_bytes'] / 1e9:5.1f} GB"
        )
    else:
        parts.append(f"glmlab {g['error']}")
    hf = r.get("transformers")
    if hf is not None:
        parts.append(
            f"transformers {hf['step_s']:.3f} s" if "step_s" in hf else f"transformers {hf['error']}"
        )
    if "ratio" in r:
        parts.append(f"transformers/glmlab {r['ratio']:.2f}x (max |logit diff| {r['max_logit_diff']:.1e})")
    return " | ".join(parts)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shape", action="append", help=f"PRESET:BATCHxSEQ (default: {' '.join(SHAPES)})")
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--set", action="append", default=[], help="glmlab config override FIELD=VALUE")
    parser.add_argument("--compile", action="store_true", help="compile glmlab's decoder layers")
    parser.add_argument("--no-hf", action="store_true", help="time glmlab only")
    parser.add_argument("--labels", action="store_true", help="glmlab's training loss (indexer KL); no HF")
    parser.add_argument("--profile", action="store_true", help="glmlab's top CUDA kernels")
    parser.add_argument("--json", help="also write the results to this JSON file")
    parser.add_argument("--topk-select", choices=("torch", "radix"), help="the Triton indexer's top-k")
    args = parser.parse_args()
    if args.topk_select:
        from glmlab.model import mla

        mla.TOPK_SELECT = args.topk_select  # the model reads it at each call
    if not torch.cuda.is_available():
        raise SystemExit("error: no CUDA device: this benchmark times GPU training steps")
    if args.steps < 1 or args.warmup < 1:
        parser.error("--steps and --warmup must be at least 1")
    from glmlab.measure import matmul_peak

    peak = matmul_peak("cuda")
    compiled = (", compiled" if args.compile else "") + (", training loss with labels" if args.labels else "")
    select = [f"top-k select {args.topk_select}"] if args.topk_select else []
    overrides = " ".join(args.set + select) or "none"
    print(
        f"{torch.cuda.get_device_name()}, torch {torch.__version__}; bf16 matmul peak {peak / 1e12:.0f} "
        f"TFLOP/s; bf16 autocast, MTP off, glmlab overrides {overrides}{compiled}"
    )
    results = []
    for text in args.shape or SHAPES:
        results.append(run_shape(text, args, peak))
        print(line(results[-1]), flush=True)
    if args.json:
        with open(args.json, "w") as f:
            device = torch.cuda.get_device_name()
            run = {
                "peak_flops_per_s": peak,
                "device": device,
                "topk_select": args.topk_select,
                "results": results,
            }
            json.dump(run, f, indent=1)


if __name__ == "__main__":
    main()
