"""Sparse MLA attention (glmlab/kernels/sparse_mla.py) at GLM-5's shape on one GPU.

H=64 heads, latent rows of R=576 (r=512 values + 64 rope), K=2048 selected keys per query, N queries
over M=N latent rows with uniformly random indices, bf16. Forward (with and without the key mass),
backward alone (the backward op on a saved forward) and forward+backward times from
`triton.testing.do_bench` (median), useful TFLOP/s (the calculator's absorbed count:
`forward_flops`, `backward_flops`), each beside session 2's kernels' figure where one was
measured (BEFORE), the backward's three kernels timed apart by torch.profiler, against the torch
twin and the model's gathered path where they fit, and against dense causal SDPA (64 heads x 192)
at the same N for scale. The forward without the key mass is timed in the Triton kernel and, on a
Hopper GPU, in the Gluon kernel of glmlab/kernels/sparse_mla_hopper.py (the default there).
`--sweep` first times the candidate tiles at the smallest N and uses the fastest of each kind for
the rest (the forward by its time with and without the key mass together).

    python benchmarks/bench_sparse_mla.py [--n 8192 32768 131072] [--sweep] [--no-baselines] [--forward-only]
"""

from __future__ import annotations

import argparse
import math
from functools import partial

import torch
import torch.nn.functional as F
from triton.runtime.errors import OutOfResources
from triton.testing import do_bench

from glmlab.kernels import sparse_mla as kernels
from glmlab.kernels.sparse_mla import BackwardTiles, Tiles, backward_flops, forward_flops, sparse_mla
from glmlab.kernels.sparse_mla_ref import sparse_mla_ref
from glmlab.model.dsa import gathered_attention

H, R, r, K = 64, 576, 512, 2048
SCALE = 256**-0.5  # the order of GLM-5's softmax scale (a query head has 192 + 64 dimensions)
# Milliseconds of session 2's kernels (glmlab/kernels/sparse_mla.py at b7336c3) on an H200, timed
# as this script times the current ones, in the same call as the current ones' first run
# (experiments/results/h200-kernels-sparse-mla-3/run1_before.txt, probe/before.py).
BEFORE = {
    ("forward, no mass", 8192): 8.94,
    ("forward with mass", 8192): 13.97,
    ("backward", 8192): 58.74,
    ("forward, no mass", 32768): 37.77,
    ("forward with mass", 32768): 60.13,
    ("backward", 32768): 261.12,
}


def problem(N: int, *, grad: bool) -> tuple[torch.Tensor, ...]:
    g = torch.Generator(device="cuda").manual_seed(0)
    q = torch.randn(N, H, R, device="cuda", dtype=torch.bfloat16, generator=g).requires_grad_(grad)
    kv = torch.randn(N, R, device="cuda", dtype=torch.bfloat16, generator=g).requires_grad_(grad)
    idx = torch.randint(0, N, (N, K), device="cuda", generator=g)
    return q, kv, idx, torch.ones(N, K, dtype=torch.bool, device="cuda")


def timed(fn) -> float | str:
    """Median seconds of fn, or why it did not run (out of GPU memory, or of shared memory)."""
    try:
        return do_bench(fn, warmup=25, rep=100, return_mode="median") / 1e3
    except (torch.cuda.OutOfMemoryError, OutOfResources) as error:
        return type(error).__name__
    finally:
        torch.cuda.empty_cache()


def fmt(seconds: float | str, flops: float, before: float | None = None) -> str:
    if isinstance(seconds, str):
        return seconds
    line = f"{seconds * 1e3:9.2f} ms {flops / seconds / 1e12:6.1f} TF/s"
    if before is not None:
        line += (
            f"   (before {before:.2f} ms, {flops / before / 1e9:.1f} TF/s: {before / (seconds * 1e3):.2f}x)"
        )
    return line


def train_step(attend, *args):
    """A forward and a backward of attend(*args)[0] (gradient all ones), leaves' gradients cleared."""
    leaves = [a for a in args if isinstance(a, torch.Tensor) and a.requires_grad]

    def step():
        out = attend(*args)[0]
        torch.autograd.backward(out, grad_tensors=torch.ones_like(out))
        for leaf in leaves:
            leaf.grad = None

    return step


def backward_only(q, kv, idx, valid, fwd_tiles: Tiles, bwd_tiles: BackwardTiles):
    """The backward op alone on one saved forward (d_out all ones)."""
    tiles = [*fwd_tiles, *(x for t in bwd_tiles for x in t)]
    out, lse, _, kept = kernels._forward(q, kv, idx, valid, SCALE, r, False, False, tiles, False, False)
    d_out = torch.ones_like(out)
    return partial(kernels._backward, q, kv, idx, valid, out, lse, kept, d_out, SCALE, r, [*tiles[4:]])


