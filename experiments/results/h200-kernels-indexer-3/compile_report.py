"""Compile glmlab's selection kernels and the picked-key backward for an H200 (sm_90a) on a machine
without a GPU and report what they cost per thread: registers and spills (ptxas), shared memory,
and the SASS instructions that decide their speed here (shared-memory atomics of the histograms,
16-byte loads, fenced ATOMG against plain REDG atomics, GPU-wide memory barriers). Uses the ptxas and
cuobjdump that Triton's wheel carries.

    python experiments/results/h200-kernels-indexer-3/compile_report.py [PATH/TO/indexer.py]

Without an argument, glmlab/kernels/indexer.py as installed; with one, that file (an older version,
from `git show COMMIT:glmlab/kernels/indexer.py > /tmp/old_indexer.py`). Shapes: K = 2048 picks,
1024-score blocks, GLM-5's indexer (32 heads of 128), 64 picks per tile of the backward.
"""

from __future__ import annotations

import importlib.util
import inspect
import re
import sys
from collections import Counter

from glmlab.kernels.hopper import compile_for_hopper, resources

OPS = r"\b(ATOMS\.ADD|ATOMG[.\w]*|REDG[.\w]*|MEMBAR\.ALL\.GPU|LDG\.E\.128|LDG\.E|HGMMA|HMMA)\b"
POINTERS = {
    "scores_ptr": "*fp32", "cut_ptr": "*i32", "count_ptr": "*i32", "pos_ptr": "*i32", "idx_ptr": "*i64",
    "valid_ptr": "*i8", "q_ptr": "*bf16", "w_ptr": "*fp32", "k_ptr": "*bf16", "g_ptr": "*fp32",
    "dq_ptr": "*fp32", "dw_ptr": "*fp32", "dk_ptr": "*fp32",
}  # fmt: skip
# what each launch specialises as divisible by 16: every pointer and the chunk strides (rows are padded)
DIVISIBLE = {"stride_sb", "stride_ss"}


def compile_one(fn, constants: dict, cand_dtype: str, num_warps: int) -> str:
    names = [p for p in inspect.signature(fn.fn).parameters if p not in constants]
    sig = {n: POINTERS.get(n, cand_dtype if n == "cand_ptr" else "i32") for n in names}
    divisible = [n for n in names if n.endswith("_ptr") or n in DIVISIBLE]
    res = resources(compile_for_hopper(fn, sig, constants, num_warps=num_warps, divisible=divisible))
    ops = dict(sorted(Counter(re.findall(OPS, res.sass)).items()))
    return (f"{num_warps} warps, {res.registers} registers, {res.spill_stores} B spills, "
            f"shared {res.shared} B, SASS {ops}")  # fmt: skip


def main() -> None:
    if len(sys.argv) > 1:
        spec = importlib.util.spec_from_file_location("indexer_version", sys.argv[1])
        m = sys.modules[spec.name] = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(m)
    else:
        from glmlab.kernels import indexer as m
    K = 2048
    new = hasattr(m, "select_cap")  # this session's select (candidate keys int32, CAP = 4K in registers)
    cap = m.select_cap(K) if new else 2 * K
    warps = max(4, min(16, cap // 512)) if new else 4
    cand = "*i32" if new else "*fp32"
    cut = dict(CAP=cap, STRIDE=32) if new else dict(BLOCK=1024, CAP=cap, STRIDE=32)
    kernels = [
        ("_cut_kernel", m._cut_kernel, cut, warps),
        ("_count_kernel", m._count_kernel, dict(BLOCK=1024, CAP=cap), 4),
        ("_gather_kernel", m._gather_kernel, dict(BLOCK=1024, CAP=cap, SEG_P2=32), 4),
        ("_select_kernel", m._select_kernel, dict(BLOCK=1024, CAP=cap, SEG_P2=32), warps),
    ]
    at = dict(H=32, D=128, HP=32, BLOCK_D=128, BLOCK_K=64, PRECISION="tf32")
    kernels.append(("_at_bwd_kernel", m._at_bwd_kernel, at, 4))
    for name, fn, constants, num_warps in kernels:
        print(f"{name}: {compile_one(fn, constants, cand, num_warps)}", flush=True)


if __name__ == "__main__":
    main()
