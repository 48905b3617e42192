"""One GPU against two (FSDP2, FSDP2 + EP=2) on the same per-GPU micro-batch, measured beside
`glmlab plan`'s estimates. Started by experiments/gpu_h200x2.sh:

    python experiments/parallel_runs.py run RUN_DIR [--set FIELD=VALUE ...]          # one GPU
    torchrun --nproc-per-node 2 experiments/parallel_runs.py run RUN_DIR [--set ...]  # two
    python experiments/parallel_runs.py summarize OUT                                  # the table

`--profile-steps FIRST:COUNT` records COUNT training steps from step FIRST with torch.profiler on
every rank and writes RUN_DIR/profile_rank<r>.txt: the step's wall time, how long the GPU was busy
computing, in NCCL kernels and both at once (so whether a rank waits on the host, on the network
or on the other rank), then the kernels by GPU time.

`run` trains a real `glmlab train` run (glmlab.train.Trainer: data, FSDP2 or EP from the rank
count and train.expert_parallel, checkpoint and evaluation) and writes RUN_DIR/measured.json:
tokens/s after the first steps, the losses, every rank's peak CUDA memory and the all-to-all
bytes each rank sent per step, with the plan's estimate of the same layout.
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

WARMUP_RECORDS = 2  # log records of the last stage skipped before averaging tokens/s (compiling, allocator)


def steady_tokens_per_s(records: list[dict], profiled_from: int | None) -> float:
    """Mean tokens/s of the last DSA stage's records after its first WARMUP_RECORDS (a stage's
    first step compiles its kernels) and before the profiled steps."""
    stage = [r for r in records if r.get("stage") == records[-1].get("stage")]
    kept = [r for r in stage[WARMUP_RECORDS:] if profiled_from is None or r["step"] < profiled_from]
    if not kept:
        raise SystemExit(
            f"no log record of the last stage after its first {WARMUP_RECORDS} and before the profiled "
            "steps: run more steps, log more often or profile later"
        )
    return statistics.mean(r["tokens_per_s"] for r in kept)


def _union(spans: list[tuple[float, float]]) -> list[tuple[float, float]]:
    merged: list[tuple[float, float]] = []
    for start, end in sorted(spans):
        if merged and start <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(merged[-1][1], end))
        else:
            merged.append((start, end))
    return merged


def _length(spans: list[tuple[float, float]]) -> float:
    return sum(end - start for start, end in spans)


def gpu_busy(prof, steps: int, wall_s: float) -> str:
    """Per step: wall time, GPU time in compute kernels, in NCCL kernels and in both at once."""
    from torch.autograd import DeviceType

    kernels = [e for e in prof.events() if e.device_type == DeviceType.CUDA]
    comm = _union([(e.time_range.start, e.time_range.end) for e in kernels if "nccl" in e.name.lower()])
    compute = _union(
        [(e.time_range.start, e.time_range.end) for e in kernels if "nccl" not in e.name.lower()]
    )
    both = _length(comm) + _length(compute) - _length(_union(comm + compute))
    per_step = 1e-3 / steps  # the profiler's times are in microseconds
    wall, busy, nccl = wall_s * 1e3 / steps, _length(compute) * per_step, _length(comm) * per_step
    return (
        f"per step: wall {wall:.1f} ms; GPU computing {busy:.1f} ms, in NCCL {nccl:.1f} ms, "
        f"both at once {both * per_step:.1f} ms"
    )


def profile_steps(trainer, first: int, count: int, out: Path) -> None:
    """Wrap `trainer.train_step` so that steps first..first+count-1 run under torch.profiler."""
    import time

    import torch
    from torch.profiler import ProfilerActivity, profile

    step = trainer.train_step
    state: dict = {}
    cuda = trainer.device.type == "cuda"
    sync = torch.cuda.synchronize if cuda else lambda: None
    activities = [ProfilerActivity.CPU, *([ProfilerActivity.CUDA] if cuda else [])]

    def wrapped():
        if trainer.step + 1 == first:
            sync()
            state["prof"] = profile(activities=activities)
            state["prof"].__enter__()
            state["start"] = time.perf_counter()
        result = step()
        if trainer.step == first + count - 1 and "prof" in state:
            sync()
            wall = time.perf_counter() - state["start"]
            prof = state.pop("prof")
            prof.__exit__(None, None, None)
            table = prof.key_averages().table(
                sort_by="self_cuda_time_total" if cuda else "self_cpu_time_total",
                row_limit=40,
                max_name_column_width=70,
            )
            out.write_text(f"{count} steps from step {first}\n{gpu_busy(prof, count, wall)}\n{table}\n")
        return result

    trainer.train_step = wrapped


def _profile_range(text: str, steps: int) -> tuple[int, int]:
    """FIRST:COUNT, checked against the run's steps before anything trains."""
    try:
        first, count = map(int, text.split(":"))
    except ValueError:
        raise SystemExit(f"--profile-steps {text!r}: give FIRST:COUNT, e.g. 13:2") from None
    if first < 1 or count < 1 or first + count - 1 > steps:
        raise SystemExit(
            f"--profile-steps {text}: steps {first} to {first + count - 1} are not within 1-{steps}"
        )
    return first, count


