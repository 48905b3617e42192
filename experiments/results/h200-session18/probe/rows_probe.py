"""Session 18 probe: the row-move kernels' tiles (BLOCK_D, rows a spread program writes, warps) at
glm5-1b's shapes on one H200, in GB/s of the bytes each must move."""

import itertools

import torch
from triton.testing import do_bench

from glmlab.kernels import rows
from glmlab.model.row_map import RowMap

N, k, d = 16384, 8, 1536


def sweep(name: str, tokens: int, empty: float) -> None:
    M = int(tokens * k * (1 - empty)) + 64 * 7
    slots = torch.randperm(M, device="cuda")[: tokens * k]
    drop = torch.rand(tokens * k, device="cuda") < empty
    where = RowMap.of_slots(torch.where(drop, M, slots).view(tokens, k), M)
    held = int((~drop).sum())
    src = torch.randn(M, d, device="cuda", dtype=torch.bfloat16)
    x = torch.randn(tokens, d, device="cuda", dtype=torch.bfloat16)
    w = torch.rand(tokens, k, device="cuda")
    moved = {"gather_sum": held * d * 2 + tokens * d * 2, "spread": M * d * 2 + tokens * d * 2}
    moved["spread+dot"] = moved["spread"] + M * d * 2
    calls = {
        "gather_sum": lambda: rows.launch_gather_sum(src, where.slots, w, torch.bfloat16),
        "spread": lambda: rows.launch_spread(x, where.owner, k, None, None, torch.bfloat16),
        "spread+dot": lambda: rows.launch_spread(x, where.owner, k, w.view(-1), src, torch.bfloat16),
    }
    for block, spread_rows, warps in itertools.product((256, 512, 1024, 2048), (1, 2, 4, 8), (4, 8)):
        rows.BLOCK_D, rows.SPREAD_ROWS, rows.WARPS = block, spread_rows, warps
        line = f"{name:10s} BLOCK_D {block:5d} rows {spread_rows} warps {warps}:"
        for kind, call in calls.items():
            ms = do_bench(call)
            line += f"  {kind} {ms * 1e3:7.1f} us ({moved[kind] / ms / 1e6:5.0f} GB/s)"
        print(line, flush=True)


torch.manual_seed(0)
sweep("one GPU", N, 0.0)
sweep("EP=2 rank", 2 * N, 0.5)
