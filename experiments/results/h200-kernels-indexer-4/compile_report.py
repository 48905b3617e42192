"""Compile glmlab's selection kernels and the fp8 quantisation for an H200 (sm_90a) on a machine
without a GPU and report what they cost per thread: registers and spills (ptxas), shared memory, the
SASS instructions that decide their speed here (shared-memory atomics of the histograms, 16-byte
loads, global atomics), and the size of each loop that holds a barrier (in the select, one step of
the K-th-key search is such a loop; the longest lists the fallback's passes). Uses the ptxas and
cuobjdump that Triton's wheel carries.

    python experiments/results/h200-kernels-indexer-4/compile_report.py [PATH/TO/indexer.py]

Without an argument, glmlab/kernels/indexer.py as installed; with one, that file (an older version,
from `git show COMMIT:glmlab/kernels/indexer.py > /tmp/old_indexer.py`). Shapes: K = 2048 picks,
1024-score blocks and segments, 128 segments a row (128K keys). Session 3's first version
(count and copy kernels) and this one (one collect kernel) are both understood.
"""

from __future__ import annotations

import importlib.util
import inspect
import re
import sys
from collections import Counter

from glmlab.kernels.hopper import barrier_loops, compile_for_hopper, resources

OPS = r"\b(ATOMS\.ADD|ATOMG[.\w]*|REDG[.\w]*|MEMBAR\.ALL\.GPU|LDG\.E\.128|LDG\.E|HGMMA|HMMA)\b"
POINTERS = {
    "scores_ptr": "*fp32", "cut_ptr": "*i32", "count_ptr": "*i32", "pos_ptr": "*i32", "total_ptr": "*i32",
    "base_ptr": "*i32", "cand_ptr": "*i32", "x_ptr": "*bf16", "out_ptr": "*fp8e4nv", "scale_ptr": "*fp32",
    "idx_ptr": "*i64",
    "valid_ptr": "*i8", "q_ptr": "*bf16", "w_ptr": "*fp32", "k_ptr": "*bf16", "g_ptr": "*fp32",
    "dq_ptr": "*fp32", "dw_ptr": "*fp32", "dk_ptr": "*fp32",
}  # fmt: skip
# what each launch specialises as divisible by 16: every pointer and the chunk strides (rows are padded)
DIVISIBLE = {"stride_sb", "stride_ss"}


def compile_one(fn, constants: dict, num_warps: int) -> str:
    names = [p for p in inspect.signature(fn.fn).parameters if p not in constants]
    sig = {n: POINTERS.get(n, "i32") for n in names}
    divisible = [n for n in names if n.endswith("_ptr") or n in DIVISIBLE]
    res = resources(compile_for_hopper(fn, sig, constants, num_warps=num_warps, divisible=divisible))
    sass = res.sass
    ops = dict(sorted(Counter(re.findall(OPS, sass)).items()))
    size = len(re.findall(r"/\*[0-9a-f]{4,}\*/", sass))
    report = (f"{num_warps} warps, {res.registers} registers, {res.spill_stores} B spills, "
              f"shared {res.shared} B, SASS {ops}, {size} instructions ({sass.count('BAR.SYNC')} barriers) "
              "in all")  # fmt: skip
    return report + "".join(f"\n  loop: {n} instructions, {bars} barriers" for n, bars in barrier_loops(sass))


def main() -> None:
    if len(sys.argv) > 1:
        spec = importlib.util.spec_from_file_location("indexer_version", sys.argv[1])
        m = sys.modules[spec.name] = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(m)
    else:
        from glmlab.kernels import indexer as m
    K = 2048
    cap = m.select_cap(K)
    warps = max(4, min(16, cap // 512))
    kernels = [("_cut_kernel", m._cut_kernel, dict(CAP=cap, STRIDE=32), warps)]
    if hasattr(m, "_collect_kernel"):
        kernels.append(("_collect_kernel", m._collect_kernel, dict(SEG=1024, CAP=cap), 4))
    else:
        kernels.append(("_count_kernel", m._count_kernel, dict(BLOCK=1024, CAP=cap), 4))
        kernels.append(("_gather_kernel", m._gather_kernel, dict(BLOCK=1024, CAP=cap, SEG_P2=32), 4))
    if hasattr(m, "_quantize_kernel"):  # q's rows: 32 rows of 128 per program
        quantize = dict(D=128, BLOCK_R=32, BLOCK_D=128, FMAX=448.0)
        kernels.append(("_quantize_kernel", m._quantize_kernel, quantize, 4))
    segments = 32 if hasattr(m, "_gather_kernel") else 128
    kernels.append(("_select_kernel", m._select_kernel, dict(BLOCK=1024, CAP=cap, SEG_P2=segments), warps))
    for name, fn, constants, num_warps in kernels:
        print(f"{name}: {compile_one(fn, constants, num_warps)}", flush=True)


if __name__ == "__main__":
    main()
