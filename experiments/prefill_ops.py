"""Where DSA's prefill spends its device time, operator by operator (issue 16).

Builds benchmarks/bench_dsa_long_context.py's GLM-5 slice with DSA only, runs one prefill to compile
the kernels, then one under torch.profiler with the operators' input shapes, and prints the operators
with the most self device time (their own kernels) with the shapes they ran on, and the total.

    python experiments/prefill_ops.py [--context 128k] [--top 40] [--set index_dtype=fp8]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
from torch.autograd import DeviceType
from torch.profiler import ProfilerActivity, profile

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from bench_dsa_long_context import SLICE, configs, prefill_step, random_ids, tokens  # noqa: E402

from glmlab.build import build_model  # noqa: E402
from glmlab.device import autocast  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--context", type=tokens, default=131072)
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--top", type=int, default=40)
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    args = parser.parse_args()
    device = torch.device("cuda")
    cfg, _ = configs(SLICE, args.layers, "auto", args.context, args.set)
    torch.manual_seed(0)
    model = build_model(cfg, device).to(torch.bfloat16)
    ids = random_ids(cfg.model.vocab_size, args.context, device)
    step = prefill_step(model, ids, lambda: autocast(device, "bf16"))
    step()
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA], record_shapes=True) as prof:
        step()
        torch.cuda.synchronize()
    ops = [e for e in prof.key_averages(group_by_input_shape=True) if e.self_device_time_total > 0]
    ops.sort(key=lambda e: -e.self_device_time_total)
    # an operator's self device time is its kernels' time, which the kernels' own lines repeat
    total = sum(e.self_device_time_total for e in ops if e.device_type == DeviceType.CUDA)
    print(f"{args.context} tokens, {args.layers} layers, {' '.join(args.set) or 'defaults'}: "
          f"{total / 1e3:.1f} ms in kernels; below, operators and kernels both")  # fmt: skip
    for e in ops[: args.top]:
        shapes = str(e.input_shapes)[:110]
        print(f"{e.self_device_time_total / 1e3:9.2f} ms {e.count:5d}x  {e.key[:40]:40s} {shapes}")


if __name__ == "__main__":
    main()
