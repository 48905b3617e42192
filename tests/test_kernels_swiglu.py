"""The experts' SwiGLU kernels (glmlab/kernels/swiglu.py) against their torch twin, on the CPU through
Triton's interpreter, and the twin's backward against autograd."""

from __future__ import annotations

import pytest
import torch

from glmlab.kernels.swiglu import _launch, _SwiGLU, launch_swiglu_backward, launch_swiglu_forward
from glmlab.kernels.swiglu_ref import swiglu_backward_ref, swiglu_ref

pytestmark = pytest.mark.usefixtures("one_thread")

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"


def assert_close(ours: torch.Tensor, twin: torch.Tensor) -> None:
    """fp32 to 1e-5; bf16 to one unit in the last place (the interpreter's casts to bf16 truncate)."""
    tol = 2**-7 if ours.dtype == torch.bfloat16 else 1e-5
    torch.testing.assert_close(ours.float(), twin.float(), rtol=tol, atol=1e-5)


def test_twin_backward_is_autograds():
    """The twin's closed-form gradient equals autograd's through silu(gate) * up, in fp64."""
    gate_up = torch.randn(11, 2 * 40, dtype=torch.float64, requires_grad=True)
    grad = torch.randn(11, 40, dtype=torch.float64)
    swiglu_ref(gate_up).backward(grad)
    torch.testing.assert_close(swiglu_backward_ref(gate_up.detach(), grad), gate_up.grad)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("width", [40, 600])
def test_kernels_equal_the_twin_up_to_the_bound(dtype, width):
    """A width wider than a column block (600 = 512 + 88), a row count that is not a multiple of the
    rows a program takes, and a bound short of it: the rows from the bound on hold NaN, as the
    grouped products leave them, change nothing before it, and are not written."""
    M, bound = 13, 9
    gate_up = torch.randn(M, 2 * width, device=DEVICE).to(dtype)
    grad = torch.randn(M, width, device=DEVICE).to(dtype)
    gate_up[bound:], grad[bound:] = float("nan"), float("nan")
    rows = torch.tensor([bound], device=DEVICE)
    out = launch_swiglu_forward(gate_up, rows)
    assert out.shape == (M, width) and out.dtype == dtype
    assert_close(out[:bound], swiglu_ref(gate_up[:bound]))
    back = launch_swiglu_backward(gate_up, grad, rows)
    assert back.shape == gate_up.shape and back.dtype == dtype
    assert_close(back[:bound], swiglu_backward_ref(gate_up[:bound], grad[:bound]))
    # the rows from the bound on are not written, forward or backward
    for grad_in, width_out in ((None, width), (grad, 2 * width)):
        out = torch.full((M, width_out), 7.0, device=DEVICE, dtype=dtype)
        _launch(gate_up, grad_in, out, rows)
        assert (out[bound:] == 7.0).all() and torch.isfinite(out[:bound]).all()


def test_autograd_function_matches_the_twin():
    """`_SwiGLU` gives the twin's output and, through autograd, its gradient (the kernels on CUDA)."""
    gate_up = torch.randn(10, 2 * 24, device=DEVICE, requires_grad=True)
    grad = torch.randn(10, 24, device=DEVICE)
    out = _SwiGLU.apply(gate_up, torch.tensor([10], device=DEVICE))
    out.backward(grad)
    assert_close(out.detach(), swiglu_ref(gate_up.detach()))
    assert_close(gate_up.grad, swiglu_backward_ref(gate_up.detach(), grad))
