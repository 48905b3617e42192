"""index_topk's select kernels before and after session 13's changes (call 3: the radix `_kth`; call
5: a persistent candidate pass; call 6: its warps), at the candidate pass's segment lengths
(`Tiles.select`) and warps (`Tiles.collect_warps`, where the module has them), on one GPU: device
time per kernel (one profiled call after a warm-up) and whether the picks are the same.
`indexer_before.py` beside this file is glmlab/kernels/indexer.py at the session's start with its ops
renamed (see ../README.md).

    python experiments/results/h200-session13/probe/topk_before_after.py [--lengths 32768 131072]
        [--selects 1024 2048 4096] [--collect-warps 1 2 4]
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys

import torch

sys.path[:0] = [os.path.dirname(__file__), os.path.join(os.getcwd(), "benchmarks")]
import indexer_before  # noqa: E402
from bench_indexer_kernels import K, gaussian, kernel_ms, projected  # noqa: E402

from glmlab.kernels import indexer  # noqa: E402


def run(module, q, w, k, tiles) -> tuple[dict[str, float], tuple[torch.Tensor, torch.Tensor]]:
    call = lambda: module.index_topk(q, w, k, topk=K, tiles=tiles)  # noqa: E731
    picks = call()
    return kernel_ms(call), picks


def same(a: tuple[torch.Tensor, torch.Tensor], b: tuple[torch.Tensor, torch.Tensor]) -> bool:
    """The same picks in the same slots, and the same validity."""
    return torch.equal(a[1], b[1]) and torch.equal(a[0][a[1]], b[0][b[1]])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lengths", type=int, nargs="+", default=[32768, 131072])
    parser.add_argument("--selects", type=int, nargs="*", default=[1024, 2048, 4096])
    parser.add_argument("--collect-warps", type=int, nargs="*", default=[])
    args = parser.parse_args()
    for T in args.lengths:
        for kind, make in (("gaussian", gaussian), ("projected", projected)):
            q, w, k = make(T, torch.Generator(device="cuda").manual_seed(0))
            before_ms, before = run(indexer_before, q, w, k, indexer_before.Tiles())
            print(
                f"T={T} {kind} before: " + ", ".join(f"{n} {ms:.2f}" for n, ms in before_ms.items()),
                flush=True,
            )
            variants = [{"select": select} for select in args.selects]
            variants += [{"collect_warps": warps} for warps in args.collect_warps]
            for change in variants:
                ms, picks = run(indexer, q, w, k, dataclasses.replace(indexer.Tiles(), **change))
                line = ", ".join(f"{n} {t:.2f}" for n, t in ms.items())
                print(f"T={T} {kind} after, {change}: {line}; same picks: {same(before, picks)}", flush=True)
            del q, w, k, before
            torch.cuda.empty_cache()


if __name__ == "__main__":
    main()
