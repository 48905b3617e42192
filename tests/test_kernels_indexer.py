"""The Triton indexer kernels (glmlab/kernels/indexer.py) against their torch twins.

Without CUDA the kernels run through Triton's interpreter (tests/conftest.py sets TRITON_INTERPRET=1),
on tiny shapes with 16-wide tiles so that several key tiles, partial tiles, skipped tiles above the
diagonal and several chunks are all exercised.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch
import triton
from torch._subclasses.fake_tensor import FakeTensorMode
from torch.utils.flop_counter import FlopCounterMode

from glmlab.config import load_config
from glmlab.errors import GlmlabError
from glmlab.kernels import indexer as kernels
from glmlab.kernels import indexer_ref as ref
from glmlab.plan import Call, attention_plan, layer_kinds

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
TILES = kernels.Tiles(rows=4, keys=16, tiles=2, picks=16, select=8)
TOLERANCE = {torch.float32: 1e-5, torch.bfloat16: 2e-2}


def inputs(B: int, S: int, T: int, *, H: int = 2, D: int = 16, dtype=torch.float32, seed: int = 0):
    """Random q [B,S,H,D], w [B,S,H] (fp32), k [B,T,D], all requiring gradients."""
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(B, S, H, D, generator=g).to(DEVICE, dtype).requires_grad_()
    w = torch.randn(B, S, H, generator=g).to(DEVICE).requires_grad_()
    k = torch.randn(B, T, D, generator=g).to(DEVICE, dtype).requires_grad_()
    return q, w, k


def close(actual: torch.Tensor, expected: torch.Tensor, tol: float) -> None:
    """Equal up to `tol` times the largest expected magnitude."""
    err = (actual.float() - expected.float()).abs().max().item()
    assert err <= tol * max(expected.float().abs().max().item(), 1.0), err


def finite_grads(out: torch.Tensor, tensors, seed: int = 1):
    """Gradients of a random projection of out's finite entries."""
    g = torch.randn(out.shape, generator=torch.Generator().manual_seed(seed)).to(out.device)
    return torch.autograd.grad(out.masked_fill(~torch.isfinite(out), 0).mul(g).sum(), tensors)


@pytest.mark.parametrize(
    ("B", "S", "T", "dtype"),
    [
        (1, 21, 21, torch.float32),  # S = T, not a tile multiple
        (2, 7, 40, torch.float32),  # a cache offset, batch 2, key tiles skipped above the diagonal
        (1, 1, 23, torch.float32),  # decoding
        (2, 9, 33, torch.bfloat16),
    ],
)
def test_index_scores_matches_twin(B, S, T, dtype):
    q, w, k = inputs(B, S, T, dtype=dtype)
    out = kernels.index_scores(q, w, k, tiles=TILES)
    expected = ref.index_scores(q, w, k)
    assert out.dtype == torch.float32 and out.shape == (B, S, T)
    assert torch.equal(torch.isinf(out), ~ref.visible(S, T, DEVICE).expand(B, S, T))
    tol = TOLERANCE[dtype]
    close(out.masked_fill(torch.isinf(out), 0), expected.masked_fill(torch.isinf(expected), 0), tol)
    for got, want in zip(finite_grads(out, (q, w, k)), finite_grads(expected, (q, w, k)), strict=True):
        assert got.dtype == want.dtype
        close(got, want, 2 * tol)


def same_picks(got: tuple[torch.Tensor, torch.Tensor], want: tuple[torch.Tensor, torch.Tensor]) -> None:
    """The valid masks are equal and the valid indices form the same sets."""
    (idx, valid), (ref_idx, ref_valid) = got, want
    assert idx.dtype == torch.int64 and valid.dtype == torch.bool
    assert torch.equal(valid, ref_valid)
    assert ((idx >= 0) & (idx < 1 << 40)).all()
    sets = idx.masked_fill(~valid, -1).sort(-1).values
    assert torch.equal(sets, ref_idx.masked_fill(~ref_valid, -1).sort(-1).values)


@pytest.mark.parametrize(
    ("B", "S", "T", "topk", "buffer_bytes"),
    [
        (1, 6, 6, 8, 1 << 20),  # T < K
        (2, 5, 8, 8, 1 << 20),  # T = K, batch 2
        (2, 3, 29, 8, 2 * 4 * 29 * 4),  # S < T, chunks of two rows, rows longer than K and not tile multiples
        (1, 1, 30, 8, 1 << 20),  # decoding
        (2, 5, 75, 8, 1 << 20),  # rows longer than the candidate list (CAP = 16): cut, collect, select
        (2, 20, 20, 8, 2 * 4 * 20 * 4),  # the first 8 rows pick every key unscored, the rest in chunks
        (2, 15, 20, 8, 1 << 20),  # a cache offset: 3 rows unscored
    ],
)
def test_index_topk_matches_twin(B, S, T, topk, buffer_bytes):
    q, w, k = inputs(B, S, T, seed=3)
    got = kernels.index_topk(q, w, k, topk=topk, buffer_bytes=buffer_bytes, tiles=TILES)
    assert got[0].shape == (B, S, min(topk, T))
    same_picks(got, ref.index_topk(q, w, k, topk=topk))
    again = kernels.index_topk(q, w, k, topk=topk, buffer_bytes=buffer_bytes, tiles=TILES)
    assert torch.equal(got[0], again[0]) and torch.equal(got[1], again[1])


