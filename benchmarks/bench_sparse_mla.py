"""Sparse MLA attention (glmlab/kernels/sparse_mla.py) at GLM-5's shape on one GPU.

H=64 heads, latent rows of R=576 (r=512 values + 64 rope), K=2048 selected keys per query, N queries
over M=N latent rows with uniformly random indices, bf16. Forward (with and without the key mass)
and forward+backward times from `triton.testing.do_bench` (median), useful TFLOP/s (the
calculator's absorbed count: `forward_flops`, `backward_flops`), the backward with the previous
default tiles beside the chosen ones, against the torch twin and the model's gathered path where
they fit, and against dense causal SDPA (64 heads x 192) at the same N for scale. `--sweep` first
times several tile configurations at the smallest N and uses the fastest of each kind for the rest
(the forward by its time with and without the key mass together).

    python benchmarks/bench_sparse_mla.py [--n 8192 32768 131072] [--sweep] [--no-baselines]
"""

from __future__ import annotations

import argparse
import math
from functools import partial

import torch
import torch.nn.functional as F
from triton.runtime.errors import OutOfResources
from triton.testing import do_bench

from glmlab.kernels.sparse_mla import (
    BACKWARD_TILES,
    FORWARD_TILES,
    Tiles,
    backward_flops,
    forward_flops,
    sparse_mla,
)
from glmlab.kernels.sparse_mla_ref import sparse_mla_ref
from glmlab.model.dsa import gathered_attention

H, R, r, K = 64, 576, 512, 2048
SCALE = 256**-0.5  # the order of GLM-5's softmax scale (a query head has 192 + 64 dimensions)
# Candidates that fit in shared memory (compiled for sm_90a on a CPU first; see
# experiments/results/h200-kernels-sparse-mla-2/README.md). Tiles(64, 32, 8, 1, column_split=2) is
# left out: Triton 3.6 compiles it to a kernel that reads shared memory out of range.
FORWARD_CANDIDATES = [Tiles(64, 64, 8, 2), Tiles(64, 32, 8, 3), Tiles(64, 32, 8, 2)]
PREVIOUS_BACKWARD = Tiles(32, 32, 8, 1)  # the default before the column split
BACKWARD_CANDIDATES = [PREVIOUS_BACKWARD, Tiles(64, 64, 8, 1, column_split=2)]


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


def fmt(seconds: float | str, flops: float) -> str:
    if isinstance(seconds, str):
        return seconds
    return f"{seconds * 1e3:9.2f} ms {flops / seconds / 1e12:6.1f} TF/s"


def train_step(attend, *args):
    """A forward and a backward of attend(*args)[0] (gradient all ones), leaves' gradients cleared."""
    leaves = [a for a in args if isinstance(a, torch.Tensor) and a.requires_grad]

    def step():
        out = attend(*args)[0]
        torch.autograd.backward(out, grad_tensors=torch.ones_like(out))
        for leaf in leaves:
            leaf.grad = None

    return step


def sweep(N: int) -> tuple[Tiles, Tiles]:
    q, kv, idx, valid = problem(N, grad=True)
    fwd = forward_flops(N, K, H, R, r)
    best_f, best_b = (math.inf, FORWARD_TILES), (math.inf, BACKWARD_TILES)
    print(f"sweep at N={N} (forward without / with key mass; backward = fwd+bwd minus forward with mass)")
    qd, kvd = q.detach(), kv.detach()
    for tiles in FORWARD_CANDIDATES:
        attend = partial(sparse_mla, qd, kvd, idx, valid, scale=SCALE, r=r, forward_tiles=tiles)
        t, t_mass = timed(partial(attend, mass=False)), timed(attend)
        print(f"  forward  {tiles}: {fmt(t, fwd)} / {fmt(t_mass, fwd)}", flush=True)
        if not isinstance(t, str) and not isinstance(t_mass, str) and t + t_mass < best_f[0]:
            best_f = (t + t_mass, tiles)
    with_mass = timed(partial(sparse_mla, qd, kvd, idx, valid, scale=SCALE, r=r, forward_tiles=best_f[1]))
    for tiles in BACKWARD_CANDIDATES:
        attend = lambda *a, tiles=tiles: sparse_mla(
            *a, scale=SCALE, r=r, forward_tiles=best_f[1], backward_tiles=tiles
        )
        t = timed(train_step(attend, q, kv, idx, valid))
        t = t if isinstance(t, str) else t - with_mass
        print(f"  backward {tiles}: {fmt(t, backward_flops(N, K, H, R, r))}", flush=True)
        if not isinstance(t, str) and t < best_b[0]:
            best_b = (t, tiles)
    print(f"  chosen: forward {best_f[1]}, backward {best_b[1]}")
    return best_f[1], best_b[1]


