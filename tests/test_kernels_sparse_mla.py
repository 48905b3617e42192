"""The Triton sparse MLA attention against its torch twin and the model's gathered path.

Without CUDA the kernels run through Triton's interpreter (tests/conftest.py sets
TRITON_INTERPRET=1), on tiny shapes with tiny tiles so that every branch (several key tiles, a
partial last tile, several head blocks) is exercised in a few seconds.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from glmlab.kernels import sparse_mla as kernels
from glmlab.kernels.sparse_mla import BackwardTiles, Tiles, backward_flops, forward_flops, sparse_mla
from glmlab.kernels.sparse_mla_ref import sparse_mla_ref
from glmlab.model.dsa import gathered_attention

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
TINY = {"forward_tiles": Tiles(16, 16, 4, 1), "backward_tiles": BackwardTiles(*[Tiles(16, 16, 4, 1)] * 3)}
TOLERANCE = {torch.float32: 1e-5, torch.bfloat16: 2e-2}


def close(actual: torch.Tensor, expected: torch.Tensor, tol: float) -> None:
    """Equal up to `tol` times the largest expected magnitude."""
    err = (actual.float() - expected.float()).abs().max().item()
    assert err <= tol * expected.float().abs().max().item(), err


def inputs(N: int, H: int, K: int, M: int, dtype: torch.dtype, seed: int = 0, batch_rows: int = 0):
    """Random q [N,H,48], kv [M,48] (r = 32), idx [N,K], valid [N,K]. Row 1 has a single valid key,
    row 2 (if any) only its last; with `batch_rows` query n reads rows of its own block of kv."""
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(N, H, 48, generator=g).to(DEVICE, dtype).requires_grad_()
    kv = torch.randn(M, 48, generator=g).to(DEVICE, dtype).requires_grad_()
    if batch_rows:
        idx = torch.randint(0, batch_rows, (N, K), generator=g) + torch.arange(N)[:, None] * batch_rows
    else:
        idx = torch.randint(0, M, (N, K), generator=g)
    valid = torch.rand(N, K, generator=g) < 0.7
    valid[:, 0] = True
    if N > 1:
        valid[1] = False
        valid[1, K // 2] = True
    if N > 2:
        valid[2] = False
        valid[2, -1] = True
    return q, kv, idx.to(DEVICE), valid.to(DEVICE)


def grads(out: torch.Tensor, q: torch.Tensor, kv: torch.Tensor, seed: int = 1):
    g = torch.randn(out.shape, generator=torch.Generator().manual_seed(seed)).to(out)
    return torch.autograd.grad(out, (q, kv), g)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize(
    "N,H,K,M,batch_rows",
    [
        (4, 4, 37, 20, 0),  # prefill: K not a tile multiple, many queries reading the same rows
        (3, 4, 16, 3 * 24, 24),  # decoding: batch 3, one query each, its own sequence's rows
        (3, 18, 20, 9, 0),  # two head blocks: key mass summed across programs
    ],
)
def test_matches_twin(dtype, N, H, K, M, batch_rows):
    q, kv, idx, valid = inputs(N, H, K, M, dtype, batch_rows=batch_rows)
    out, mass = sparse_mla(q, kv, idx, valid, scale=0.2, r=32, **TINY)
    ref_out, ref_mass = sparse_mla_ref(q, kv, idx, valid, scale=0.2, r=32)
    assert out.dtype == dtype and mass.dtype == torch.float32 and not mass.requires_grad
    tol = TOLERANCE[dtype]
    close(out, ref_out, tol)
    close(mass, ref_mass, tol)
    assert (mass[~valid] == 0).all()
    for got, want in zip(grads(out, q, kv), grads(ref_out, q, kv), strict=True):
        close(got, want, tol)


@pytest.mark.parametrize("dtype,H,K", [(torch.float32, 4, 37), (torch.bfloat16, 18, 40)])
def test_split_forward_matches_twin(monkeypatch, dtype, H, K):
    """Few queries (decoding) split their keys between programs: with 12 multiprocessors, 3 queries
    of one head block take 3 splits of 16 keys (the last partial), of two head blocks 2 of 32. Row 1
    has one valid key and row 2 only its last, so some splits have none; the join takes 16 value
    columns a program (two blocks). Out, the log-sum-exp (as the unsplit kernel's) and the gradients
    through it equal the twin's."""
    monkeypatch.setattr(kernels, "multiprocessors", lambda device: 12)
    monkeypatch.setattr(kernels, "COMBINE_COLUMNS", 16)
    calls = []
    split_forward = kernels._split_forward
    monkeypatch.setattr(kernels, "_split_forward", lambda *a: calls.append(a[-1]) or split_forward(*a))
    q, kv, idx, valid = inputs(3, H, K, 30, dtype, seed=8)
    out, mass = sparse_mla(q, kv, idx, valid, scale=0.2, r=32, mass=False, **TINY)
    assert calls == [16 if H == 4 else 32] and mass is None
    ref_out, _ = sparse_mla_ref(q, kv, idx, valid, scale=0.2, r=32)
    tol = TOLERANCE[dtype]
    close(out, ref_out, tol)
    for got, want in zip(grads(out, q, kv), grads(ref_out, q, kv), strict=True):
        close(got, want, tol)
    tiles = [*TINY["forward_tiles"], *[16] * 12]
    args = (q.detach(), kv.detach(), idx, valid, 0.2, 32, False, False, tiles, False)
    whole = kernels._forward(*args, False)
    torch.testing.assert_close(kernels._forward(*args, True)[1], whole[1], rtol=1e-4, atol=1e-4)


def _gluon_twin(q, kv, idx, valid, scale_log2, r):
    """What the Gluon forward returns, in torch: out (NaN, 0/0, for a query without a valid key) and
    the log-sum-exp in log2 units (-inf there)."""
    rows = kv[idx].float()  # [N,K,R]
    s = torch.einsum("nhr,nkr->nhk", q.float(), rows) * scale_log2
    s = s.masked_fill(~valid[:, None], float("-inf"))
    m = s.amax(-1, keepdim=True)
    p = torch.exp2(s - m.clamp_min(-1e30))
    total = p.sum(-1, keepdim=True)
    out = (p @ rows[..., :r]) / total
    return out.to(q.dtype), (m + torch.log2(total)).squeeze(-1)


@pytest.mark.parametrize("N", [1, 3])
def test_gluon_split_forward_joins_its_runs(monkeypatch, N):
    """The Gluon forward's split path (`_hopper_split_forward`, checked here with a torch stand-in for
    the Gluon kernel, which has no interpreter): keys padded to whole runs of 16, each run a query of
    its own, joined by `_combine_kernel`. Row 1 has one valid key and row 2 only its last, so whole
    runs hold none (their NaN parts are not read): out and the log-sum-exp equal the unsplit twin's."""
    monkeypatch.setattr(kernels, "hopper_forward", _gluon_twin)
    monkeypatch.setattr(kernels, "COMBINE_VALUES", 64)  # 4 runs: 16 value columns a join program
    q, kv, idx, valid = inputs(3, 4, 40, 30, torch.float32, seed=8)
    q, idx, valid = q[:N].detach(), idx[:N], valid[:N]
    out, lse = kernels._hopper_split_forward(q, kv.detach(), idx, valid, 0.2, 32, 16)
    want_out, want_lse = _gluon_twin(q, kv.detach(), idx, valid, 0.2 * kernels.LOG2E, 32)
    close(out, want_out, 1e-5)
    torch.testing.assert_close(lse, want_lse, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(
    "N,K,path",
    [(1, 2048, ("triton", 64)), (8, 2048, ("triton", 128)), (32, 2048, ("gluon", 1024)),
     (1, 131073, ("gluon", 1024)), (32, 131073, ("gluon", 32896)), (132, 2048, ("whole", 2048))],
)  # fmt: skip
def test_gluon_runs_take_the_long_splits(monkeypatch, N, K, path):
    """On an H200 where the Gluon forward applies, decoding's split takes the Gluon runs where Triton's
    split programs would read HOPPER_SPLIT_FROM keys or more (DSA's 2,048 keys at 32 queries, a 128K
    cache at any batch), in runs of at least HOPPER_RUN_MIN keys, and Triton's split otherwise; a
    prefill's queries fill the GPU unsplit."""
    taken = []
    monkeypatch.setattr(kernels, "multiprocessors", lambda device: 132)
    monkeypatch.setattr(kernels, "hopper_forward_applies", lambda *a, **k: True)
    result = lambda q: (q.new_zeros(q.shape[0], 64, 512), q.new_zeros(q.shape[0], 64))  # noqa: E731
    monkeypatch.setattr(kernels, "_split_forward", lambda q, *a: taken.append(("triton", a[-1])) or result(q))
    monkeypatch.setattr(
        kernels, "_hopper_split_forward", lambda q, *a: taken.append(("gluon", a[-1])) or result(q)
    )
    monkeypatch.setattr(kernels, "hopper_forward", lambda q, *a: taken.append(("whole", K)) or result(q))
    q, kv = torch.zeros(N, 64, 576), torch.zeros(8, 576)
    idx, valid = torch.zeros(N, K, dtype=torch.long), torch.ones(N, K, dtype=torch.bool)
    kernels._forward(
        q, kv, idx, valid, 0.1, 512, False, False, [*kernels.FORWARD_TILES, *[16] * 12], True, True
    )
    assert taken == [path]


def test_split_keys_fill_the_multiprocessors():
    """On an H200 (132 multiprocessors) at GLM-5's decoding shape: one query takes 32 programs of
    one 64-key tile, 8 queries 16 of two; a prefill's queries fill the GPU and are not split."""
    tiles = kernels.FORWARD_TILES
    assert kernels.split_keys(1, 64, 2048, tiles, 132) == 64
    assert kernels.split_keys(8, 64, 2048, tiles, 132) == 128
    assert kernels.split_keys(67, 64, 2048, tiles, 132) == 2048
    assert kernels.split_keys(1, 64, 40, tiles, 132) == 40  # one key tile: nothing to split
    assert kernels.split_keys(0, 64, 2048, tiles, 132) == 2048  # an empty batch
    with pytest.raises(ValueError, match="multiple of the 64-key tile"):
        kernels._split_forward(*(torch.empty(0),) * 4, 0.1, 512, tiles, 96)


@pytest.mark.parametrize("dtype,H", [(torch.float32, 4), (torch.float32, 18), (torch.bfloat16, 4)])
def test_backward_in_chunks(monkeypatch, dtype, H):
    """The backward's P and dS buffer holds 2 queries, so 5 queries take three chunks (the last
    partial): the same gradients as the twin's."""
    monkeypatch.setattr(kernels, "SPARSE_BACKWARD_BYTES", 2 * 2 * H * 37 * dtype.itemsize)
    assert kernels.backward_chunk(H, 37, dtype) == 2
    q, kv, idx, valid = inputs(5, H, 37, 20, dtype, seed=5)
    out, _ = sparse_mla(q, kv, idx, valid, scale=0.2, r=32, **TINY)
    ref_out, _ = sparse_mla_ref(q, kv, idx, valid, scale=0.2, r=32)
    for got, want in zip(grads(out, q, kv), grads(ref_out, q, kv), strict=True):
        close(got, want, TOLERANCE[dtype])


@pytest.mark.parametrize("dtype,H,mass", [(torch.float32, 4, True), (torch.float32, 18, False),
                                          (torch.bfloat16, 4, True)])  # fmt: skip
def test_kept_probabilities(monkeypatch, dtype, H, mass):
    """`keep_probs`: the forward writes P for the backward, which skips recomputing it; with or
    without the key mass, over several head blocks, in backward chunks of 2 queries: the twin's
    outputs and gradients, and P itself is the twin's softmax."""
    monkeypatch.setattr(kernels, "SPARSE_BACKWARD_BYTES", 2 * H * 37 * dtype.itemsize)
    assert kernels.backward_chunk(H, 37, dtype, recompute=False) == 2
    q, kv, idx, valid = inputs(5, H, 37, 20, dtype, seed=6)
    out, key_mass = sparse_mla(q, kv, idx, valid, scale=0.2, r=32, mass=mass, keep_probs=True, **TINY)
    ref_out, ref_mass = sparse_mla_ref(q, kv, idx, valid, scale=0.2, r=32)
    tol = TOLERANCE[dtype]
    close(out, ref_out, tol)
    assert (key_mass is None) != mass
    if mass:
        close(key_mass, ref_mass, tol)
    for got, want in zip(grads(out, q, kv), grads(ref_out, q, kv), strict=True):
        close(got, want, tol)
    tiles = [*TINY["forward_tiles"], *(x for t in TINY["backward_tiles"] for x in t)]
    args = (q.detach(), kv.detach(), idx, valid, 0.2, 32)
    kept = kernels._forward(*args, mass, True, tiles, False, False)[3]
    scores = torch.einsum("nhr,nkr->nhk", q.detach().float(), kv.detach().float()[idx]) * 0.2
    probs = scores.masked_fill(~valid[:, None], float("-inf")).softmax(-1)
    assert kept.shape == probs.shape and kept.dtype == dtype
    close(kept, probs, tol)


def test_backward_materialises_no_gradient_of_the_side_outputs():
    """The forward's other outputs (log-sum-exp, key mass, kept P) take no gradient, and autograd must
    not fill zeros for them before the backward: at 64K queries on GLM-5's shape a zero P is another
    17 GB (measured on an H200 before the fix: 113.6 GB against an estimate of 97.6)."""
    from torch.utils._python_dispatch import TorchDispatchMode

    class Shapes(TorchDispatchMode):
        def __init__(self) -> None:
            super().__init__()
            self.seen: list[tuple[int, ...]] = []

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            out = func(*args, **(kwargs or {}))
            if isinstance(out, torch.Tensor):
                self.seen.append(tuple(out.shape))
            return out

    q, kv, idx, valid = inputs(5, 4, 37, 20, torch.float32)
    out, _ = sparse_mla(q, kv, idx, valid, scale=0.2, r=32, keep_probs=True, **TINY)
    with Shapes() as shapes:
        out.sum().backward()
    assert q.grad is not None  # the backward ran
    assert (5, 4, 37) not in shapes.seen and (5, 37) not in shapes.seen, shapes.seen


def test_matches_gathered_attention():
    """The model's torch path: same output and gradients; key mass = its probabilities summed over heads."""
    q, kv, idx, valid = inputs(4, 4, 21, 12, torch.float32)
    out, mass = sparse_mla(q, kv, idx, valid, scale=0.3, r=32, **TINY)
    ref_out, probs = gathered_attention(q, kv, idx, valid, 0.3, 32)
    close(out, ref_out, 1e-5)
    close(mass, probs.sum(1), 1e-5)
    for got, want in zip(grads(out, q, kv), grads(ref_out, q, kv), strict=True):
        close(got, want, 1e-5)


def test_without_mass():
    q, kv, idx, valid = inputs(3, 4, 16, 10, torch.float32)
    out, mass = sparse_mla(q, kv, idx, valid, scale=0.2, r=32, mass=False, **TINY)
    assert mass is None
    close(out, sparse_mla_ref(q, kv, idx, valid, scale=0.2, r=32)[0], 1e-5)


def autocast_step(attend, backward_inside: bool):
    """The model's pattern: q from a projection under bf16 autocast, fp32 latents, the output
    projected again; backward inside or after the autocast context. Returns leaf gradients."""
    g = torch.Generator().manual_seed(2)
    x = torch.randn(4, 4, 40, generator=g).to(DEVICE).requires_grad_()
    w = (0.15 * torch.randn(40, 48, generator=g)).to(DEVICE).requires_grad_()
    kv = torch.randn(10, 48, generator=g).to(DEVICE).requires_grad_()
    w_out = torch.randn(32, 8, generator=g).to(DEVICE).requires_grad_()
    idx = torch.randint(0, 10, (4, 12), generator=g).to(DEVICE)
    valid = torch.ones(4, 12, dtype=torch.bool, device=DEVICE)
    with torch.autocast(DEVICE, dtype=torch.bfloat16):
        out = attend(x @ w, kv, idx, valid)[0]
        loss = (out @ w_out).float().square().sum()
        if backward_inside:
            loss.backward()
    if not backward_inside:
        loss.backward()
    return [t.grad for t in (x, w, kv, w_out)]


@pytest.mark.parametrize("backward_inside", [True, False])
def test_autocast(backward_inside):
    got = autocast_step(lambda *a: sparse_mla(*a, scale=0.2, r=32, **TINY), backward_inside)

    def twin(*args):  # the twin in fp32 from the same bf16 q, not in autocast's bf16 products
        with torch.autocast(DEVICE, enabled=False):
            return sparse_mla_ref(*args, scale=0.2, r=32)

    want = autocast_step(twin, backward_inside)
    for a, b in zip(got, want, strict=True):
        assert a.dtype == torch.float32
        close(a, b, 2e-2)


def test_gathered_attention_backward_inside_autocast():
    """The crash reported in issue 16: fp32 q (a concatenation of bf16 and fp32 parts promotes to
    fp32) under autocast, backward inside the context, where the backward's products come out in
    bf16 while its buffers were fp32. The backward now runs with autocast disabled."""
    g = torch.Generator().manual_seed(3)
    q = torch.randn(4, 4, 48, generator=g).to(DEVICE).requires_grad_()
    kv = torch.randn(10, 48, generator=g).to(DEVICE).requires_grad_()
    idx = torch.randint(0, 10, (4, 12), generator=g).to(DEVICE)
    with torch.autocast(DEVICE, dtype=torch.bfloat16):
        out, _ = gathered_attention(q, kv, idx, torch.ones_like(idx, dtype=torch.bool), 0.2, 32)
        (out.float() @ torch.ones(32, 8, device=DEVICE)).sum().backward()


def test_flop_count():
    N, H, K, M = 3, 4, 20, 9
    q, kv, idx, valid = inputs(N, H, K, M, torch.float32)
    with FlopCounterMode(display=False) as counter:
        out, _ = sparse_mla(q, kv, idx, valid, scale=0.2, r=32, **TINY)
    assert counter.get_total_flops() == forward_flops(N, K, H, 48, 32) == N * K * 2 * H * (2 * 32 + 16)
    with FlopCounterMode(display=False) as counter:
        out.sum().backward()
    assert counter.get_total_flops() == backward_flops(N, K, H, 48, 32) == N * K * 2 * H * (5 * 32 + 3 * 16)
    out, _ = sparse_mla(q, kv, idx, valid, scale=0.2, r=32, keep_probs=True, **TINY)
    with FlopCounterMode(display=False) as counter:  # P kept from the forward: no q . k again
        out.sum().backward()
    kept = backward_flops(N, K, H, 48, 32, recompute=False)
    assert counter.get_total_flops() == kept == N * K * 2 * H * (4 * 32 + 2 * 16)


def test_fake_tensors():
    """The meta implementation gives shapes and dtypes without running a kernel (torch.compile, estimates)."""
    from torch._subclasses.fake_tensor import FakeTensorMode

    with FakeTensorMode():
        q, kv = torch.empty(7, 64, 576, dtype=torch.bfloat16), torch.empty(9, 576)
        idx, valid = torch.zeros(7, 2048, dtype=torch.long), torch.ones(7, 2048, dtype=torch.bool)
        out, mass = sparse_mla(q, kv, idx, valid, scale=0.1, r=512)
    assert out.shape == (7, 64, 512) and out.dtype == torch.bfloat16
    assert mass.shape == (7, 2048) and mass.dtype == torch.float32


def test_rejects_mismatched_shapes():
    q, kv, idx, valid = inputs(2, 4, 16, 10, torch.float32)
    with pytest.raises(ValueError, match="0 < r < R"):
        sparse_mla(q, kv, idx, valid, scale=0.2, r=48)
    with pytest.raises(ValueError, match="must be"):
        sparse_mla(q, kv, idx, valid[:, :8], scale=0.2, r=32)


@pytest.mark.skipif(DEVICE != "cuda", reason="GLM-5's shape with the default tiles needs a GPU")
@pytest.mark.parametrize(
    "forward_tiles,backward_tiles",
    kernels.candidate_pairs(),
    ids=str,
)
def test_glm5_shape_on_gpu(forward_tiles, backward_tiles):
    """H=64, R=576, r=512, K=2048 with every candidate of the forward and of the backward, bf16."""
    N, H, K, M = 64, 64, 2048, 4096
    g = torch.Generator().manual_seed(4)
    q = torch.randn(N, H, 576, generator=g).to(DEVICE, torch.bfloat16).requires_grad_()
    kv = torch.randn(M, 576, generator=g).to(DEVICE, torch.bfloat16).requires_grad_()
    idx = torch.randint(0, M, (N, K), generator=g).to(DEVICE)
    valid = (torch.rand(N, K, generator=g) < 0.9).to(DEVICE)
    tiles = dict(forward_tiles=forward_tiles, backward_tiles=backward_tiles)
    out, mass = sparse_mla(q, kv, idx, valid, scale=576**-0.5, r=512, **tiles)
    ref_out, ref_mass = sparse_mla_ref(q, kv, idx, valid, scale=576**-0.5, r=512)
    close(out, ref_out, 2e-2)
    close(mass, ref_mass, 2e-2)
    for got, want in zip(grads(out, q, kv), grads(ref_out, q, kv), strict=True):
        close(got, want, 2e-2)


COMPILE_FORWARD = """
from glmlab.kernels import sparse_mla as kernels
from glmlab.kernels.hopper import compile_for_hopper

pointers = dict(q="bf16", kv="bf16", idx="i64", valid="i1", out="bf16", lse="fp32", mass="fp32", probs="fp16",
                maxes="fp32", kept="bf16")
signature = {f"{name}_ptr": f"*{kind}" for name, kind in pointers.items()}
signature |= dict.fromkeys(["N", "H", "K", "R", "r"], "i32") | {"scale_log2": "fp32"}
tiles = kernels.FORWARD_TILES
constants = dict(BLOCK_H=tiles.block_h, BLOCK_K=tiles.block_k, BLOCK_V=512, BLOCK_P=64, MASS=False)
constants |= dict(KEEP=False, MASS_TILES=4, ONE_HEAD_BLOCK=True, PRECISION="tf32")
kernel = compile_for_hopper(kernels._forward_kernel, signature, constants, num_warps=tiles.num_warps,
                            num_stages=tiles.num_stages)
print(kernel.asm["ttgir"])
"""


def test_forward_splits_scores_between_warpgroups():
    """Compiled for an H200 (sm_90a; no GPU needed, in a process without Triton's interpreter)
    with the default tiles, every product of the forward splits its 64 heads x keys between the two
    warpgroups ([4, 2] warps): without the `if` in `_masked`, Triton gives the score product
    [8, 1] and each warpgroup computes all of it."""
    pytest.importorskip("triton.backends.nvidia")
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    ttgir = subprocess.run(
        [sys.executable, "-c", COMPILE_FORWARD], env=env, capture_output=True, text=True, check=True
    )
    warps = re.findall(r"nvidia_mma<\{versionMajor = 3.*warpsPerCTA = \[(\d+), (\d+)\]", ttgir.stdout)
    assert len(warps) >= 2 and set(warps) == {("4", "2")}, warps


HOPPER = DEVICE == "cuda" and torch.cuda.get_device_capability()[0] == 9


@pytest.mark.skipif(not HOPPER, reason="the Gluon forward runs only on a Hopper GPU")
@pytest.mark.parametrize(
    "H,K,heads_first",
    [(64, 2048, False), (128, 200, False), (64, 64, False), (64, 40, False), (64, 200, True)],
)
def test_hopper_forward_matches_triton_and_twin(H, K, heads_first):
    """The Gluon forward (glmlab/kernels/sparse_mla_hopper.py) against the Triton kernel and the
    torch twin at GLM-5's latent width: one and two head blocks, K a multiple of the 64-key tile or
    not, invalid keys (row 1 a single one), out and the log-sum-exp; `heads_first`: q a [N,H,R]
    view of an [H,N,R] buffer, as MLA passes it at batch 1."""
    N, M = 96, 3000
    g = torch.Generator().manual_seed(5)
    q = torch.randn(N, H, 576, generator=g).to(DEVICE, torch.bfloat16)
    if heads_first:
        q = q.transpose(0, 1).contiguous().transpose(0, 1)
    kv = torch.randn(M, 576, generator=g).to(DEVICE, torch.bfloat16)
    idx = torch.randint(0, M, (N, K), generator=g).to(DEVICE)
    valid = (torch.rand(N, K, generator=g) < 0.8).to(DEVICE)
    valid[:, 0], valid[1] = True, False
    valid[1, K // 2] = True
    assert kernels.hopper_forward_applies(q, kv, 512, mass=False, keep_probs=False)
    args = (kv, idx, valid, 576**-0.5, 512, False, False, [*kernels.FORWARD_TILES, *[16] * 12])
    out, lse, *_ = kernels._forward(q, *args, True, False)
    triton_out, triton_lse, *_ = kernels._forward(q.contiguous(), *args, False, False)  # [N,H,R] rows
    ref_out, _ = sparse_mla_ref(q, kv, idx, valid, scale=576**-0.5, r=512)
    close(out, ref_out, 2e-2)
    close(out, triton_out, 2e-2)
    torch.testing.assert_close(lse, triton_lse, rtol=1e-4, atol=1e-4)


def test_hopper_forward_applies_only_where_it_can():
    """The Gluon forward takes bf16 prefill calls at its shapes on a Hopper GPU, nothing else."""
    q, kv = torch.zeros(4, 64, 576, dtype=torch.bfloat16), torch.zeros(10, 576, dtype=torch.bfloat16)

    def applies(q: torch.Tensor, kv: torch.Tensor = kv, **flags: bool) -> bool:
        return kernels.hopper_forward_applies(q, kv, 512, **({"mass": False, "keep_probs": False} | flags))

    assert not applies(q)  # CPU tensors
    if HOPPER:
        q, kv = q.cuda(), kv.cuda()
        assert applies(q, kv)
        assert not applies(q, kv, mass=True)
        assert not applies(q, kv, keep_probs=True)
        assert not applies(q.float(), kv.float())
        assert not applies(q, kv.float())
        assert not applies(q[:, :48], kv)
        assert not applies(q[:, :, :560], kv[:, :560])
        wide_rope = torch.zeros(4, 64, 640, dtype=torch.bfloat16, device="cuda")  # beyond shared memory
        assert not applies(wide_rope, kv)
        narrow_rope = torch.zeros(4, 64, 544, dtype=torch.bfloat16, device="cuda")  # its probabilities' room
        assert not applies(narrow_rope, kv)
        odd_stride = torch.zeros(4, 64, 584, dtype=torch.bfloat16, device="cuda")[..., :576]  # 16-byte copies
        assert not applies(odd_stride, kv)
        assert not applies(q, kv.view(-1)[4:-572].view(9, 576))  # kv 8 bytes past a 16-byte boundary


@pytest.mark.skipif(not HOPPER, reason="the Gluon forward runs only on a Hopper GPU")
def test_a_misaligned_kv_takes_the_triton_kernel():
    """kv starting 8 bytes past a 16-byte boundary (a view into a larger buffer): the Gluon kernel,
    whose copies need 16-byte alignment, is not tried; the Triton kernel's result equals the twin's."""
    N, H, K, M = 8, 64, 128, 300
    g = torch.Generator().manual_seed(7)
    q = torch.randn(N, H, 576, generator=g).to(DEVICE, torch.bfloat16)
    base = torch.randn(M * 576 + 4, generator=g).to(DEVICE, torch.bfloat16)
    kv = base[4:].view(M, 576)
    assert kv.data_ptr() % 16 == 8
    idx = torch.randint(0, M, (N, K), generator=g).to(DEVICE)
    valid = torch.ones(N, K, dtype=torch.bool, device=DEVICE)
    out, _ = sparse_mla(q, kv, idx, valid, scale=576**-0.5, r=512, mass=False, split=False)
    ref_out, _ = sparse_mla_ref(q, kv, idx, valid, scale=576**-0.5, r=512)
    close(out, ref_out, 2e-2)


@pytest.mark.skipif(not HOPPER, reason="the Gluon forward runs only on a Hopper GPU")
def test_sparse_mla_with_a_heads_first_q_trains_through_the_gluon_forward():
    """`sparse_mla` on a heads-first q (a [N,H,R] view of an [H,N,R] buffer) that takes a gradient,
    without the key mass: the Gluon forward reads it as it is, the Triton backward a contiguous
    copy; out and both gradients equal the torch twin's."""
    N, H, K, M = 64, 64, 256, 1000
    g = torch.Generator().manual_seed(6)
    base = torch.randn(H, N, 576, generator=g).to(DEVICE, torch.bfloat16)
    kv = torch.randn(M, 576, generator=g).to(DEVICE, torch.bfloat16).requires_grad_()
    idx = torch.randint(0, M, (N, K), generator=g).to(DEVICE)
    valid = (torch.rand(N, K, generator=g) < 0.8).to(DEVICE)
    valid[:, 0] = True
    q = base.transpose(0, 1).requires_grad_()
    out, mass = sparse_mla(q, kv, idx, valid, scale=576**-0.5, r=512, mass=False, split=False)
    ref_out, _ = sparse_mla_ref(q, kv, idx, valid, scale=576**-0.5, r=512)
    assert mass is None
    close(out, ref_out, 2e-2)
    for got, want in zip(grads(out, q, kv), grads(ref_out, q, kv), strict=True):
        close(got, want, 2e-2)


@pytest.mark.skipif(DEVICE != "cuda", reason="GLM-5's decoding shape on a GPU")
@pytest.mark.parametrize("N", [1, 8])
@pytest.mark.parametrize("K", [2048, 9000])
@pytest.mark.parametrize("hopper", [True, False])
def test_split_forward_at_glm5_decoding_shape(N, K, hopper):
    """Decoding rows at GLM-5's shape (64 heads, 576-wide latents) take the split forward the rule
    picks (Triton's, or with `hopper` the Gluon forward's runs where they pay), and with `hopper` the
    Gluon runs of 1,024 keys too: DSA's K = 2048, and a dense-like K = 9000 (not a multiple of a run)
    whose last 3,000 keys are invalid, as the slots past a row's position are, so that whole runs
    hold no valid key. out equals the twin's and the unsplit kernel's, the log-sum-exp the unsplit
    one's."""
    H, M = 64, 12000
    g = torch.Generator().manual_seed(9)
    q = torch.randn(N, H, 576, generator=g).to(DEVICE, torch.bfloat16)
    kv = torch.randn(M, 576, generator=g).to(DEVICE, torch.bfloat16)
    idx = torch.randint(0, M, (N, K), generator=g).to(DEVICE)
    valid = (torch.rand(N, K, generator=g) < 0.8).to(DEVICE)
    valid[:, 0] = True
    if K > 2048:
        valid[:, K - 3000 :] = False
    assert kernels.split_keys(N, H, K, kernels.FORWARD_TILES, kernels.multiprocessors(q.device)) < K
    args = (q, kv, idx, valid, 576**-0.5, 512, False, False, [*kernels.FORWARD_TILES, *[16] * 12], hopper)
    out, lse, *_ = kernels._forward(*args, True)
    whole_out, whole_lse, *_ = kernels._forward(*args, False)
    ref_out, _ = sparse_mla_ref(q, kv, idx, valid, scale=576**-0.5, r=512)
    runs = [kernels._hopper_split_forward(q, kv, idx, valid, 576**-0.5, 512, 1024)] if hopper else []
    for got, got_lse in [(out, lse), *runs]:
        close(got, ref_out, 2e-2)
        close(got, whole_out, 2e-2)
        torch.testing.assert_close(got_lse, whole_lse, rtol=1e-4, atol=1e-4)


COMPILE_HOPPER_FORWARD = """
from glmlab.kernels import sparse_mla_hopper as h
from glmlab.kernels.hopper import compile_for_hopper, resources

pointers = dict(q="bf16", kv="bf16", idx="i64", valid="i1", out="bf16", lse="fp32")
signature = {f"{name}_ptr": f"*{kind}" for name, kind in pointers.items()}
signature |= dict.fromkeys(["stride_qn", "stride_qh", "H", "K", "R"], "i32") | {"scale_log2": "fp32"}
constants = dict(r=512, P=64, BH=h.BLOCK_H, BK=h.BLOCK_K, REGS=h.REGISTERS)
kernel = compile_for_hopper(h._forward_kernel, signature, constants, num_warps=4,
                            divisible=[name for name in signature if name != "scale_log2"])
res = resources(kernel)
print(res.shared, res.spill_stores)
print(kernel.asm["ptx"])
"""


def test_hopper_forward_gives_each_warpgroup_whole_key_tiles():
    """Compiled for an H200 on the CPU, the Gluon forward fits in a block's shared memory (232,448
    bytes) without spilling; it runs as two warpgroups whose score products each take a whole
    64-key tile (64 x 64 wgmma, none of 32 keys), and whose copies signal their arrival through
    mbarriers."""
    pytest.importorskip("triton.backends.nvidia")
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    command = [sys.executable, "-c", COMPILE_HOPPER_FORWARD]
    done = subprocess.run(command, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]
    report = done.stdout
    shared, spills = map(int, report.splitlines()[0].split())
    assert shared <= 232448 and spills == 0, (shared, spills)
    assert ".reqntid 256" in report and "setmaxnreg" in report  # two warp-specialised warpgroups
    assert "wgmma.mma_async.sync.aligned.m64n64k16.f32.bf16.bf16" in report
    assert "m64n32k16" not in report
    assert "cp.async.mbarrier.arrive.noinc" in report
