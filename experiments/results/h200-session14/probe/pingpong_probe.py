"""Probe (session 14): the ping-pong Gluon sparse forward (`_pingpong_kernel`, 32-key tiles, each
warpgroup its own tiles and half the value columns) against the current Gluon kernel and the Triton
kernel: agreement on the CUDA test's shapes, then time at GLM-5's shape (64 heads, R = 576, r = 512,
K = 2048, random picks among as many rows as queries).

    PYTHONPATH=$PWD python experiments/results/h200-session14/probe/pingpong_probe.py
"""

import torch

from glmlab.kernels import sparse_mla as kernels
from glmlab.kernels.sparse_mla_hopper import hopper_forward

LOG2E = 1.4426950408889634


def inputs(N, H, K, M, seed, invalid=True):
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(N, H, 576, generator=g).cuda().bfloat16()
    kv = torch.randn(M, 576, generator=g).cuda().bfloat16()
    idx = torch.randint(0, M, (N, K), generator=g).cuda()
    valid = (torch.rand(N, K, generator=g) < (0.8 if invalid else 2.0)).cuda()
    if invalid:
        valid[:, 0], valid[1] = True, False
        valid[1, K // 2] = True
    return q, kv, idx, valid


def main() -> None:
    scale = 576**-0.5
    for H, K in [(64, 2048), (128, 200), (64, 64), (64, 32), (64, 96)]:
        q, kv, idx, valid = inputs(96, H, K, 3000, 5)
        old, old_lse = hopper_forward(q, kv, idx, valid, scale * LOG2E, 512)
        new, new_lse = hopper_forward(q, kv, idx, valid, scale * LOG2E, 512, pingpong=True)
        args = (kv, idx, valid, scale, 512, False, False, [*kernels.FORWARD_TILES, *[16] * 12])
        tri, tri_lse, *_ = kernels._forward(q, *args, False)
        print(f"H={H} K={K}: |new-triton| {(new.float() - tri.float()).abs().max().item():.4f} "
              f"|old-triton| {(old.float() - tri.float()).abs().max().item():.4f} "
              f"lse |new-triton| {(new_lse - tri_lse).abs().max().item():.2e} "
              f"nan {torch.isnan(new).any().item()}", flush=True)  # fmt: skip
    for N in (8192, 32768):
        q, kv, idx, valid = inputs(N, 64, 2048, N, 1, invalid=False)
        flops = 2 * N * 64 * 2048 * (576 + 512)
        for name, pp in (("gluon", False), ("pingpong", True), ("gluon", False), ("pingpong", True)):
            hopper_forward(q, kv, idx, valid, scale * LOG2E, 512, pingpong=pp)
            times = []
            for _ in range(10):
                a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                a.record()
                hopper_forward(q, kv, idx, valid, scale * LOG2E, 512, pingpong=pp)
                b.record()
                torch.cuda.synchronize()
                times.append(a.elapsed_time(b))
            ms = sorted(times)[len(times) // 2]
            print(f"N={N} {name}: {ms:.2f} ms, {flops / ms / 1e9:.0f} TFLOP/s", flush=True)


if __name__ == "__main__":
    main()