def run(
    run_dir: Path,
    config: str,
    device: str,
    overrides: list[str],
    profile: str | None = None,
    *,
    checkpoint: bool = True,
) -> None:
    """One run on this rank's device; on the CPU (a smoke test) peak memory reads 0. Without
    `checkpoint` the trainer writes none, not even the final one (glm5-1b's is about 45 GB)."""
    import torch
    import torch.distributed as dist
    from rich.console import Console

    from glmlab.accounting.cluster import GPUS, Layout, PlanOptions, plan_layout
    from glmlab.config import load_config
    from glmlab.parallel.expert_parallel import ExpertParallel
    from glmlab.parallel.world import current_world
    from glmlab.train.loop import Trainer

    cuda = device == "cuda"
    world = current_world(device)
    console = Console(quiet=not world.is_main)
    trainer = Trainer(load_config(config, overrides), run_dir, resume=False, device=device, console=console)
    if not checkpoint:
        trainer.save = lambda: run_dir
    first = None
    if profile:  # the profiled steps' log records are left out of tokens/s
        first, count = _profile_range(profile, trainer.cfg.train.steps)
        profile_steps(trainer, first, count, run_dir / f"profile_rank{world.rank}.txt")
    summary = trainer.run(show_progress=False).summary
    t = trainer.cfg.train
    sent = sum(m.sent_bytes for m in trainer.model.modules() if isinstance(m, ExpertParallel)) / t.steps
    peak = summary["peak_memory_bytes"] if cuda else 0  # the trainer's: CUDA allocator peak of the run
    mine = torch.tensor([peak, sent], dtype=torch.float64, device=device)
    every = [mine.clone() for _ in range(world.size)]
    if world.distributed:
        dist.all_gather(every, mine)
    if not world.is_main:
        return
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    records = [r for r in map(json.loads, lines) if "loss" in r]
    ep = t.expert_parallel if world.size > 1 else 1
    per_gpu = t.batch_size // world.size
    opts = PlanOptions(
        t.seq_len, t.batch_size * t.grad_accum, per_gpu, gpu=GPUS["h200"], optimizer=t.optimizer
    )
    plan = plan_layout(trainer.cfg, Layout(dp=world.size, ep=ep), opts)
    out = {
        "ranks": world.size, "expert_parallel": ep, "global_batch": t.batch_size * t.grad_accum,
        "micro_batch_per_gpu": per_gpu, "seq_len": t.seq_len, "steps": t.steps,
        "tokens_per_s": steady_tokens_per_s(records, first), "profiled_from": first,
        "losses": {r["step"]: r["loss"] for r in records},
        "peak_memory_per_rank": [float(v[0]) for v in every],
        "all_to_all_bytes_per_step_per_rank": [float(v[1]) for v in every],
        "plan": {"memory": plan.memory, "ep_all_to_all_bytes": plan.comm_bytes["ep_all_to_all"],
                 "tokens_per_s": plan.tokens_per_s},
    }  # fmt: skip
    (run_dir / "measured.json").write_text(json.dumps(out, indent=1) + "\n")
    print(json.dumps({k: v for k, v in out.items() if k != "losses"}))


def summarize(root: Path) -> None:
    found = {p.parent.name: json.loads(p.read_text()) for p in sorted(root.glob("*/measured.json"))}
    if "one" not in found:
        raise SystemExit(f"no {root}/one/measured.json: the one-GPU run did not finish")
    base = found["one"]
    print(f"{'run':<6} {'GPUs':>4} {'EP':>3} {'tokens/s':>10} {'speed-up':>8} "
          f"{'peak GB/GPU (meas / plan)':>27} {'a2a MB/step/GPU (meas / plan)':>31} "
          f"{'max |loss - one GPU|':>21}")  # fmt: skip
    for name, m in found.items():
        peak = max(m["peak_memory_per_rank"]) / 1e9
        plan_peak = m["plan"]["memory"]["total"] / 1e9
        a2a = max(m["all_to_all_bytes_per_step_per_rank"]) / 1e6
        plan_a2a = m["plan"]["ep_all_to_all_bytes"] / 1e6
        common = set(m["losses"]) & set(base["losses"])
        diff = max(abs(m["losses"][s] - base["losses"][s]) for s in common)
        print(f"{name:<6} {m['ranks']:>4} {m['expert_parallel']:>3} {m['tokens_per_s']:>10,.0f} "
              f"{m['tokens_per_s'] / base['tokens_per_s']:>8.2f} {peak:>12.2f} / {plan_peak:<6.2f} "
              f"({peak / plan_peak:.2f}) {a2a:>14.1f} / {plan_a2a:<8.1f} {diff:>14.4f}")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("what", choices=["run", "summarize"])
    parser.add_argument("path", type=Path)
    parser.add_argument("--set", dest="overrides", action="append", default=[])
    parser.add_argument("--config", default="glm5-small")
    parser.add_argument("--device", default="cuda", choices=["cuda", "cpu"])
    parser.add_argument("--profile-steps", metavar="FIRST:COUNT", help="profile these steps (CUDA)")
    parser.add_argument("--no-checkpoint", action="store_true", help="write no checkpoint, not even the last")
    args = parser.parse_args()
    if args.what == "run":
        run(
            args.path,
            args.config,
            args.device,
            args.overrides,
            args.profile_steps,
            checkpoint=not args.no_checkpoint,
        )
    else:
        summarize(args.path)


if __name__ == "__main__":
    main()
