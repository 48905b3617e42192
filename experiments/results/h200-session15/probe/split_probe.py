"""Probe (session 15): the warp-specialised sparse forward (`_split_kernel`: one warpgroup per key tile
of a pair, each a full 64-key score product) against the current Gluon
kernel: agreement on random inputs (invalid keys, K not a multiple of 128, two head blocks), then the
time at GLM-5's shape over 32K latents, random sorted rows, for a few register splits.

It ran in session 15's calls 3-5 while both kernels lived side by side in
glmlab/kernels/sparse_mla_hopper.py (the new one as `_split_kernel`, launched by
`hopper_split_forward`). The new kernel then replaced the old one as `_forward_kernel`, so at later
commits this probe no longer runs as it is; its logs are in ../call3 to ../call5.

    PYTHONPATH=$PWD python experiments/results/h200-session15/probe/split_probe.py
"""

import torch
from sparse_fwd_probe import ms  # this folder's other probe (the script's folder is on sys.path)

from glmlab.kernels.sparse_mla_hopper import hopper_forward, hopper_split_forward


def check() -> None:
    g = torch.Generator().manual_seed(5)
    for H, K in [(64, 2048), (128, 200), (64, 64), (64, 100), (64, 2000)]:
        N, M = 96, 3000
        q = torch.randn(N, H, 576, generator=g).cuda().bfloat16()
        kv = torch.randn(M, 576, generator=g).cuda().bfloat16()
        idx = torch.randint(0, M, (N, K), generator=g).cuda()
        valid = (torch.rand(N, K, generator=g) < 0.8).cuda()
        valid[:, 0], valid[1] = True, False
        valid[1, K // 2] = True
        valid[2, : K // 2] = False  # the first half of the keys invalid
        valid[2, -1] = True
        ref = hopper_forward(q, kv, idx, valid, 0.06, 512)
        got = hopper_split_forward(q, kv, idx, valid, 0.06, 512)
        d_out = (ref[0].float() - got[0].float()).abs().max().item()
        d_lse = (ref[1] - got[1]).abs().max().item()
        print(f"H={H} K={K}: max |out diff| {d_out:.3g}, max |lse diff| {d_lse:.3g}", flush=True)


def main() -> None:
    check()
    torch.manual_seed(0)
    N, T, H, R, K = 32768, 32768, 64, 576, 2048
    q = torch.randn(N, H, R, device="cuda", dtype=torch.bfloat16)
    kv = torch.randn(T, R, device="cuda", dtype=torch.bfloat16)
    valid = torch.ones(N, K, device="cuda", dtype=torch.bool)
    idx = torch.randint(0, T, (N, K), device="cuda").sort(-1).values
    flops = 2 * N * H * K * (R + 512)
    t = ms(lambda: hopper_forward(q, kv, idx, valid, 0.06, 512))
    print(f"current kernel       {t:8.2f} ms {flops / t / 1e9:6.0f} TFLOP/s", flush=True)
    for regs in (248, 240):
        t = ms(lambda regs=regs: hopper_split_forward(q, kv, idx, valid, 0.06, 512, regs=regs))
        print(f"split, {regs} registers   {t:8.2f} ms {flops / t / 1e9:6.0f} TFLOP/s", flush=True)


if __name__ == "__main__":
    main()
