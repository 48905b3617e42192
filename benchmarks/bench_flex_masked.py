"""Attention under DSA's top-k mask on one GPU: FlexAttention over the causal key blocks
(glmlab/kernels/flex_masked.py) against SDPA with the boolean mask (the masked reference, which
PyTorch hands to cuDNN and which scores the whole square).

Shape B x H x S x D (default glm5-1b's training step: 4 x 16 x 4,096 x 256, q/k 192 + 64, v 256),
bf16; each query keeps min(k, its visible keys) keys chosen at random (k = 2048), itself included.
Times from `triton.testing.do_bench` (median ms) of the forward and of forward + backward, with
useful TFLOP/s over the kept pairs, counted as the calculator counts SDPA's: 2 (D + D) FLOPs a pair
forward, 2 (3 D + 2 D) backward. `--bwd M1,N1,M2,N2,stages,
warps` (repeatable) times FlexAttention with those backward tiles (its `kernel_options`);
`--options NAME=VALUE,...` with any of its kernel_options (the forward's BLOCK_M, BLOCK_N,
num_warps, num_stages too); `--autotune` compiles it once more with inductor's max_autotune, which
prints every tile it tried.
`--rows N` times only the last N queries (against every key they see): the rows Flex runs in
glmlab's split, where the first k queries keep all their keys and run as causal SDPA (k = 2048 of
4,096: N = 2048); that causal SDPA over the first S - N queries is then timed too. `--backend NAME`
(repeatable: flash, efficient, cudnn) also times the SDPA lines under that backend alone.
`--sdpa-chunks N` (repeatable) times SDPA's masked line query chunk by query chunk, each chunk
over the keys up to its last query, so that the square above the diagonal is mostly skipped.

    python benchmarks/bench_flex_masked.py [--shape 4,16,4096,256] [--topk 2048] [--rows 2048]
        [--bwd 64,64,64,64,2,8 ...] [--options BLOCK_M=128,BLOCK_N=64 ...] [--backend cudnn ...]
        [--sdpa-chunks 512 ...] [--autotune]
"""

from __future__ import annotations

import argparse
import contextlib
import functools

import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel
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