def sweep(N: int) -> tuple[Tiles, BackwardTiles]:
    q, kv, idx, valid = problem(N, grad=False)
    fwd, bwd = forward_flops(N, K, H, R, r), backward_flops(N, K, H, R, r)
    best_f, best_b = (math.inf, kernels.FORWARD_TILES), (math.inf, kernels.BACKWARD_TILES)
    print(f"sweep at N={N} (forward without / with key mass; backward alone)")
    for tiles in kernels.FORWARD_CANDIDATES:
        attend = partial(sparse_mla, q, kv, idx, valid, scale=SCALE, r=r, forward_tiles=tiles, hopper=False)
        t, t_mass = timed(partial(attend, mass=False)), timed(attend)
        print(f"  forward  {tuple(tiles)}: {fmt(t, fwd)} / {fmt(t_mass, fwd)}", flush=True)
        if not isinstance(t, str) and not isinstance(t_mass, str) and t + t_mass < best_f[0]:
            best_f = (t + t_mass, tiles)
    for tiles in kernels.BACKWARD_CANDIDATES:
        t = timed(backward_only(q, kv, idx, valid, best_f[1], tiles))
        print(f"  backward {[tuple(x) for x in tiles]}: {fmt(t, bwd)}", flush=True)
        if not isinstance(t, str) and t < best_b[0]:
            best_b = (t, tiles)
    print(f"  chosen: forward {tuple(best_f[1])}, backward {[tuple(x) for x in best_b[1]]}")
    return best_f[1], best_b[1]


def row(name: str, fn, flops: float, N: int) -> None:
    print(f"  {name:26}{fmt(timed(fn), flops, BEFORE.get((name, N)))}", flush=True)


def kernel_times(step) -> None:
    """Each backward kernel's total time over one call of step (torch.profiler, CUDA time)."""
    step()
    torch.cuda.synchronize()
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CUDA]) as prof:
        step()
        torch.cuda.synchronize()
    for event in prof.key_averages():
        if event.key.startswith("_") and event.key.endswith("_kernel"):
            print(f"    {event.key:18} {event.device_time_total / 1e3:9.2f} ms ({event.count} launches)")


def bench(N: int, fwd_tiles: Tiles, bwd_tiles: BackwardTiles, *, baselines: bool, forward_only: bool) -> None:
    """One N: the Triton kernels (with `forward_only`, the forwards without the key mass alone), the
    torch paths where they fit, dense SDPA."""
    fwd, bwd = forward_flops(N, K, H, R, r), backward_flops(N, K, H, R, r)
    print(f"N={N} (useful GFLOP: forward {fwd / 1e9:.0f}, backward {bwd / 1e9:.0f})")
    q, kv, idx, valid = problem(N, grad=True)
    no_grad = (q.detach(), kv.detach(), idx, valid)
    tiles = dict(scale=SCALE, r=r, forward_tiles=fwd_tiles, backward_tiles=bwd_tiles)
    row("forward, no mass", partial(sparse_mla, *no_grad, mass=False, hopper=False, **tiles), fwd, N)
    if kernels.hopper_forward_applies(q, kv, r, mass=False, keep_probs=False):
        row("forward, no mass, Gluon", partial(sparse_mla, *no_grad, mass=False, **tiles), fwd, N)
    if forward_only:
        return
    row("forward with mass", partial(sparse_mla, *no_grad, **tiles), fwd, N)
    backward = backward_only(*no_grad, fwd_tiles, bwd_tiles)
    row("backward", backward, bwd, N)
    kernel_times(backward)
    del backward
    row("forward+backward", train_step(partial(sparse_mla, **tiles), q, kv, idx, valid), fwd + bwd, N)
    if not baselines:
        return
    if N <= 8192:
        row("twin forward", partial(sparse_mla_ref, *no_grad, scale=SCALE, r=r), fwd, N)
    if N <= 32768:
        row("gathered forward", partial(gathered_attention, *no_grad, SCALE, r), fwd, N)
        gathered = partial(gathered_attention, scale=SCALE, r=r)
        row("gathered forward+backward", train_step(gathered, q, kv, idx, valid), fwd + bwd, N)
    del q, kv, idx, valid, no_grad
    qkv = [torch.randn(1, H, N, 192, device="cuda", dtype=torch.bfloat16, requires_grad=True) for _ in "qkv"]
    dense = 2 * 2 * H * 192 * N * N / 2  # causal: half of the N x N pairs, QK and PV

    def sdpa(*args):
        return (F.scaled_dot_product_attention(*args, is_causal=True),)

    with torch.no_grad():
        row("dense SDPA forward", partial(sdpa, *qkv), dense, N)
    row("dense SDPA fwd+bwd", train_step(sdpa, *qkv), 3.5 * dense, N)  # backward: 2.5x forward


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, nargs="+", default=[8192, 32768, 131072])
    parser.add_argument("--sweep", action="store_true")
    parser.add_argument("--no-baselines", action="store_true", help="time only the Triton kernels")
    parser.add_argument("--forward-only", action="store_true", help="time only the forwards without mass")
    args = parser.parse_args()
    print(f"{torch.cuda.get_device_name()}, torch {torch.__version__}; H={H} R={R} r={r} K={K}, bf16")
    tiles = sweep(args.n[0]) if args.sweep else (kernels.FORWARD_TILES, kernels.BACKWARD_TILES)
    for N in args.n:
        bench(N, *tiles, baselines=not args.no_baselines, forward_only=args.forward_only)
        torch.cuda.empty_cache()


if __name__ == "__main__":
    main()
