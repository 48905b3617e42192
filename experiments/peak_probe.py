"""How steady is the bf16 matmul peak that MFU divides by? Times glmlab.measure.matmul_peak five
times (one batch of 5 products of 8,192^2 after one warm-up product when session 11 first ran this;
the best of five such batches since), then batches of
20 products timed with CUDA events after a 1-second warm-up, for three sizes: each batch's rate,
their median and maximum. Run on a GPU machine: python experiments/peak_probe.py"""

import statistics
import time

import torch

from glmlab.measure import matmul_peak

print("matmul_peak as is:", ", ".join(f"{matmul_peak('cuda') / 1e12:.0f}" for _ in range(5)), "TFLOP/s")
for n in (4096, 8192, 16384):
    a, b = (torch.randn(n, n, device="cuda", dtype=torch.bfloat16) for _ in range(2))
    end = time.perf_counter() + 1.0
    while time.perf_counter() < end:
        a @ b
    torch.cuda.synchronize()
    rates = []
    for _ in range(10):
        start, stop = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        for _ in range(20):
            a @ b
        stop.record()
        stop.synchronize()
        rates.append(2 * n**3 * 20 / (start.elapsed_time(stop) / 1e3) / 1e12)
    print(f"{n}: median {statistics.median(rates):.0f}, max {max(rates):.0f}, min {min(rates):.0f} TFLOP/s")
