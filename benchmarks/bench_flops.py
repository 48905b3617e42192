"""`glmlab flops` speed: the analytic summary of the full GLM-5 (FLOPs at three context
lengths, memory, claims) against building GLM-5 on the meta device and counting its
parameters (`glmlab build`'s path), in the same process. The target is well under a second.

    python benchmarks/bench_flops.py [--preset glm5] [--repeats 5]
"""

from __future__ import annotations

import argparse
import statistics
import time

from glmlab.accounting.report import flops_summary
from glmlab.build import build_model, parameter_report
from glmlab.config import load_config


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="glm5")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    cfg = load_config(args.preset)
    ours, base = [], []
    for _ in range(args.repeats):
        start = time.perf_counter()
        flops_summary(cfg, [4096, 32768, 131072], 1, "dsa")
        ours.append(time.perf_counter() - start)
        start = time.perf_counter()
        parameter_report(build_model(cfg, "meta"))
        base.append(time.perf_counter() - start)
    a, b = statistics.median(ours), statistics.median(base)
    print(f"{args.preset}: flops summary {a * 1000:.1f} ms, meta build + parameter count {b * 1000:.1f} ms, "
          f"ratio {a / b:.3f}")  # fmt: skip


if __name__ == "__main__":
    main()
