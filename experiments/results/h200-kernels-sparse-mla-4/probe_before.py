"""The sparse MLA forward before this session (glmlab/kernels/sparse_mla.py at 6718faf), timed as
benchmarks/bench_sparse_mla.py times the current one, in the same call. v_before.py, written beside
this file into the snapshot that goes to the GPU machine (never committed), is that file with its
custom ops renamed:
  git show 6718faf:glmlab/kernels/sparse_mla.py | sed 's/glmlab::sparse_mla/before::sparse_mla/g;
    s/torch.ops.glmlab.sparse_mla/torch.ops.before.sparse_mla/g' > .../v_before.py

    python experiments/results/h200-kernels-sparse-mla-4/probe_before.py [--n 8192 32768]
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
        flops = m.forward_flops(N, K, H, R, r)
        for tiles in (m.FORWARD_TILES, m.Tiles(64, 32, 8, 3)):
            attend = partial(m.sparse_mla, q, kv, idx, valid, scale=SCALE, r=r, forward_tiles=tiles)
            plain, mass = (ms(f) for f in (partial(attend, mass=False), attend))
            print(
                f"before N={N} forward {tuple(tiles)}: no mass {plain:.2f} ms "
                f"({flops / plain / 1e9:.0f} TF/s), with mass {mass:.2f} ms ({flops / mass / 1e9:.0f} TF/s)",
                flush=True,
            )
        del q, kv, idx, valid
        torch.cuda.empty_cache()


if __name__ == "__main__":
    main()
