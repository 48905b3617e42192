"""Compile glmlab's sparse MLA kernels for an H200 (sm_90a) on a machine without a GPU and report what
decides whether a tile shape can run and how well: shared memory (an H200 block gets at most
232448 bytes), registers and spills (ptxas), the warp layout of each product (Triton's TTGIR:
warpsPerCTA [8, 1] on a 64-row product means both warpgroups compute all of it) and the matrix
instructions in the SASS (HGMMA shapes), and how many gathers are in flight (the buffers of the
gathered tile). Uses the ptxas and cuobjdump that Triton's wheel carries.

    python experiments/results/h200-kernels-sparse-mla-3/compile_report.py [KERNEL,BH,BK,WARPS,STAGES ...]

KERNEL is forward, forward_mass, probs, dq or dkv; without arguments, every candidate of
glmlab/kernels/sparse_mla.py.
"""

from __future__ import annotations

import re
import sys
from collections import Counter

from glmlab.kernels import sparse_mla as m
from glmlab.kernels.hopper import compile_for_hopper, resources

INPUTS = {"idx_ptr": "*i64", "valid_ptr": "*i1"}
SIZES = {"H": "i32", "K": "i32", "R": "i32", "r": "i32"}
SIGNATURES = {
    "forward": {"q_ptr": "*bf16", "kv_ptr": "*bf16", **INPUTS, "out_ptr": "*bf16", "lse_ptr": "*fp32",
                "mass_ptr": "*fp32", "probs_ptr": "*fp16", "maxes_ptr": "*fp32", "N": "i32", **SIZES,
                "scale_log2": "fp32"},
    "probs": {"q_ptr": "*bf16", "kv_ptr": "*bf16", **INPUTS, "lse_ptr": "*fp32", "p_ptr": "*bf16",
              "n0": "i32", **SIZES, "scale_log2": "fp32"},
    "dq": {"kv_ptr": "*bf16", **INPUTS, "out_ptr": "*bf16", "dout_ptr": "*bf16", "p_ptr": "*bf16",
           "ds_ptr": "*bf16", "dq_ptr": "*bf16", "n0": "i32", **SIZES, "scale": "fp32"},
    "dkv": {"q_ptr": "*bf16", "dout_ptr": "*bf16", **INPUTS, "p_ptr": "*bf16", "ds_ptr": "*bf16",
            "dkv_ptr": "*fp32", "n0": "i32", **SIZES},
}  # fmt: skip
KERNELS = {"forward": m._forward_kernel, "probs": m._probs_kernel, "dq": m._dq_kernel, "dkv": m._dkv_kernel}


def compile_one(kernel: str, tiles: m.Tiles, *, mass: bool = False) -> str:
    """One kernel at GLM-5's shape (R=576, r=512, H=64, K=2048: integers divisible by 16, as the
    launcher specialises them; N and n0 not) -> a line of its resources."""
    signature = SIGNATURES[kernel]
    constants = dict(BLOCK_H=tiles.block_h, BLOCK_K=tiles.block_k, BLOCK_V=512, BLOCK_P=64, PRECISION="tf32")
    if kernel == "forward":
        constants |= dict(MASS=mass, MASS_TILES=max(1, m.MASS_KEYS // tiles.block_k), ONE_HEAD_BLOCK=True)
    divisible = [name for name, kind in signature.items() if kind != "fp32" and name not in ("N", "n0")]
    compiled = compile_for_hopper(KERNELS[kernel], signature, constants, num_warps=tiles.num_warps,
                                  num_stages=tiles.num_stages, divisible=divisible)  # fmt: skip
    res = resources(compiled)
    ops = Counter(re.findall(r"\b(HGMMA\.\w+|HMMA\.\w+|REDG\.E\.ADD\.F32x4)", res.sass))
    warps = sorted(
        set(re.findall(r"warpsPerCTA = \[(\d+, \d+)\], instrShape = \[16, (\d+)", compiled.asm["ttgir"]))
    )
    gathers = re.findall(r"memdesc<(\d+)x\d+x512xbf16", compiled.asm["ttgir"])
    name = kernel + ("_mass" if mass else "")
    return (
        f"{name} {tuple(tiles)}: shared {res.shared} B, {res.registers} registers, "
        f"{res.spill_stores} B spill stores; gather buffers {max(map(int, gathers), default=1)}; "
        f"products (warps, N) {warps}; "
        f"SASS {dict(sorted(ops.items()))}"
    )


def candidates() -> list[tuple[str, m.Tiles, bool]]:
    specs = [
        (k, t, mass) for t in m.FORWARD_CANDIDATES for k, mass in (("forward", False), ("forward", True))
    ]
    for bwd in m.BACKWARD_CANDIDATES:
        specs += [(k, t, False) for k, t in zip(("probs", "dq", "dkv"), bwd, strict=True)]
    return list(dict.fromkeys(specs))


if __name__ == "__main__":
    specs = candidates()
    if len(sys.argv) > 1:
        specs = []
        for arg in sys.argv[1:]:
            kernel, *numbers = arg.split(",")
            specs.append(
                (kernel.removesuffix("_mass"), m.Tiles(*map(int, numbers)), kernel.endswith("_mass"))
            )
    for kernel, tiles, mass in specs:
        try:
            print(compile_one(kernel, tiles, mass=mass), flush=True)
        except Exception as error:  # a shape Triton cannot compile is a result here, not a crash
            print(
                f"{kernel} {tuple(tiles)} mass={mass}: {type(error).__name__}: {str(error)[:200]}", flush=True
            )
