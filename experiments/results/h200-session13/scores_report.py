"""Compile the indexer's scoring kernel (fp8, the default tiles, GLM-5's 32 heads x 128) for an H200
(sm_90a) on a machine without a GPU and count what its SASS spends per key tile: the fp8 products
(QGMMA), the head-sum products (HGMMA), and the CUDA-core work between them (the ReLU as FMNMX, the
bf16 packing as F2FP), with registers, spills and the loop's barriers.

    python experiments/results/h200-session13/scores_report.py
"""

from __future__ import annotations

import re
from collections import Counter

from glmlab.kernels import indexer as m
from glmlab.kernels.hopper import barrier_loops, compile_for_hopper, resources

POINTERS = dict(q="fp8e4nv", w="fp32", k="fp8e4nv", ks="fp32", out="fp32")
SIGNATURE = {f"{name}_ptr": f"*{kind}" for name, kind in POINTERS.items()}
SIGNATURE |= dict.fromkeys(["stride_qb", "stride_wb", "stride_kb", "stride_ksb", "S", "T", "n_cols"], "i32")
SIGNATURE |= dict.fromkeys(["stride_ob", "stride_os"], "i32")


def main() -> None:
    t = m.Tiles()
    rows = m._rows(t, 32)
    constants = dict(H=32, D=128, HP=32, BLOCK_D=128, BLOCK_S=rows, BLOCK_T=t.keys, TILES=t.tiles,
                     FILL_MASKED=False, PRECISION="tf32", BLOCK_SP=m._pow2(rows), FP8=True,
                     PACKED_RELU=True)  # fmt: skip
    divisible = [name for name in SIGNATURE if name.endswith("_ptr") or name.startswith("stride")]
    kernel = compile_for_hopper(m._scores_fwd_kernel, SIGNATURE, constants, num_warps=t.warps,
                                num_stages=t.stages, divisible=divisible)  # fmt: skip
    res = resources(kernel)
    found = r"\b(QGMMA\.[\w.]+|HGMMA\.[\w.]+|FMNMX|F2FP\.[\w.]+|BAR\.SYNC\S*|STG\.\S+)"
    ops = Counter(re.findall(found, res.sass))
    print(f"registers {res.registers}, spill stores {res.spill_stores} B, shared {res.shared} B")
    print("whole kernel:", dict(ops.most_common()))
    print("loops with barriers (instructions, barriers):", barrier_loops(res.sass))


if __name__ == "__main__":
    main()
