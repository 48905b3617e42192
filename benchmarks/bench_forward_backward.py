"""Forward+backward speed on CPU: glmlab against transformers' GlmMoeDsaForCausalLM, same weights.

A random glm_moe_dsa model of about 10M parameters (index_topk 64, batch 8, sequence 256,
fp32) is built in glmlab, written with `glmlab.save_pretrained` and read back by transformers,
so both run identical weights. Each side runs the same step (forward to logits, the same
next-token cross-entropy, backward).

Each model lives in its own process, and the two take turns, one step each, with the other
process idle: the turns cancel the machine's drift (which moves step times by 20% here), and
separate processes keep one model's allocations from changing the other's (in one process the
memory allocator's state, set by both models, moved the ratio by 0.2 to 0.3). Warm-up turns
first; the figure is the median over turns of hf_time / glmlab_time (the issue asks for >= 1.5).

- `--keep-memory`: both processes keep freed memory (glibc mallopt) instead of faulting in
  fresh pages each step. glmlab's process faults in 10-25K pages per step otherwise, a number
  that changes from run to run with the allocator's state; without the faults, the
  interquartile range of the turns' ratios was 0.04-0.15 (median 0.06) in six runs, against
  0.16-0.25 in three without.
- `--impl` picks glmlab's sparse attention path; `--compile` compiles glmlab per decoder
  layer (`train.compile`; the first step pays the compilation). transformers runs eagerly.
- `--profile` adds each side's top ops and, for each, the time of the work any
  implementation of this step must do: the matrix products (the same FLOPs on both sides),
  the attention kernels and the loss. transformers' step over glmlab's floor is the ratio an
  implementation with no other cost would reach.

    python benchmarks/bench_forward_backward.py [--impl mask|gather] [--compile] [--keep-memory]
        [--runs 11] [--warmup 3] [--threads N] [--profile] [--verbose]
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import statistics
import tempfile
import time
from multiprocessing.connection import Connection

import torch
import torch.nn.functional as F

OVERRIDES = [
    "vocab_size=4096", "hidden_size=256", "num_hidden_layers=4", "first_k_dense_replace=1",
    "intermediate_size=768", "moe_intermediate_size=192", "n_routed_experts=16", "num_experts_per_tok=2",
    "num_attention_heads=4", "q_lora_rank=192", "kv_lora_rank=128", "qk_nope_head_dim=32",
    "qk_rope_head_dim=16", "v_head_dim=32", "index_topk=64", "index_n_heads=8", "index_head_dim=32",
    "num_nextn_predict_layers=0",
]  # fmt: skip
BATCH, SEQ = 8, 256
MATMULS = {"aten::mm", "aten::addmm", "aten::bmm", "aten::baddbmm"}
LOSS = {
    "aten::_log_softmax",
    "aten::_log_softmax_backward_data",
    "aten::nll_loss_forward",
    "aten::nll_loss_backward",
}
FLOOR = {  # the same matrix products (FLOPs) on both sides, fused attention kernels, the loss
    "matrix products": lambda key: key in MATMULS,
    "attention kernels": lambda key: "scaled_dot_product" in key,
    "loss": lambda key: key in LOSS,
}


def loss_of(logits: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(logits[:, :-1].flatten(0, 1), ids[:, 1:].flatten())


def step(model: torch.nn.Module, ids: torch.Tensor) -> float:
    """Forward to logits, the same next-token cross-entropy for both, backward; seconds."""
    start = time.perf_counter()
    loss_of(model(ids).logits, ids).backward()
    elapsed = time.perf_counter() - start
    model.zero_grad(set_to_none=True)
    return elapsed


def keep_freed_memory() -> None:
    """glibc: serve large blocks from the heap and never hand freed memory back to the kernel,
    so a step reuses the pages of the previous one instead of faulting in fresh ones."""
    import ctypes

    libc = ctypes.CDLL("libc.so.6")
    m_trim_threshold, m_mmap_threshold = -1, -3
    libc.mallopt(m_mmap_threshold, 1 << 30)
    libc.mallopt(m_trim_threshold, (1 << 31) - 1)


def worker(side: str, args: argparse.Namespace, folder: str, conn: Connection) -> None:
    """One model in its own process: builds or loads it, then answers each request with one step."""
    if args.keep_memory:
        keep_freed_memory()
    if args.threads:
        torch.set_num_threads(args.threads)
    from glmlab.config import load_config

    cfg = load_config("glm5-tiny", [*OVERRIDES, f"dsa_impl={args.impl}"])
    ids = torch.randint(0, cfg.model.vocab_size, (BATCH, SEQ), generator=torch.Generator().manual_seed(0))
    if side == "glmlab":  # the same seed builds the same weights (checked by the logits)
        from glmlab.build import build_model

        torch.manual_seed(0)
        model = build_model(cfg).train()
        if args.compile:
            from glmlab.model.compile import compile_layers

            compile_layers(model)
    else:
        from transformers import AutoModelForCausalLM

        model = AutoModelForCausalLM.from_pretrained(folder).train()
    with torch.no_grad():
        logits = model(ids).logits
    conn.send((logits[0, :4], torch.get_num_threads(), getattr(model.config, "_attn_implementation", None)))
    try:
        while (request := conn.recv()) != "stop":
            conn.send(step(model, ids) if request == "step" else profile_side(model, ids))
    except EOFError:  # the parent stopped early
        return


def profile_side(model: torch.nn.Module, ids: torch.Tensor, steps: int = 3) -> tuple[str, dict[str, float]]:
    """Top ops of `steps` steps, and the time per step of the work any implementation of the
    step must do: matrix products, attention kernels and the loss."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(steps):
            step(model, ids)
    events = prof.key_averages()
    parts = {
        part: sum(e.self_cpu_time_total for e in events if match(e.key)) / 1e6 / steps
        for part, match in FLOOR.items()
    }
    return events.table(sort_by="self_cpu_time_total", row_limit=12), parts


