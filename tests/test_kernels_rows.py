"""The row moves of the MoE dispatch (glmlab/kernels/rows.py) against their torch twins, on the CPU
through Triton's interpreter; the differentiable `expand` and `combine` (glmlab/model/row_map.py)
against finite differences; and the grouped experts sized by their real pairs alone."""

from __future__ import annotations

import pytest
import torch

from glmlab.kernels.rows import launch_gather_sum, launch_spread
from glmlab.kernels.rows_ref import gather_sum_ref, spread_ref
from glmlab.model.row_map import RowMap, combine, expand

pytestmark = pytest.mark.usefixtures("one_thread")

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"


def assert_close(ours: torch.Tensor, twin: torch.Tensor) -> None:
    """fp32 to 1e-5; bf16 to one unit in the last place (the interpreter's casts to bf16 truncate)."""
    tol = 2**-7 if ours.dtype == torch.bfloat16 else 1e-5
    torch.testing.assert_close(ours.float(), twin.float(), rtol=tol, atol=1e-5)


def row_map(N: int, k: int, M: int, *, empty: int, seed: int = 0) -> RowMap:
    """N tokens' k slots in distinct random rows of M, `empty` of the slots without a row."""
    g = torch.Generator().manual_seed(seed)
    slots = torch.randperm(M, generator=g)[: N * k]
    slots[torch.randperm(N * k, generator=g)[:empty]] = M
    return RowMap.of_slots(slots.view(N, k).to(DEVICE), M)


@pytest.mark.parametrize("k", [1, 3, 8])
@pytest.mark.parametrize("weighted", [False, True])
def test_gather_sum_equals_its_twin(k, weighted):
    """Rows wider than a column block (600 = 512 + 88), slots of no row, bf16 rows summed in fp32."""
    N, d = 9, 600
    where = row_map(N, k, N * k + 5, empty=N * k // 3)
    src = torch.randn(where.rows, d, device=DEVICE).to(torch.bfloat16)
    weights = torch.rand(N, k, device=DEVICE) if weighted else None
    for dtype in (torch.float32, torch.bfloat16):
        ours = launch_gather_sum(src, where.slots, weights, dtype)
        twin = gather_sum_ref(src, where.slots, weights, dtype)
        assert ours.dtype == dtype
        assert_close(ours, twin)


@pytest.mark.parametrize("k", [1, 3])
@pytest.mark.parametrize("weighted", [False, True])
@pytest.mark.parametrize("dot", [False, True])
def test_spread_equals_its_twin(k, weighted, dot):
    """Rows of no slot come out zero (over an output that held NaN), a row count that is not a
    multiple of the rows a program writes, and the dots in fp32, 0 for rows of no slot."""
    N, d = 7, 600
    where = row_map(N, k, N * k + 6, empty=2)
    src = torch.randn(N, d, device=DEVICE)
    weights = torch.rand(N * k, device=DEVICE) if weighted else None
    other = None
    if dot:  # rows of no slot hold NaN, as the grouped products' unwritten rows may: their dots are 0
        other = torch.randn(where.rows, d, device=DEVICE).to(torch.bfloat16)
        other[where.owner == N * k] = float("nan")
    torch.full((1 << 16,), float("nan"), device=DEVICE)  # freed: on the GPU, recycled NaN below
    ours, ours_dots = launch_spread(src, where.owner, k, weights, other, torch.bfloat16)
    twin, twin_dots = spread_ref(src, where.owner, k, weights, other, torch.bfloat16)
    assert_close(ours, twin)
    assert (ours[where.owner == N * k] == 0).all() and (where.owner == N * k).sum() >= 6
    assert ours_dots.shape == twin_dots.shape == ((where.rows,) if dot else (0,))
    torch.testing.assert_close(ours_dots, twin_dots, rtol=1e-5, atol=1e-4)
    if dot:
        assert (ours_dots[where.owner == N * k] == 0).all()


def test_empty_inputs():
    src = torch.randn(0, 16, device=DEVICE)
    assert launch_gather_sum(src, torch.zeros(3, 2, dtype=torch.int64, device=DEVICE), None,
                             torch.float32).abs().sum() == 0  # fmt: skip
    out, dots = launch_spread(torch.randn(3, 16, device=DEVICE), torch.zeros(0, dtype=torch.int64,
                              device=DEVICE), 2, None, None, torch.float32)  # fmt: skip
    assert out.shape == (0, 16) and dots.shape == (0,)


def test_row_map_from_either_side():
    where = row_map(6, 3, 25, empty=4)
    held = where.owner[where.owner < 18]
    assert held.numel() == 14 and held.unique().numel() == 14
    # each held row's slot points back at it
    rows = torch.arange(25, device=DEVICE)[where.owner < 18]
    assert (where.slots.reshape(-1)[held] == rows).all()
    full = RowMap.of_owner(torch.randperm(12, device=DEVICE), 4, 3)
    assert (full.owner[full.slots.reshape(-1)] == torch.arange(12, device=DEVICE)).all()


def test_expand_and_combine_gradients():
    """Each is the other's adjoint: gradients of the tokens, the rows and the weights (fp64 twins)."""
    where = row_map(5, 3, 20, empty=4)
    cpu = RowMap(where.slots.cpu(), where.owner.cpu())
    x = torch.randn(5, 6, dtype=torch.double, requires_grad=True)
    rows = torch.randn(20, 6, dtype=torch.double, requires_grad=True)
    weights = torch.rand(5, 3, dtype=torch.double, requires_grad=True)
    assert torch.autograd.gradcheck(lambda x: expand(x, cpu), (x,))
    assert torch.autograd.gradcheck(lambda r, w: combine(r, cpu, w), (rows, weights))
    assert torch.autograd.gradcheck(lambda r: combine(r, cpu), (rows,))


def test_moves_keep_the_rows_dtype_under_autocast():
    """Under bf16 autocast (whose `sum` is fp32 on CUDA) the moves return the dtype asked for: fp32
    rows would double the combine's all-to-all and turn the residual stream fp32. A token copied to
    two rows gets both rows' gradients."""
    x = torch.randn(6, 8, device=DEVICE, dtype=torch.bfloat16, requires_grad=True)
    where = RowMap.of_owner(torch.tensor([0, 2, 3, 7, 10], device=DEVICE), 6, 2)  # (token, slot) t*2 + j
    with torch.autocast(DEVICE, torch.bfloat16):
        rows = expand(x, where)
        summed = combine(rows, where)
    assert rows.dtype == summed.dtype == torch.bfloat16
    summed.float().sum().backward()
    assert x.grad.dtype == torch.bfloat16
    assert torch.equal(x.grad[:, 0], torch.tensor([1, 2, 0, 1, 0, 1], device=DEVICE, dtype=torch.bfloat16))
