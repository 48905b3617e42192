"""The sparse MLA kernels before this session timed as benchmarks/bench_sparse_mla.py times the new
ones, in the same call, so that before and after come from one machine. v_before.py, beside this
file on the GPU machine only, is glmlab/kernels/sparse_mla.py at b7336c3 with its custom ops renamed:
  git show b7336c3:glmlab/kernels/sparse_mla.py | sed 's/glmlab::sparse_mla/before::sparse_mla/g;
    s/torch.ops.glmlab.sparse_mla/torch.ops.before.sparse_mla/g' > .../probe/v_before.py

    python experiments/results/h200-kernels-sparse-mla-3/probe/before.py [--n 8192 32768]
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import sys
from functools import partial

import torch
from triton.testing import do_bench

H, R, r, K, SCALE = 64, 576, 512, 2048, 256**-0.5


def load():
    path = os.path.join(os.path.dirname(__file__), "v_before.py")
    spec = importlib.util.spec_from_file_location("v_before", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules["v_before"] = module
    spec.loader.exec_module(module)
    return module


def ms(fn) -> float:
    return do_bench(fn, warmup=25, rep=100, return_mode="median")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, nargs="+", default=[8192, 32768])
    args = parser.parse_args()
    m = load()
    for N in args.n:
        g = torch.Generator(device="cuda").manual_seed(0)
        q = torch.randn(N, H, R, device="cuda", dtype=torch.bfloat16, generator=g)
        kv = torch.randn(N, R, device="cuda", dtype=torch.bfloat16, generator=g)
        idx = torch.randint(0, N, (N, K), device="cuda", generator=g)
        valid = torch.ones(N, K, dtype=torch.bool, device="cuda")
        fwd, bwd = m.forward_flops(N, K, H, R, r), m.backward_flops(N, K, H, R, r)
        attend = partial(m.sparse_mla, q, kv, idx, valid, scale=SCALE, r=r)
        t_plain, t_mass = ms(partial(attend, mass=False)), ms(attend)
        tiles = [*m.FORWARD_TILES, *m.BACKWARD_TILES]
        out, lse, _ = m._forward(q, kv, idx, valid, SCALE, r, False, tiles)
        d_out = torch.ones_like(out)
        t_bwd = ms(partial(m._backward, q, kv, idx, valid, out, lse, d_out, SCALE, r, tiles[5:]))
        print(
            f"before N={N}: forward no mass {t_plain:.2f} ms ({fwd / t_plain / 1e9:.0f} TF/s), with mass "
            f"{t_mass:.2f} ms, backward alone {t_bwd:.2f} ms ({bwd / t_bwd / 1e9:.0f} TF/s)",
            flush=True,
        )
        del q, kv, idx, valid, out, lse, d_out
        torch.cuda.empty_cache()


if __name__ == "__main__":
    main()