def receive(conn: Connection, side: str):
    """The worker's answer, or a one-line exit if its process died (its traceback is above)."""
    try:
        return conn.recv()
    except EOFError:
        raise SystemExit(f"the {side} process died; its error is printed above") from None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--impl", choices=["mask", "gather"], default="mask", help="glmlab's dsa_impl")
    parser.add_argument("--compile", action="store_true", help="compile glmlab per decoder layer")
    parser.add_argument("--runs", type=int, default=11)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    parser.add_argument("--profile", action="store_true", help="top ops and the floor of each")
    parser.add_argument("--verbose", action="store_true", help="print every timed step")
    parser.add_argument("--keep-memory", action="store_true", help="both processes: no page faults")
    args = parser.parse_args()
    if args.runs < 2 or args.warmup < 0:
        parser.error("--runs must be at least 2 and --warmup at least 0")
    import glmlab
    from glmlab.build import build_model, parameter_report
    from glmlab.config import load_config

    torch.manual_seed(0)
    cfg = load_config("glm5-tiny", [*OVERRIDES, f"dsa_impl={args.impl}"])
    model = build_model(cfg)
    params = parameter_report(model)["total"]
    name = f"glmlab ({args.impl}{', compiled' if args.compile else ''})"
    ctx = mp.get_context("spawn")
    with tempfile.TemporaryDirectory() as folder:
        glmlab.save_pretrained(model, folder)
        del model
        sides = {}
        for side in ("glmlab", "transformers"):
            conn, child = ctx.Pipe()
            process = ctx.Process(target=worker, args=(side, args, folder, child), daemon=True)
            process.start()
            child.close()  # the worker holds the other end: if it dies, recv() raises EOFError
            logits, threads, attn = receive(conn, side)  # built (one at a time: loading is not timed)
            sides[side] = (conn, process, logits)
    diff = (sides["glmlab"][2] - sides["transformers"][2]).abs().max().item()
    print(
        f"model: glm_moe_dsa, {params / 1e6:.1f}M parameters, batch {BATCH} x {SEQ}, index_topk "
        f"{cfg.model.index_topk}, fp32, {threads} threads; transformers attention: {attn}; "
        f"max |logit diff| {diff:.1e}; one process per model, alternating steps"
    )
    if args.compile:
        sides["glmlab"][0].send("step")
        print(f"compiling glmlab's layers (first step): {receive(sides['glmlab'][0], 'glmlab'):.1f} s")
    times: dict[str, list[float]] = {side: [] for side in sides}
    for i in range(args.warmup + args.runs):
        for side in list(sides)[:: 1 if i % 2 else -1]:  # who goes first alternates
            conn = sides[side][0]
            conn.send("step")
            t = receive(conn, side)
            if i >= args.warmup:
                times[side].append(t)
    median = {side: statistics.median(ts) for side, ts in times.items()}
    for side, label in (("glmlab", name), ("transformers", "transformers")):
        print(f"{label:<26} forward+backward: {median[side] * 1000:8.1f} ms (median of {args.runs})")
    # Each turn's ratio compares two steps a second apart: the median of those is the figure
    # least moved by the machine's drift; the quartiles show how much the turns disagree.
    turns = [h / g for h, g in zip(times["transformers"], times["glmlab"], strict=True)]
    q1, _, q3 = statistics.quantiles(turns, n=4, method="inclusive")
    of_medians = median["transformers"] / median["glmlab"]
    print(
        f"ratio hf_time / glmlab_time: {statistics.median(turns):.2f}x, median of {len(turns)} turns "
        f"(quartiles {q1:.2f}-{q3:.2f}; ratio of the medians {of_medians:.2f}x); target >= 1.5x"
    )
    if args.verbose:
        for side, ts in times.items():
            print(side, " ".join(f"{t * 1000:.0f}" for t in ts))
    if args.profile:
        for side, (conn, _, _) in sides.items():
            conn.send("profile")
            table, parts = receive(conn, side)
            floor = sum(parts.values())
            print(side, table, sep="\n")
            print(f"{side}: " + ", ".join(f"{k} {v * 1000:.1f} ms" for k, v in parts.items()))
            print(f"  transformers' step / this floor: {median['transformers'] / floor:.2f}x")
    for conn, process, _ in sides.values():
        conn.send("stop")
        process.join()


if __name__ == "__main__":
    main()
