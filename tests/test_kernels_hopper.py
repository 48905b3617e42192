"""glmlab/kernels/hopper.py: compiling a kernel for an H200 on a machine without one, and reading
its costs."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

pytest.importorskip("triton.backends.nvidia")

from glmlab.kernels.hopper import barrier_loops  # noqa: E402

COMPILE_QUANTIZE = """
from glmlab.kernels import indexer
from glmlab.kernels.hopper import compile_for_hopper, resources

signature = {"x_ptr": "*bf16", "out_ptr": "*fp8e4nv", "scale_ptr": "*fp32", "n_rows": "i32"}
constants = dict(D=128, BLOCK_R=32, BLOCK_D=128, FMAX=448.0)
kernel = compile_for_hopper(indexer._quantize_kernel, signature, constants, num_warps=4,
                            divisible=["x_ptr", "out_ptr", "scale_ptr"])
res = resources(kernel)
print(res.registers, res.spill_stores, res.shared, "STG" in res.sass, "HGMMA" in res.sass)
"""


def test_a_kernel_compiled_for_hopper_reports_its_resources():
    """fp8 quantisation compiled for sm_90a (in a process without Triton's interpreter): ptxas
    reports its registers and no spills, and cuobjdump's SASS stores its output (no matrix units)."""
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    done = subprocess.run([sys.executable, "-c", COMPILE_QUANTIZE], env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    out = done.stdout.split()
    registers, spills, shared = map(int, out[:3])
    assert 0 < registers <= 255 and spills == 0 and shared >= 0
    assert out[3:] == ["True", "False"]


def test_barrier_loops_are_the_backward_branches_around_a_barrier():
    sass = """
        /*0000*/                   MOV R1, c[0x0][0x28] ;
        /*0010*/                   BAR.SYNC.DEFER_BLOCKING 0x0 ;
        /*0020*/                   IADD3 R2, R2, 0x1, RZ ;
        /*0030*/                   BAR.SYNC.DEFER_BLOCKING 0x0 ;
        /*0040*/               @P0 BRA 0x10 ;
        /*0050*/                   IADD3 R3, R3, 0x1, RZ ;
        /*0060*/               @P1 BRA 0x50 ;
        /*0070*/                   EXIT ;
    """
    # the first loop (0x10-0x40) holds two barriers; the second (0x50-0x60) none, so it is left out
    assert barrier_loops(sass) == [(4, 2)]
