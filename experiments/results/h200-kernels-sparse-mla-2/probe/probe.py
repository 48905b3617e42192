"""Probe one variant of the sparse MLA kernels on a GPU: output, key mass and gradients against the
torch twin at GLM-5's shape (relative norm of the difference), then times at the given N.

    probe.py VARIANT_FILE BLOCK_H BLOCK_K WARPS STAGES SPLIT [--n N ...] [--check-n N] [--forward-only]
"""

from __future__ import annotations

import argparse
import importlib.util
import sys

import torch
from triton.testing import do_bench

from glmlab.kernels.sparse_mla_ref import sparse_mla_ref

H, R, r, K = 64, 576, 512, 2048


def load(path: str):
    spec = importlib.util.spec_from_file_location("variant", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules["variant"] = module
    spec.loader.exec_module(module)
    return module


def make(N: int, M: int, seed: int):
    g = torch.Generator(device="cuda").manual_seed(seed)
    q = torch.randn(N, H, R, device="cuda", generator=g).to(torch.bfloat16).requires_grad_()
    kv = torch.randn(M, R, device="cuda", generator=g).to(torch.bfloat16).requires_grad_()
    idx = torch.randint(0, M, (N, K), device="cuda", generator=g)
    valid = torch.rand(N, K, device="cuda", generator=g) < 0.9
    return q, kv, idx, valid


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a.float() - b.float()).norm() / b.float().norm()).item()


def check(m, tiles, N: int, *, backward: bool) -> str:
    q, kv, idx, valid = make(N, 4096, seed=4)
    out, mass = m.sparse_mla(q, kv, idx, valid, scale=576**-0.5, r=r, backward_tiles=tiles)
    ref_out, ref_mass = sparse_mla_ref(q, kv, idx, valid, scale=576**-0.5, r=r)
    msg = f"out {rel(out, ref_out):.2e} mass {rel(mass, ref_mass):.2e}"
    if backward:
        g = torch.randn_like(out)
        got = torch.autograd.grad(out, (q, kv), g)
        want = torch.autograd.grad(ref_out, (q, kv), g)
        msg += f" dq {rel(got[0], want[0]):.2e} dkv {rel(got[1], want[1]):.2e}"
    torch.cuda.synchronize()
    return msg


def ms(fn) -> float:
    return do_bench(fn, warmup=25, rep=100, return_mode="median")


def timing(m, tiles, N: int, *, backward: bool) -> str:
    q, kv, idx, valid = make(N, N, seed=0)
    qd, kvd = q.detach(), kv.detach()
    t_plain = ms(lambda: m.sparse_mla(qd, kvd, idx, valid, scale=0.0625, r=r, mass=False))
    t_mass = ms(lambda: m.sparse_mla(qd, kvd, idx, valid, scale=0.0625, r=r))
    line = f"  N={N}: forward no mass {t_plain:.2f} ms, with mass {t_mass:.2f} ms"
    if backward:

        def step():
            o = m.sparse_mla(q, kv, idx, valid, scale=0.0625, r=r, backward_tiles=tiles)[0]
            torch.autograd.backward(o, torch.ones_like(o))
            q.grad = kv.grad = None

        t = ms(step)
        bwd = m.backward_flops(N, K, H, R, r)
        line += f", fwd+bwd {t:.2f} ms, backward {t - t_mass:.2f} ms ({bwd / (t - t_mass) / 1e9:.0f} TF/s)"
    return line


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("file")
    parser.add_argument("tiles", type=int, nargs=5)
    parser.add_argument("--n", type=int, nargs="*", default=[])
    parser.add_argument("--check-n", type=int, default=64)
    parser.add_argument("--forward-only", action="store_true")
    args = parser.parse_args()
    m = load(args.file)
    tiles = m.Tiles(*args.tiles)
    backward = not args.forward_only
    name = f"{args.file.split('/')[-1]} {tuple(args.tiles)}"
    print(f"{name}: {check(m, tiles, args.check_n, backward=backward)}", flush=True)
    for N in args.n:
        print(timing(m, tiles, N, backward=backward), flush=True)
        torch.cuda.empty_cache()


if __name__ == "__main__":
    main()