@pytest.mark.parametrize(("T", "select"), [(30, "radix"), (75, "radix"), (75, "torch")])
def test_index_topk_hides_keys_past_last(T, select):
    """A decoding step over a fixed-size cache: row 0 sees its first 5 keys only (fewer than K: the
    rest of its picks invalid), row 1 all but the last 10, row 2 every key; the twin picks the same
    valid sets (torch.topk may place the invalid picks anywhere)."""
    q, w, k = inputs(3, 1, T, seed=6)
    last = torch.tensor([[4], [T - 11], [T - 1]], device=DEVICE)
    idx, valid = kernels.index_topk(q, w, k, topk=8, tiles=TILES, select=select, last=last)
    ref_idx, ref_valid = ref.index_topk(q, w, k, topk=8, last=last)
    for row in range(3):
        assert set(idx[row][valid[row]].tolist()) == set(ref_idx[row][ref_valid[row]].tolist())
    assert valid[0].sum() == 5 and valid[1:].all() and bool((idx[1] <= T - 11).all())
    with pytest.raises(GlmlabError, match="pass last"):
        kernels.index_topk(q, w, k, topk=8, last=last[:, 0])


@pytest.mark.parametrize("rows", [6, 1])
def test_index_topk_hides_keys_past_last_over_chunks(rows):
    """`last` on prefill-shaped calls (S = 10 of T = 14, K = 8, CAP = 16), in one chunk or one row a
    chunk: 4 unscored first rows (seeing 5-8 keys) and rows seeing more than K but at most CAP keys,
    an int32 `last`, a row bounded at -1 (no key: every pick invalid) and one bounded past T (no
    bound): the twin's valid sets."""
    B, S, T = 2, 10, 14
    q, w, k = inputs(B, S, T, seed=7)
    last = torch.tensor([[-1, 3, 12, 2, 9, 99, 4, 11, 0, 13], [5, 5, 5, 30, 10, 20, 1, 8, 12, 6]],
                        device=DEVICE, dtype=torch.int32)  # fmt: skip
    buffer_bytes = rows * B * (4 * 16 + 8 * kernels.select_cap(8))
    idx, valid = kernels.index_topk(q, w, k, topk=8, tiles=TILES, buffer_bytes=buffer_bytes, last=last)
    ref_idx, ref_valid = ref.index_topk(q, w, k, topk=8, last=last.long())
    for b, s in ((b, s) for b in range(B) for s in range(S)):
        assert set(idx[b, s][valid[b, s]].tolist()) == set(ref_idx[b, s][ref_valid[b, s]].tolist()), (b, s)
    assert not valid[0, 0].any() and valid[0, 1].sum() == 4 and valid[0, 2].sum() == 7


def test_long_prefills_score_eight_queries_a_program(monkeypatch):
    """Without tiles, index_topk scores a prefill of PREFILL_QUERIES queries or more with the
    prefill tiles (8 queries a program), fewer queries than the defaults' 4 (decoding) with the
    decoding tiles (1), anything else with the defaults; all pick the twin's keys."""
    small = kernels.Tiles(rows=8, keys=16, tiles=2, picks=16, select=8)
    monkeypatch.setattr(kernels, "PREFILL_QUERIES", 12)
    monkeypatch.setattr(kernels, "PREFILL_TOPK_TILES", {False: small, True: small})
    monkeypatch.setattr(kernels, "DECODE_TOPK_TILES", kernels.Tiles(rows=1, keys=16, tiles=2, select=8))
    launch, rows = kernels._launch_scores, []
    monkeypatch.setattr(
        kernels, "_launch_scores", lambda *a, **kw: rows.append(a[6].rows) or launch(*a, **kw)
    )
    for S, want in ((20, 8), (10, 4), (2, 1)):
        q, w, k = inputs(2, S, 40, seed=4)
        rows.clear()
        got = kernels.index_topk(q, w, k, topk=8)
        assert rows and set(rows) == {want}, (S, rows)
        same_picks(got, ref.index_topk(q, w, k, topk=8))


