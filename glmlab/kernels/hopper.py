"""Compile a Triton kernel for an H200 (Hopper, sm_90a) on any machine, no GPU needed, and read what
it costs per thread: registers and spill stores (ptxas -v), shared memory, and the SASS (cuobjdump),
with the ptxas and cuobjdump that Triton's NVIDIA backend carries. The kernel engineers' compile
reports (experiments/results/h200-kernels-*/compile_report.py) and the sparse-MLA warpgroup test
read their kernels through it.
"""

from __future__ import annotations

import os
import re
import subprocess
import tempfile
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import triton
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource

BIN = os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin")


def compile_for_hopper(
    fn: Callable, signature: dict[str, str], constants: dict, *, num_warps: int,
    num_stages: int | None = None, divisible: Iterable[str] = (),
):  # fmt: skip
    """The compiled kernel (its `asm` holds ttgir, ptx and cubin). `signature`: each runtime
    argument's Triton type ("*bf16", "i32", "fp32"), in the kernel's order, before its constexprs;
    `constants`: the constexprs; `divisible`: the arguments its launches specialise as multiples of 16."""
    wanted = set(divisible)
    attrs = {(i,): [["tt.divisibility", 16]] for i, name in enumerate(signature) if name in wanted}
    source = ASTSource
    if getattr(fn, "is_gluon", lambda: False)():  # a Gluon kernel (Triton 3.4 and later)
        from triton.experimental.gluon._runtime import GluonASTSource as source
    src = source(fn=fn, signature={**signature, **dict.fromkeys(constants, "constexpr")},
                 constexprs=constants, attrs=attrs)  # fmt: skip
    options = {"num_warps": num_warps} | ({} if num_stages is None else {"num_stages": num_stages})
    return triton.compile(src, target=GPUTarget("cuda", 90, 32), options=options)


@dataclass(frozen=True)
class Resources:
    """What a compiled kernel costs: registers and spilled bytes per thread, shared memory per
    program, and its SASS listing."""

    registers: int
    spill_stores: int
    shared: int
    sass: str


def resources(kernel) -> Resources:
    """ptxas's register and spill counts and cuobjdump's SASS of a `compile_for_hopper` kernel."""
    with tempfile.TemporaryDirectory() as tmp:
        ptx, cubin = os.path.join(tmp, "k.ptx"), os.path.join(tmp, "k.cubin")
        with open(ptx, "w") as f:
            f.write(kernel.asm["ptx"])
        with open(cubin, "wb") as f:
            f.write(kernel.asm["cubin"])
        ptxas = [f"{BIN}/ptxas", "-v", "--gpu-name", "sm_90a", ptx, "-o", os.devnull]
        usage = subprocess.run(ptxas, capture_output=True, text=True).stderr
        sass = subprocess.run([f"{BIN}/cuobjdump", "-sass", cubin], capture_output=True, text=True).stdout
    registers, spills = (
        re.search(pattern, usage) for pattern in (r"Used (\d+) registers", r"(\d+) bytes spill stores")
    )
    if registers is None or spills is None:  # ptxas failed (twice on the H200 machine, 2026-12-01)
        raise RuntimeError(f"ptxas -v gave no register or spill count; it printed: {usage[-2000:]!r}")
    registers, spills = int(registers.group(1)), int(spills.group(1))
    return Resources(registers, spills, kernel.metadata.shared, sass)


def barrier_loops(sass: str) -> list[tuple[int, int]]:
    """(instructions, BAR.SYNCs) of each loop of a SASS listing that holds a barrier: from a
    backward branch's target to the branch."""
    code = [(int(a, 16), op) for a, op in re.findall(r"/\*([0-9a-f]{4,})\*/\s+([^;]*);", sass)]
    where = {a: i for i, (a, _) in enumerate(code)}
    found = []
    for i, (a, op) in enumerate(code):
        target = re.search(r"\bBRA\b.*?0x([0-9a-f]+)", op)
        if target and int(target.group(1), 16) < a and int(target.group(1), 16) in where:
            body = [o for _, o in code[where[int(target.group(1), 16)] : i + 1]]
            bars = sum("BAR.SYNC" in o for o in body)
            if bars:
                found.append((len(body), bars))
    return found