BACKENDS = {"flash": SDPBackend.FLASH_ATTENTION, "efficient": SDPBackend.EFFICIENT_ATTENTION,
            "cudnn": SDPBackend.CUDNN_ATTENTION}  # fmt: skip


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
    parser.add_argument("--rows", type=int, default=0, help="time only the last ROWS queries (default all)")
    parser.add_argument("--bwd", action="append", default=[], help="M1,N1,M2,N2,stages,warps of the backward")
    parser.add_argument("--options", action="append", default=[], help="NAME=VALUE,... Flex kernel_options")
    parser.add_argument("--backend", action="append", default=[], choices=sorted(BACKENDS),
                        help="also time the SDPA lines under this backend alone")  # fmt: skip
    parser.add_argument("--sdpa-chunks", action="append", type=int, default=[],
                        help="also time SDPA's masked line in chunks of this many queries, each over the "
                        "keys up to its last query")  # fmt: skip
    parser.add_argument("--autotune", action="store_true", help="also compile with max_autotune")
    args = parser.parse_args()
    B, H, S, D = (int(x) for x in args.shape.split(","))
    rows = args.rows or S
    gen = torch.Generator("cuda").manual_seed(0)
    q, k, v = (torch.randn(B, H, S, D, device="cuda", dtype=torch.bfloat16, generator=gen) for _ in range(3))
    first = q[:, :, : S - rows].detach().requires_grad_()  # the queries the split runs as causal SDPA
    q = q[:, :, S - rows :].detach().requires_grad_()
    k, v = k.requires_grad_(), v.requires_grad_()
    keep = topk_mask(B, S, args.topk, "cuda")[:, S - rows :]
    scale = D**-0.5
    block_mask = causal_block_mask(keep)
    device = torch.cuda.get_device_name()
    print(f"{device}, torch {torch.__version__}; B,H,S,D {args.shape}, top-{args.topk}, last {rows} queries")

    def report(name: str, ms: tuple[float, float], pairs: int, base: tuple[float, float] | None) -> None:
        fwd, total = ms
        fwd_flops, bwd_flops = pairs * H * 2 * (D + D), pairs * H * 2 * (3 * D + 2 * D)
        line = (f"{name:<34} forward {fwd:7.2f} ms ({fwd_flops / fwd / 1e9:4.0f} TFLOP/s useful), "
                f"fwd+bwd {total:7.2f} ms ({(fwd_flops + bwd_flops) / total / 1e9:4.0f})")  # fmt: skip
        if base is not None:
            line += f", {base[1] / total:.2f}x SDPA's fwd+bwd"
        print(line, flush=True)

    def under(backend: str | None):
        return sdpa_kernel(BACKENDS[backend]) if backend else contextlib.nullcontext()

    def attempt(name: str, measure, pairs: int, base=None) -> tuple[float, float] | None:
        try:
            ms = measure()
        except Exception as err:  # a tile or backend that does not take this shape: say so and go on
            print(f"{name:<34} failed: {type(err).__name__}: {str(err).splitlines()[0][:120]}", flush=True)
            return None
        report(name, ms, pairs, base)
        return ms

    kept = keep.sum().item()
    masked_sdpa = functools.partial(F.scaled_dot_product_attention, attn_mask=keep[:, None], scale=scale)
    causal_sdpa = functools.partial(F.scaled_dot_product_attention, is_causal=True, scale=scale)
    sdpa = None
    for backend in [None, *args.backend]:

        def measure(backend=backend):
            with under(backend):
                return timings(masked_sdpa, q, k, v)

        ms = attempt(f"SDPA, boolean mask, {backend or 'default'}", measure, kept, None)
        sdpa = sdpa or ms
    for chunk in args.sdpa_chunks:

        def chunked(q, k, v, chunk=chunk):
            parts = []
            for a in range(0, rows, chunk):
                b, end = min(a + chunk, rows), S - rows + min(a + chunk, rows)
                mask = keep[:, None, a:b, :end]
                parts.append(F.scaled_dot_product_attention(q[:, :, a:b], k[:, :, :end], v[:, :, :end],
                                                            attn_mask=mask, scale=scale))  # fmt: skip
            return torch.cat(parts, dim=2)

        attempt(f"SDPA, boolean mask, chunks of {chunk}", lambda f=chunked: timings(f, q, k, v), kept, sdpa)
    if rows < S:
        n = S - rows
        for backend in [None, *args.backend]:

            def causal(backend=backend):
                with under(backend):
                    return timings(causal_sdpa, first, k[:, :, :n], v[:, :, :n])

            attempt(f"first {n}: causal SDPA, {backend or 'default'}", causal, n * (n + 1) // 2 * B, None)
    variants = [("flex, default tiles", {})]
    for text in args.bwd:
        m1, n1, m2, n2, stages, warps = (int(x) for x in text.split(","))
        options = {"BLOCK_M1": m1, "BLOCK_N1": n1, "BLOCK_M2": m2, "BLOCK_N2": n2,
                   "bwd_num_stages": stages, "bwd_num_warps": warps}  # fmt: skip
        variants.append((f"flex, backward {text}", options))
    for text in args.options:
        options = {name: int(value) for name, value in (item.split("=") for item in text.split(","))}
        variants.append((f"flex, {text}", options))
    for name, options in variants:
        compiled = torch.compile(flex_attention, dynamic=False)

        def attend(q, k, v, compiled=compiled, options=options):
            return compiled(q, k, v, block_mask=block_mask, scale=scale, kernel_options=options)

        attempt(name, lambda attend=attend: timings(attend, q, k, v), kept, sdpa)
    if args.autotune:
        torch._dynamo.reset()
        compiled = torch.compile(flex_attention, dynamic=False, mode="max-autotune-no-cudagraphs")
        ms = timings(lambda q, k, v: compiled(q, k, v, block_mask=block_mask, scale=scale), q, k, v)
        report("flex, max-autotune", ms, kept, sdpa)


if __name__ == "__main__":
    main()
