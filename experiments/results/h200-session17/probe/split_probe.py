"""Keys a program for the split (flash-decoding) sparse forward, Triton's and the Gluon forward's
runs, over every slot of a 128K cache (dense decoding since session 17) and over DSA's 2,048 picks,
at 1, 8 and 32 queries (GLM-5's 64 heads, R 576, r 512), each timed 20 calls in one CUDA graph:
what `split_keys` picks against other splits, with the bytes each call reads (the rows it gathers) as a rate.

    PYTHONPATH=$PWD python experiments/results/h200-session17/probe/split_probe.py
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "h200-session16" / "probe"))
from decode_probe import graphed_us  # noqa: E402

from glmlab.kernels import sparse_mla as sm  # noqa: E402


def timed(q, kv, idx, ok, r: int, keys: int, *, hopper: bool = False) -> float:
    if hopper:
        return graphed_us(lambda: sm._hopper_split_forward(q, kv, idx, ok, 0.04, r, keys))
    return graphed_us(lambda: sm._split_forward(q, kv, idx, ok, 0.04, r, sm.FORWARD_TILES, keys))


def main() -> None:
    device = torch.device("cuda")
    g = torch.Generator(device).manual_seed(0)
    C, R, r, H = 131073, 576, 512, 64
    sms = sm.multiprocessors(device)
    print(f"{sms} multiprocessors; us a call (GB/s of gathered rows)")
    for N in (1, 8, 32):
        kv = torch.randn(N * C, R, device=device, generator=g).bfloat16()
        q = torch.randn(N, H, R, device=device, generator=g).bfloat16()
        for K in (C, 2048):
            if K == C:
                idx = torch.arange(C, device=device)[None] + torch.arange(N, device=device)[:, None] * C
            else:
                idx = (
                    torch.randint(0, C, (N, K), device=device, generator=g)
                    + torch.arange(N, device=device)[:, None] * C
                )
            ok = torch.ones(N, K, dtype=torch.bool, device=device)
            for hopper in (False, True):
                tiles = sm.FORWARD_TILES._replace(block_k=sm.HOPPER_RUN_KEYS) if hopper else sm.FORWARD_TILES
                picked = sm.split_keys(N, H, K, tiles, sms)
                line = []
                for keys in sorted({64, 128, 256, 512, 1024, 2048, 4096, 8192, 32768, picked}):
                    if keys > K or (K == C and keys < 256) or (hopper and keys % sm.HOPPER_RUN_KEYS):
                        continue
                    us = timed(q, kv, idx, ok, r, keys, hopper=hopper)
                    gbs = N * K * R * 2 / us / 1e3
                    mark = "*" if keys == picked else ""
                    line.append(f"{keys}{mark}: {us:.1f} ({gbs:.0f})")
                print(f"{'Gluon' if hopper else 'Triton'} N={N} K={K}: " + ", ".join(line))


if __name__ == "__main__":
    main()
