"""Attention under DSA's top-k mask on one GPU: FlexAttention over the causal key blocks
(glmlab/kernels/flex_masked.py) against SDPA with the boolean mask (the masked reference, which
PyTorch hands to cuDNN and which scores the whole square).

Shape B x H x S x D (default glm5-1b's training step: 4 x 16 x 4,096 x 256, q/k 192 + 64, v 256),
bf16; each query keeps min(k, its visible keys) keys chosen at random (k = 2048), itself included.
Times from `triton.testing.do_bench` (median ms) of the forward and of forward + backward, with
useful TFLOP/s over the kept pairs, counted as the calculator counts SDPA's: 2 (D + D) FLOPs a pair
forward, 2 (3 D + 2 D) backward. `--bwd M1,N1,M2,N2,stages,
warps` (repeatable) times FlexAttention with those backward tiles (its `kernel_options`);
`--autotune` compiles it once more with inductor's max_autotune, which prints every tile it tried.

    python benchmarks/bench_flex_masked.py [--shape 4,16,4096,256] [--topk 2048] [--bwd 64,64,64,64,2,8 ...]
        [--autotune]
"""

from __future__ import annotations

import argparse

import torch
import torch.nn.functional as F
from torch.nn.attention.flex_attention import flex_attention
from triton.testing import do_bench

from glmlab.kernels.flex_masked import causal_block_mask


def topk_mask(B: int, S: int, k: int, device: str) -> torch.Tensor:
    """[B,S,S]: each query keeps min(k, q + 1) of its visible keys at random, itself included."""
    scores = torch.rand(B, S, S, device=device).tril_()
    scores.diagonal(dim1=1, dim2=2).fill_(2.0)
    keep = torch.zeros(B, S, S, dtype=torch.bool, device=device)
    keep.scatter_(-1, scores.topk(min(k, S), dim=-1).indices, True)
    return keep & torch.ones(S, S, dtype=torch.bool, device=device).tril()


def timings(attend, q, k, v) -> tuple[float, float]:
    """Median ms of the forward and of forward + backward."""
    grad = torch.randn_like(q)

    def both():
        attend(q, k, v).backward(grad)

    fwd = do_bench(lambda: attend(q, k, v), warmup=5, rep=40)
    return fwd, do_bench(both, warmup=5, rep=40, grad_to_none=[q, k, v])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shape", default="4,16,4096,256", help="B,H,S,D (default glm5-1b's)")
    parser.add_argument("--topk", type=int, default=2048)
    parser.add_argument("--bwd", action="append", default=[], help="M1,N1,M2,N2,stages,warps of the backward")
    parser.add_argument("--autotune", action="store_true", help="also compile with max_autotune")
    args = parser.parse_args()
    B, H, S, D = (int(x) for x in args.shape.split(","))
    gen = torch.Generator("cuda").manual_seed(0)
    q, k, v = (torch.randn(B, H, S, D, device="cuda", dtype=torch.bfloat16, generator=gen) for _ in range(3))
    q, k, v = (t.requires_grad_() for t in (q, k, v))
    keep = topk_mask(B, S, args.topk, "cuda")
    pairs = keep.sum().item() * H
    scale = D**-0.5
    fwd_flops, bwd_flops = pairs * 2 * (D + D), pairs * 2 * (3 * D + 2 * D)
    block_mask = causal_block_mask(keep)
    device = torch.cuda.get_device_name()
    print(f"{device}, torch {torch.__version__}; B,H,S,D {args.shape}, top-{args.topk} mask")

    def report(name: str, ms: tuple[float, float], base: tuple[float, float] | None) -> None:
        fwd, total = ms
        line = (f"{name:<34} forward {fwd:7.2f} ms ({fwd_flops / fwd / 1e9:4.0f} TFLOP/s useful), "
                f"fwd+bwd {total:7.2f} ms ({(fwd_flops + bwd_flops) / total / 1e9:4.0f})")  # fmt: skip
        if base is not None:
            line += f", {base[1] / total:.2f}x SDPA's fwd+bwd"
        print(line, flush=True)

    masked = keep[:, None]
    sdpa = timings(lambda *qkv: F.scaled_dot_product_attention(*qkv, attn_mask=masked, scale=scale), q, k, v)
    report("SDPA, boolean mask", sdpa, None)
    variants = [("flex, default tiles", {})]
    for text in args.bwd:
        m1, n1, m2, n2, stages, warps = (int(x) for x in text.split(","))
        options = {"BLOCK_M1": m1, "BLOCK_N1": n1, "BLOCK_M2": m2, "BLOCK_N2": n2,
                   "bwd_num_stages": stages, "bwd_num_warps": warps}  # fmt: skip
        variants.append((f"flex, backward {text}", options))
    for name, options in variants:
        compiled = torch.compile(flex_attention, dynamic=False)

        def attend(q, k, v, compiled=compiled, options=options):
            return compiled(q, k, v, block_mask=block_mask, scale=scale, kernel_options=options)

        try:
            ms = timings(attend, q, k, v)
        except Exception as err:  # a tile that does not fit: say so and go on
            print(f"{name:<34} failed: {type(err).__name__}: {str(err).splitlines()[0][:120]}", flush=True)
            continue
        report(name, ms, sdpa)
    if args.autotune:
        torch._dynamo.reset()
        compiled = torch.compile(flex_attention, dynamic=False, mode="max-autotune-no-cudagraphs")
        ms = timings(lambda q, k, v: compiled(q, k, v, block_mask=block_mask, scale=scale), q, k, v)
        report("flex, max-autotune", ms, sdpa)


if __name__ == "__main__":
    main()