def row(name: str, fn, flops: float) -> None:
    print(f"  {name:26}{fmt(timed(fn), flops)}", flush=True)


def bench(N: int, fwd_tiles: Tiles, bwd_tiles: Tiles, *, baselines: bool) -> None:
    """One N: the Triton kernels, the torch paths where they fit, dense SDPA."""
    fwd, bwd = forward_flops(N, K, H, R, r), backward_flops(N, K, H, R, r)
    print(f"N={N} (useful GFLOP: forward {fwd / 1e9:.0f}, backward {bwd / 1e9:.0f})")
    q, kv, idx, valid = problem(N, grad=True)
    no_grad = (q.detach(), kv.detach(), idx, valid)
    tiles = dict(scale=SCALE, r=r, forward_tiles=fwd_tiles, backward_tiles=bwd_tiles)
    row("triton forward", partial(sparse_mla, *no_grad, **tiles), fwd)
    row("triton forward, no mass", partial(sparse_mla, *no_grad, mass=False, **tiles), fwd)
    row("triton forward+backward", train_step(partial(sparse_mla, **tiles), q, kv, idx, valid), fwd + bwd)
    if bwd_tiles != PREVIOUS_BACKWARD:
        previous = dict(tiles, backward_tiles=PREVIOUS_BACKWARD)
        step = train_step(partial(sparse_mla, **previous), q, kv, idx, valid)
        row("  ... previous bwd tiles", step, fwd + bwd)
    if not baselines:
        return
    if N <= 8192:
        row("twin forward", partial(sparse_mla_ref, *no_grad, scale=SCALE, r=r), fwd)
    if N <= 32768:
        row("gathered forward", partial(gathered_attention, *no_grad, SCALE, r), fwd)
        gathered = partial(gathered_attention, scale=SCALE, r=r)
        row("gathered forward+backward", train_step(gathered, q, kv, idx, valid), fwd + bwd)
    del q, kv, idx, valid, no_grad
    qkv = [torch.randn(1, H, N, 192, device="cuda", dtype=torch.bfloat16, requires_grad=True) for _ in "qkv"]
    dense = 2 * 2 * H * 192 * N * N / 2  # causal: half of the N x N pairs, QK and PV

    def sdpa(*args):
        return (F.scaled_dot_product_attention(*args, is_causal=True),)

    with torch.no_grad():
        row("dense SDPA forward", partial(sdpa, *qkv), dense)
    row("dense SDPA fwd+bwd", train_step(sdpa, *qkv), 3.5 * dense)  # backward: 2.5x forward


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, nargs="+", default=[8192, 32768, 131072])
    parser.add_argument("--sweep", action="store_true")
    parser.add_argument("--no-baselines", action="store_true", help="time only the Triton kernels")
    args = parser.parse_args()
    print(f"{torch.cuda.get_device_name()}, torch {torch.__version__}; H={H} R={R} r={r} K={K}, bf16")
    fwd_tiles, bwd_tiles = sweep(args.n[0]) if args.sweep else (FORWARD_TILES, BACKWARD_TILES)
    for N in args.n:
        bench(N, fwd_tiles, bwd_tiles, baselines=not args.no_baselines)
        torch.cuda.empty_cache()


if __name__ == "__main__":
    main()