@pytest.mark.parametrize("T", [6, 29])
def test_index_topk_torch_select_picks_the_same_sets(T):
    """Chunks selected by torch.topk (the model's choice) = the twin's sets, valid mask exact."""
    q, w, k = inputs(2, 3, T, seed=4)
    got = kernels.index_topk(q, w, k, topk=8, buffer_bytes=2 * 4 * T * 4, tiles=TILES, select="torch")
    same_picks(got, ref.index_topk(q, w, k, topk=8))


def test_index_topk_ties_go_to_lower_keys():
    """Negative head weights zero many scores (ReLU of positive dots weighted below zero, and
    exactly zero where every dot is negative); equal scores are picked from the lowest key up."""
    q, w, k = inputs(1, 3, 40, seed=5)
    with torch.no_grad():
        w.copy_(-w.abs())
        q[:, 1].zero_()  # query 1 scores 0 everywhere: it must pick keys 0..K-1
    idx, valid = kernels.index_topk(q, w, k, topk=8, tiles=TILES)
    same_picks((idx, valid), ref.index_topk(q, w, k, topk=8))
    assert torch.equal(idx[0, 1].sort().values, torch.arange(8, device=DEVICE))


def padded(scores: torch.Tensor) -> torch.Tensor:
    """scores [B,rows,n] copied into rows padded to a multiple of 16, as index_topk's buffer is."""
    B, rows, n = scores.shape
    out = torch.full((B, rows, -(-n // 16) * 16), float("nan"), device=scores.device)
    out[..., :n] = scores
    return out[..., :n]


@pytest.mark.parametrize("length", [18, 3 * 18])
def test_selection_of_signed_zeros_and_negatives(length):
    """The radix select on a crafted row: -0.0 and +0.0 are one value (ties by key index), negative
    scores order below them. 18 keys (within CAP = 32: the row held in registers); 54 keys (the
    pattern three times: its 30 tied zeros pass any cut, with the positives 42 keys, more than CAP, so
    the histogram passes over the whole row run, with the ties spanning two of their blocks)."""
    row = [-1.0, 0.0, -0.0, 2.0, -0.0, 0.0, 3.0, -2.0, -0.0, 0.0, 1.0, -0.0, -3.0, 0.0, 0.5, -0.0, -5.0, -0.0]
    scores = padded(torch.tensor(row * (length // 18), device=DEVICE).view(1, 1, -1))
    n, K = length, 16
    idx = torch.empty(1, 1, K, dtype=torch.int64, device=DEVICE)
    valid = torch.zeros(1, 1, K, dtype=torch.int8, device=DEVICE)
    counts = kernels._select_chunk(scores, idx, valid, n - 1, 0, kernels.Tiles(select=16, sample=1))
    expected = torch.sort(scores[0, 0], descending=True, stable=True).indices[:K]
    assert torch.equal(idx[0, 0].sort().values, expected.sort().values)
    assert valid.bool().all()
    assert n <= kernels.select_cap(K) or counts.sum() > kernels.select_cap(K)


def test_selection_of_a_long_list():
    """K = 8193 (CAP = 32K keys, where the search and the rank scan pack their counts in int64): a
    row of 20,000 keys, held whole, with many ties (50 values); the picks are the stable sort's."""
    n, K = 20000, 8193
    row = torch.randint(0, 50, (n,), generator=torch.Generator().manual_seed(23)).float().to(DEVICE)
    scores = padded(row.view(1, 1, -1))
    idx = torch.empty(1, 1, K, dtype=torch.int64, device=DEVICE)
    valid = torch.zeros(1, 1, K, dtype=torch.int8, device=DEVICE)
    kernels._select_chunk(scores, idx, valid, n - 1, 0, kernels.Tiles())
    expected = torch.sort(row, descending=True, stable=True).indices[:K]
    assert kernels.select_cap(K) == 1 << 15
    assert torch.equal(idx[0, 0].sort().values, expected.sort().values) and valid.bool().all()


def emulated_candidates(row: torch.Tensor, K: int, stride: int) -> int:
    """What the cut keeps of a row longer than CAP, computed in torch as `_cut_kernel` does: the
    sample (groups of 8 consecutive scores every 8*stride), its r-th largest key, r = candidates*K*m/2n
    rounded up, to 16 bits, and the keys at or above that."""
    bits = row.float().view(torch.int32)
    keys = torch.where(bits < 0, bits ^ 0x7FFFFFFF, bits)
    keys = torch.where(keys == -1, 0, keys)
    n, cap = row.numel(), kernels.select_cap(K)
    every = max(stride, -(-n // (2 * cap)))
    i = torch.arange(2 * cap, device=row.device)
    t = (i // 8) * 8 * every + i % 8
    sample = keys[t[t < n]]
    rank = min(-(-kernels.Tiles.candidates * K * sample.numel() // (2 * n)), sample.numel())
    cut = (sample >> 16).sort(descending=True).values[rank - 1].item() << 16
    return int((keys >= cut).sum())


@pytest.mark.parametrize("kind", ["random", "ties", "sampled_high"])
def test_selection_threshold_and_fallback(kind):
    """Rows of 54-61 keys, longer than the candidate list (K=4, CAP=16), in segments of 8 keys,
    the threshold from a sample of 16 scores (8 in 32): random rows (the candidates, where their count
    lies in [K, CAP], which it misses on 1 or 2 rows of these 8); rows of zeros and ones (more than CAP
    candidates: the whole-row select); rows whose sampled scores are the largest (the threshold keeps
    2 < K: the whole-row select). Each row's candidate count is what the cut computed in torch keeps."""
    g = torch.Generator().manual_seed(13)
    rows, K, n0, stride = 8, 4, 54, 4
    base = torch.randn(rows, n0 + rows, generator=g)
    if kind == "ties":
        base = torch.randint(0, 2, base.shape, generator=g).float()
    elif kind == "sampled_high":
        t = torch.arange(n0 + rows)
        base = torch.where(t % 32 < 8, 10 + t.float(), base)
    scores = padded(base.to(DEVICE)[None])
    idx = torch.full((1, rows, K), -1, dtype=torch.int64, device=DEVICE)
    valid = torch.zeros(1, rows, K, dtype=torch.int8, device=DEVICE)
    counts = kernels._select_chunk(scores, idx, valid, n0 - 1, 0, kernels.Tiles(select=8, sample=stride))
    assert valid.bool().all()
    totals = counts.sum(1).tolist()
    for r in range(rows):
        expected = torch.sort(scores[0, r, : n0 + r], descending=True, stable=True).indices[:K]
        assert torch.equal(idx[0, r].sort().values, expected.sort().values), r
        assert totals[r] == emulated_candidates(scores[0, r, : n0 + r], K, stride), r
    listed = [K <= c <= kernels.select_cap(K) for c in totals]
    if kind == "random":  # a sample of 16 is noisy: a few rows miss [K, CAP]
        assert 0 < rows - sum(listed) <= 2, totals
    else:
        assert not any(listed), totals


def test_select_reads_candidate_runs_in_any_order():
    """The collect pass reserves each segment's run of the candidate list with an atomic add, so runs
    may lie in any order. Runs written by hand in reverse segment order (rows of 45-47 keys, segments
    of 8, K=8, CAP=16, the 9-15 largest keys of each row as candidates, some segments without any):
    the select picks the same keys in the same slots as `_select_chunk`, whose runs the interpreter
    lays out in segment order."""
    g = torch.Generator().manual_seed(17)
    rows, K, n0, seg = 3, 8, 45, 8
    cap = kernels.select_cap(K)
    scores = padded(torch.randn(rows, n0 + rows - 1, generator=g).to(DEVICE)[None])
    n_seg = -(-scores.shape[2] // seg)
    counts = torch.zeros(rows, n_seg, dtype=torch.int32)
    bases = torch.zeros(rows, n_seg, dtype=torch.int32)
    cand = torch.zeros(rows, cap, dtype=torch.int32)
    pos = torch.zeros(rows, cap, dtype=torch.int32)
    for r in range(rows):
        row = scores[0, r, : n0 + r].cpu()
        bits = row.view(torch.int32)
        keys = torch.where(bits < 0, bits ^ 0x7FFFFFFF, bits)
        kept = torch.zeros(row.numel(), dtype=torch.bool)
        kept[row.argsort(descending=True)[: 9 + 3 * r]] = True
        slot = 0
        for s in reversed(range(n_seg)):
            at = torch.nonzero(kept[s * seg : (s + 1) * seg]).flatten() + s * seg
            counts[r, s], bases[r, s] = at.numel(), slot
            cand[r, slot : slot + at.numel()], pos[r, slot : slot + at.numel()] = keys[at], at.int()
            slot += at.numel()
    assert (counts == 0).any()
    idx = torch.full((1, rows, K), -1, dtype=torch.int64, device=DEVICE)
    valid = torch.zeros(1, rows, K, dtype=torch.int8, device=DEVICE)
    lists = [x.to(DEVICE).flatten() for x in (cand, pos, counts, bases)]
    kernels._select_kernel[(rows,)](
        scores, scores, idx, valid, *lists, rows, n0 - 1, 0, rows, K, n_seg, *scores.stride()[:2],
        BLOCK=seg, CAP=cap, SEG_P2=triton.next_power_of_2(n_seg), LAST=False,
    )  # fmt: skip
    want_idx = torch.full_like(idx, -1)
    want_valid = torch.zeros_like(valid)
    kernels._select_chunk(scores, want_idx, want_valid, n0 - 1, 0, kernels.Tiles(select=seg))
    assert torch.equal(idx, want_idx) and torch.equal(valid, want_valid)
    for r in range(rows):
        expected = torch.sort(scores[0, r, : n0 + r], descending=True, stable=True).indices[:K]
        assert torch.equal(idx[0, r].sort().values, expected.sort().values), r


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_index_scores_at_matches_twin(dtype):
    """Batch 2, K not a tile multiple, repeated picks (their key gradients add up)."""
    B, S, T, K = 2, 3, 29, 21
    q, w, k = inputs(B, S, T, dtype=dtype, seed=7)
    idx = torch.randint(0, T, (B, S, K), generator=torch.Generator().manual_seed(8)).to(DEVICE)
    idx[0, 0, :4] = 5
    out = kernels.index_scores_at(q, w, k, idx, tiles=TILES)
    expected = ref.index_scores_at(q, w, k, idx)
    tol = TOLERANCE[dtype]
    close(out, expected, tol)
    for got, want in zip(finite_grads(out, (q, w, k)), finite_grads(expected, (q, w, k)), strict=True):
        close(got, want, 2 * tol)


def test_dense_index_kl_matches_twin():
    """Batch 2, a cache offset, chunks of two query rows (the budget fits two)."""
    B, S, T, Ha, R = 2, 5, 19, 3, 24
    q, w, k = inputs(B, S, T, seed=9)
    g = torch.Generator().manual_seed(10)
    q_lat, kv = torch.randn(B, S, Ha, R, generator=g).to(DEVICE), torch.randn(B, T, R, generator=g).to(DEVICE)
    budget = 6 * B * Ha * T * 2
    loss = kernels.dense_index_kl(q, w, k, q_lat, kv, scale=0.3, buffer_bytes=budget, tiles=TILES)
    expected = ref.dense_index_kl(q, w, k, q_lat, kv, scale=0.3)
    close(loss, expected, 1e-5)
    grads = torch.autograd.grad(2 * loss, (q, w, k)), torch.autograd.grad(2 * expected, (q, w, k))
    for got, want in zip(*grads, strict=True):
        close(got, want, 1e-5)


@pytest.mark.parametrize("backward_inside", [True, False])
def test_autocast(backward_inside):
    """Under bf16 autocast (q from an autocast product, fp32 attention inputs), the dense KL and
    the scores at picks run and their gradients reach fp32 leaves, backward inside the context or not."""
    B, S, T, Ha, R = 1, 4, 11, 2, 16
    q, w, k = inputs(B, S, T, seed=11)
    g = torch.Generator().manual_seed(12)
    q_lat, kv = torch.randn(B, S, Ha, R, generator=g).to(DEVICE), torch.randn(B, T, R, generator=g).to(DEVICE)
    idx = torch.randint(0, T, (B, S, 5), generator=g).to(DEVICE)
    with torch.autocast(DEVICE, dtype=torch.bfloat16):
        q16 = q @ torch.eye(q.shape[-1], device=DEVICE)
        assert q16.dtype == torch.bfloat16
        loss = kernels.dense_index_kl(q16, w, k, q_lat, kv, scale=0.3, tiles=TILES)
        loss = loss + kernels.index_scores_at(q16, w, k, idx, tiles=TILES).square().mean()
        if backward_inside:
            loss.backward()
    if not backward_inside:
        loss.backward()
    q16 = q16.detach().float()
    expected = (
        ref.dense_index_kl(q16, w, k, q_lat, kv, scale=0.3)
        + ref.index_scores_at(q16, w, k, idx).square().mean()
    )
    close(loss, expected, TOLERANCE[torch.bfloat16])
    assert q.grad.dtype == torch.float32 and k.grad.dtype == torch.float32 and torch.isfinite(k.grad).all()


def test_quantize_rows_twin():
    """e4m3 rows: each row's largest |x| becomes 448 exactly, every element within e4m3's rounding
    (3 mantissa bits: 1/16 relative, or half its smallest subnormal step), an all-zero row stays zero
    with scale 1; the scales folded as the kernel does (q's into the head weights, k's per key)
    give the scores of the twin's fp8-rounded inputs."""
    q, w, k = (x.detach().cpu() for x in inputs(1, 6, 10, H=3, D=32, seed=14))
    q[0, 2, 1] = 0
    q8, q_scale = ref.quantize_rows(q)
    assert q8.dtype == torch.float8_e4m3fn and q_scale.shape == q.shape[:3]
    back = q8.float() * q_scale[..., None]
    assert torch.equal(q8.float().abs().amax(-1)[q_scale != 1], torch.full_like(q_scale[q_scale != 1], 448))
    assert ((back - q).abs() <= q.abs() / 16 + q_scale[..., None] * 2.0**-10).all()
    assert q_scale[0, 2, 1] == 1 and (back[0, 2, 1] == 0).all()
    k8, k_scale = ref.quantize_rows(k)
    dots = torch.einsum("bshd,btd->bsht", q8.float(), k8.float()).relu()
    folded = torch.einsum("bsh,bsht->bst", w * q_scale, dots) * k_scale[:, None, :]
    expected = ref.index_scores_fp8(q, w, k)
    close(folded.masked_fill(torch.isinf(expected), 0), expected.masked_fill(torch.isinf(expected), 0), 1e-5)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_quantize_rows_kernel(dtype):
    """The one-pass kernel against its twin, bit for bit: 300 rows of 24 (three programs, the last
    partial; rows not a power of two), one of them all zeros. Rows of e4m3 values times a power of
    two, one of them +-448 (exact on the CPU, where the interpreter's casts to fp8 round wrongly);
    on a GPU also random rows (the cast's rounding)."""
    g = torch.Generator().manual_seed(21)
    e4m3 = torch.arange(256, dtype=torch.uint8).view(torch.float8_e4m3fn).float()
    e4m3 = e4m3[torch.isfinite(e4m3)]
    values = e4m3[torch.randint(0, e4m3.numel(), (300, 24), generator=g)]
    values[:, 5] = 448 * torch.where(torch.rand(300, generator=g) < 0.5, -1.0, 1.0)
    values *= 2.0 ** torch.randint(-8, 5, (300, 1), generator=g)
    values[7] = 0
    cases = [("exact", values.view(3, 100, 24))]
    if DEVICE == "cuda":
        cases.append(("random", torch.randn(3, 100, 24, generator=g) * torch.rand(3, 100, 1, generator=g)))
    for kind, x in cases:
        x = x.to(DEVICE, dtype)
        got, want = kernels.quantize_rows(x), ref.quantize_rows(x)
        assert got[0].dtype == torch.float8_e4m3fn and got[1].shape == x.shape[:2]
        assert torch.equal(got[0].view(torch.uint8), want[0].view(torch.uint8))
        assert torch.equal(got[1], want[1])
        if kind == "exact":
            assert got[1].view(-1)[7] == 1 and not got[0].view(300, 24)[7].float().any()


@pytest.mark.skipif(DEVICE != "cuda", reason="fp8 products need a GPU (the interpreter has no fp8)")
def test_fp8_scores_and_picks():
    """fp8 scores against the twin on fp8-rounded inputs (the head sum is a bf16 product); fp8 picks
    against the twin's on those scores: the same valid masks and nearly the same sets."""
    B, S, T = 2, 40, 200
    q, w, k = (
        x.detach().bfloat16() if x.dim() > 2 else x.detach() for x in inputs(B, S, T, H=4, D=32, seed=15)
    )
    out = kernels.index_scores(q, w, k, tiles=TILES, fp8=True)
    expected = ref.index_scores_fp8(q, w, k)
    assert torch.equal(torch.isinf(out), torch.isinf(expected))
    close(out.masked_fill(torch.isinf(out), 0), expected.masked_fill(torch.isinf(expected), 0), 2e-2)
    idx, valid = kernels.index_topk(q, w, k, topk=16, tiles=TILES, fp8=True)
    order = torch.sort(expected, dim=-1, descending=True, stable=True).indices[..., :16]
    assert torch.equal(valid, torch.isfinite(expected.gather(-1, order)))
    hits = (idx.masked_fill(~valid, -1)[..., :, None] == order.masked_fill(~valid, -2)[..., None, :]).any(-1)
    assert hits.sum() >= 0.9 * valid.sum()


def test_index_dtype_switch():
    """`index_dtype: fp8` reaches the plan for the Triton top-k only (not the torch paths on a CPU,
    not the dense warm-up); with a torch path chosen outright, or another value, it is a one-line
    config error."""
    cases = [("triton", 64, True), ("flex", 64, True), ("auto", 64, False), ("triton", 8, False)]
    for impl, context, fp8 in cases:  # Flex selects with the Triton top-k where Triton is installed
        cfg = load_config("glm5-tiny", ["index_dtype=fp8", f"dsa_impl={impl}", "index_topk=16"]).model
        call = Call(context, context, False, False, False, "cpu" if impl == "auto" else "cuda")
        assert attention_plan(cfg, layer_kinds(cfg)[0], call).index_fp8 is fp8
    cfg = load_config("glm5-tiny", ["dsa_impl=triton", "index_topk=16"]).model
    assert not attention_plan(cfg, layer_kinds(cfg)[0], Call(64, 64, False, False, False, "cuda")).index_fp8
    with pytest.raises(GlmlabError, match="index_dtype"):
        load_config("glm5-tiny", ["index_dtype=fp16"])
    for extra in (["dsa_impl=gather"], ["dsa_impl=mask"], ["use_dsa=false"]):
        with pytest.raises(GlmlabError, match="fp8 scores the Triton top-k only"):
            load_config("glm5-tiny", ["index_dtype=fp8", *extra])


def test_flop_counter_sees_the_kernels():
    """FlopCounterMode counts each op by its formula (fake tensors: nothing runs); a training step
    of index_scores is three forwards."""
    B, S, T, H, D, K = 1, 4096, 8192, 32, 128, 2048
    with FakeTensorMode():
        q = torch.empty(B, S, H, D, dtype=torch.bfloat16, requires_grad=True)
        w = torch.empty(B, S, H, requires_grad=True)
        k = torch.empty(B, T, D, dtype=torch.bfloat16, requires_grad=True)
        idx = torch.empty(B, S, K, dtype=torch.int64)
        pairs, pairs_s = S * (T - S) + S * (S + 1) // 2, S * (S + 1) // 2
        for run, forward in [
            (lambda: kernels.index_scores(q, w, k).sum().backward(), 3 * pairs * 2 * H * (D + 1)),
            (lambda: kernels.index_scores_at(q, w, k, idx).sum().backward(), 3 * S * K * 2 * H * (D + 1)),
            (lambda: kernels.index_topk(q, w, k, topk=K), pairs * 2 * H * (D + 1)),
            # from the start of a sequence the first K queries pick every key they see, unscored
            (
                lambda: kernels.index_topk(q, w, k[:, :S], topk=K),
                (pairs_s - K * (K + 1) // 2) * 2 * H * (D + 1),
            ),
        ]:
            counter = FlopCounterMode(display=False)
            with counter:
                run()
            kernel_flops = sum(
                n for op, n in counter.get_flop_counts()["Global"].items() if "glmlab" in str(op)
            )
            assert kernel_flops == forward


def test_bad_inputs_are_one_line_errors():
    q, w, k = inputs(1, 4, 3)
    with pytest.raises(GlmlabError, match="queries but 3 keys"):
        kernels.index_scores(q, w, k)
    q, w, k = inputs(1, 3, 5)
    with pytest.raises(GlmlabError, match="do not fit"):
        kernels.index_topk(q, w[:, :, :1], k, topk=2)
    if DEVICE == "cpu":
        with pytest.raises(GlmlabError, match="fp8 index scoring runs on a CUDA GPU"):
            kernels.index_topk(q, w, k, topk=2, fp8=True)
    with pytest.raises(GlmlabError, match="no gradient"):
        kernels.index_scores(q, w, k, fp8=True)
    with pytest.raises(GlmlabError, match="pass idx"):
        kernels.index_scores_at(q, w, k, torch.zeros(1, 3, dtype=torch.int64))


COMPILE_SELECT = """
import inspect
from glmlab.kernels import indexer as m
from glmlab.kernels.hopper import compile_for_hopper

kinds = {"scores_ptr": "*fp32", "idx_ptr": "*i64", "valid_ptr": "*i8", "last_ptr": "*i64"}
cap = m.select_cap(2048)
warps = max(4, min(16, cap // 512))
for last in (False, True):
    for kernel, constants, warps in (
        (m._cut_kernel, dict(CAP=cap, STRIDE=16, CANDIDATES=m.Tiles().candidates, SAMPLE=2 * cap), warps),
        (m._collect_kernel, dict(SEG=1024, CAP=cap), m.Tiles().collect_warps),
        (m._select_kernel, dict(BLOCK=1024, CAP=cap, SEG_P2=128), warps),
    ):
        constants["LAST"] = last
        names = [n for n in inspect.signature(kernel.fn).parameters if n not in constants]
        signature = {n: kinds.get(n, "*i32" if n.endswith("_ptr") else "i32") for n in names}
        compile_for_hopper(kernel, signature, constants, num_warps=warps)
        print(kernel.fn.__name__)
"""


def test_select_kernels_compile_for_hopper():
    """The top-k's three kernels at K = 2048, with and without `last`, compile for an H200 (sm_90a) on
    the CPU: Triton's interpreter accepts code that its compiler rejects (a constexpr assigned in a
    static loop did)."""
    pytest.importorskip("triton.backends.nvidia")
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    done = subprocess.run(
        [sys.executable, "-c", COMPILE_SELECT], env=env, capture_output=True, text=True, check=True
    ).stdout.split()
    assert done == ["_cut_kernel", "_collect_kernel", "_select_kernel"] * 2, done


COMPILE_SCORES = """
import re
from glmlab.kernels import indexer as m
from glmlab.kernels.hopper import compile_for_hopper, resources

for kind in ("fp8e4nv", "bf16"):
    pointers = dict(q=kind, w="fp32", k=kind, ks="fp32", out="fp32")
    signature = {f"{name}_ptr": f"*{dtype}" for name, dtype in pointers.items()}
    ints = ["stride_qb", "stride_wb", "stride_kb", "stride_ksb", "S", "T", "n_cols", "stride_ob", "stride_os"]
    signature |= dict.fromkeys(ints, "i32")
    constants = dict(H=32, D=128, HP=32, BLOCK_D=128, BLOCK_S=4, BLOCK_T=64, TILES=32, FILL_MASKED=False,
                     PRECISION="tf32", BLOCK_SP=16, FP8=kind != "bf16", PACKED_RELU=True)
    kernel = compile_for_hopper(m._scores_fwd_kernel, signature, constants, num_warps=4, num_stages=3)
    sass = resources(kernel).sass
    print(kind, len(re.findall(r"F2FP\\.RELU", sass)), len(re.findall(r"\\bFMNMX\\b", sass)))
"""


COMPILE_PREFILL_SCORES = """
from glmlab.kernels import indexer as m
from glmlab.kernels.hopper import compile_for_hopper, resources

for fp8, t in m.PREFILL_TOPK_TILES.items():
    kind = "fp8e4nv" if fp8 else "bf16"
    pointers = dict(q=kind, w="fp32", k=kind, ks="fp32", out="fp32")
    signature = {f"{name}_ptr": f"*{dtype}" for name, dtype in pointers.items()}
    ints = ["stride_qb", "stride_wb", "stride_kb", "stride_ksb", "S", "T", "n_cols", "stride_ob", "stride_os"]
    signature |= dict.fromkeys(ints, "i32")
    constants = dict(H=32, D=128, HP=32, BLOCK_D=128, BLOCK_S=t.rows, BLOCK_T=t.keys, TILES=t.tiles,
                     FILL_MASKED=False, PRECISION="tf32", BLOCK_SP=16, FP8=fp8, PACKED_RELU=True)
    kernel = compile_for_hopper(m._scores_fwd_kernel, signature, constants, num_warps=t.warps,
                                num_stages=t.stages, divisible=[*signature][:5] + ints[:4] + ints[-2:])
    res = resources(kernel)
    print(kind, res.spill_stores, res.shared)
"""


def test_prefill_scoring_tiles_fit_two_programs_an_sm():
    """The prefill's scoring tiles (8 queries a program) compile for an H200 on the CPU without
    spilling, two programs to an SM's 232,448 bytes of shared memory."""
    pytest.importorskip("triton.backends.nvidia")
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    lines = subprocess.run(
        [sys.executable, "-c", COMPILE_PREFILL_SCORES], env=env, capture_output=True, text=True, check=True
    ).stdout.split("\n")
    assert len(list(filter(None, lines))) == 2, lines
    for line in filter(None, lines):
        kind, spills, shared = line.split()
        assert int(spills) == 0 and 2 * int(shared) <= 232448, line


def test_scores_pack_the_relu_into_the_bf16_rounding():
    """Compiled for an H200 on the CPU, the scoring kernel (fp8 and bf16 inputs) does its ReLU inside
    the conversion to bf16 (F2FP.RELU, two scores an instruction) and keeps no separate maximum
    (FMNMX: 64 a thread per key tile before)."""
    pytest.importorskip("triton.backends.nvidia")
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    lines = subprocess.run(
        [sys.executable, "-c", COMPILE_SCORES], env=env, capture_output=True, text=True, check=True
    ).stdout.split("\n")
    for line in filter(None, lines):
        kind, relu, maxima = line.split()
        assert int(relu) >= 32 and int(maxima) == 0, line


def test_a_cut_aimed_at_k_or_fewer_candidates_is_refused():
    """Tiles.candidates below 3 would aim the cut at K or fewer candidates, sending most rows to the
    whole-row select: `_select_chunk` refuses it."""
    scores = padded(torch.randn(1, 2, 40, device=DEVICE))
    idx = torch.empty(1, 2, 4, dtype=torch.int64, device=DEVICE)
    valid = torch.zeros(1, 2, 4, dtype=torch.int8, device=DEVICE)
    with pytest.raises(ValueError, match="Tiles.candidates 2"):
        kernels._select_chunk(scores, idx, valid, 38, 0, kernels.Tiles(candidates=2))
