"""Compile glmlab's sparse MLA kernels for an H200 (sm_90a) on a machine without a GPU and report what
decides whether a tile shape can run and how well: shared memory (an H200 block gets at most
232448 bytes), registers and spills (ptxas), and the matrix instructions in the SASS (HGMMA is
Hopper's warpgroup product, HMMA the older per-warp one). Uses the ptxas and cuobjdump that
Triton's wheel carries.

    python experiments/results/h200-kernels-sparse-mla-2/compile_report.py [KIND,BH,BK,WARPS,STAGES,X ...]

KIND is f (forward) or b (backward); X the key mass (0/1) or the column split (1/2); without
arguments, the default tiles and the benchmark's candidates.
"""

from __future__ import annotations

import re
import sys
from collections import Counter

from glmlab.kernels import sparse_mla as m
from glmlab.kernels.hopper import compile_for_hopper, resources

COMMON = {"q_ptr": "*bf16", "kv_ptr": "*bf16", "idx_ptr": "*i64", "valid_ptr": "*i1", "out_ptr": "*bf16"}
FORWARD = {**COMMON, "lse_ptr": "*fp32", "mass_ptr": "*fp32", "probs_ptr": "*fp16", "maxes_ptr": "*fp32"}
FORWARD |= {"N": "i32", "H": "i32", "K": "i32", "R": "i32", "r": "i32", "scale_log2": "fp32"}
BACKWARD = {**COMMON, "lse_ptr": "*fp32", "dout_ptr": "*bf16", "dq_ptr": "*bf16", "dkv_ptr": "*fp32"}
BACKWARD |= {"H": "i32", "K": "i32", "R": "i32", "r": "i32", "scale": "fp32", "scale_log2": "fp32"}
DEFAULTS = ["f,64,64,8,2,0", "f,64,64,8,2,1", "b,32,32,8,1,1", "b,64,32,8,1,2", "b,64,64,8,1,2"]


def compile_one(fn, signature: dict, constants: dict, num_warps: int, num_stages: int, part: str) -> str:
    """One kernel at GLM-5's shape (R=576, r=512, H=64, K=2048: integers divisible by 16, as the
    launcher specialises them) -> a line of its resources."""
    divisible = [name for name, kind in signature.items() if kind != "fp32" and name != "N"]
    kernel = compile_for_hopper(fn, signature, constants, num_warps=num_warps, num_stages=num_stages,
                                divisible=divisible)  # fmt: skip
    res = resources(kernel)
    ops = Counter(re.findall(r"\b(HGMMA|HMMA|REDG|LDGSTS)\b", res.sass))
    return (
        f"{part}: shared {res.shared} B, {res.registers} registers, {res.spill_stores} B spill stores, "
        f"SASS {dict(sorted(ops.items()))}"
    )


def report(spec: str) -> list[str]:
    kind, bh, bk, warps, stages, x = spec.split(",")
    bh, bk, warps, stages, x = int(bh), int(bk), int(warps), int(stages), int(x)
    if kind == "f":
        constants = dict(BLOCK_H=bh, BLOCK_K=bk, BLOCK_V=512, BLOCK_P=64, MASS=bool(x))
        constants |= dict(MASS_TILES=max(1, m.MASS_KEYS // bk), ONE_HEAD_BLOCK=True, PRECISION="tf32")
        return [compile_one(m._forward_kernel, FORWARD, constants, warps, stages, f"forward {spec}")]
    lines = []
    for part in range(x):
        constants = dict(BLOCK_H=bh, BLOCK_K=bk, BLOCK_C=512 // x, BLOCK_P=64, SPLIT=x, PART=part)
        constants["PRECISION"] = "tf32"
        lines.append(
            compile_one(
                m._backward_kernel, BACKWARD, constants, warps, stages, f"backward {spec} part {part}"
            )
        )
    return lines


if __name__ == "__main__":
    for spec in sys.argv[1:] or DEFAULTS:
        for line in report(spec):
            print(line, flush=True)
