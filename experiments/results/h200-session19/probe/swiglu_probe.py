"""Session 19 probe: what the grouped experts' SwiGLU (silu(gate) * up over the chunked [rows, 2I]
product) costs forward and backward at glm5-1b's shapes: eager torch, one fused pass (torch.compile),
and glmlab's kernels (glmlab/kernels/swiglu.py), over every row and, for the padded dispatch's
buffers at EP=2 (about half of them empty), bounded to the rows that hold a pair.

    python probe/swiglu_probe.py
"""

import torch
import torch.nn.functional as F

from glmlab.kernels.swiglu import swiglu as kernel


def swiglu(gate_up: torch.Tensor) -> torch.Tensor:
    gate, up = gate_up.chunk(2, dim=-1)
    return F.silu(gate) * up


fused = torch.compile(swiglu)


def timed(fn, rows: int, inter: int = 512, repeats: int = 30) -> float:
    """Median ms of forward and backward over `rows` rows."""
    x = torch.randn(rows, 2 * inter, device="cuda", dtype=torch.bfloat16, requires_grad=True)
    g = torch.randn(rows, inter, device="cuda", dtype=torch.bfloat16)
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    times = []
    for _ in range(repeats + 3):
        x.grad = None
        start.record()
        fn(x).backward(g)
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end))
    return sorted(times[3:])[repeats // 2]


def bounded(rows: int):
    """The kernels, computing the first `rows` rows."""
    bound = torch.tensor([rows], device="cuda")
    return lambda x: kernel(x, bound)


SHAPES = [(131072 + 64 * 7, "one GPU (N*k pairs + alignment)"), (262144 + 32 * 7, "padded EP=2 rank")]
for rows, label in SHAPES:
    print(f"{label}: {rows} rows")
    print(f"  eager, all rows      {timed(swiglu, rows):.3f} ms")
    print(f"  fused, all rows      {timed(fused, rows):.3f} ms")
    print(f"  kernels, all rows    {timed(bounded(rows), rows):.3f} ms")
half = SHAPES[1][0] // 2
print(f"  fused, the padded rank's pairs only ({half} rows) {timed(fused, half):.3f} ms")
print(f"  kernels, bounded to {half} rows of {SHAPES[1][0]} {timed(bounded(half), SHAPES[1][0]):.3f} ms")
