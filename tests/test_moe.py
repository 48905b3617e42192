"""Routed experts: the grouped (CUDA) and looped (CPU) implementations equal a reference that runs
every expert on every token, in outputs and gradients; the grouped layout's sizes stay on the device."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from glmlab.config import load_config
from glmlab.model.moe import GROUP_ALIGN, MoE, Routing

pytestmark = pytest.mark.usefixtures("one_thread")  # conftest: tiny shapes on one thread

CUDA = torch.cuda.is_available()


def every_expert(moe: MoE, x: torch.Tensor, routing: Routing) -> torch.Tensor:
    """Reference: every expert on every token, weighted by its gate for the token (0 if unchosen)."""
    experts = moe.experts
    dense_gates = torch.zeros(x.shape[0], experts.gate_up_proj.shape[0], dtype=routing.gates.dtype,
                              device=x.device).scatter(1, routing.indices, routing.gates)  # fmt: skip
    out = torch.zeros_like(x)
    for e, (gate_up, down) in enumerate(zip(experts.gate_up_proj, experts.down_proj, strict=True)):
        gate, up = F.linear(x, gate_up).chunk(2, dim=-1)
        out = out + F.linear(F.silu(gate) * up, down) * dense_gates[:, e : e + 1].to(x.dtype)
    return out


def make_moe(*overrides: str, device: str = "cpu", seed: int = 0) -> MoE:
    """A seeded MoE layer of glm5-tiny's shape family with random weights and selection biases."""
    cfg = load_config("glm5-tiny", ["hidden_size=64", "moe_intermediate_size=24", "n_routed_experts=8",
                                    "num_experts_per_tok=3", *overrides]).model  # fmt: skip
    torch.manual_seed(seed)
    moe = MoE(cfg).to(device)
    with torch.no_grad():
        for p in moe.parameters():
            p.normal_(0.0, 0.2)
        moe.gate.e_score_correction_bias.normal_(0.0, 0.1)
    return moe


def outputs_and_grads(moe: MoE, impl, x: torch.Tensor) -> list[torch.Tensor]:
    """The experts' output and the gradients of a fixed function of it for x, both expert
    weights and the router (through the gates)."""
    x = x.detach().requires_grad_()
    y = impl(x, moe.gate(x))
    wanted = [x, moe.experts.gate_up_proj, moe.experts.down_proj, moe.gate.weight]
    weights = torch.linspace(-1, 1, y.numel(), device=y.device).view_as(y)
    grads = torch.autograd.grad((y.float() * weights).sum(), wanted)
    return [y.detach(), *grads]


def assert_close(ours: list[torch.Tensor], reference: list[torch.Tensor], tol: float) -> None:
    names = ["output", "x", "gate_up_proj", "down_proj", "router"]
    for name, a, b in zip(names, ours, reference, strict=True):
        scale = b.float().abs().max().item()
        assert (a.float() - b.float()).abs().max().item() <= tol * scale, name


@pytest.mark.parametrize("impl", ["looped", "grouped"])
@pytest.mark.parametrize("overrides", [[], ["n_group=2", "topk_group=1"]])
def test_experts_equal_every_expert_reference(impl, overrides):
    moe = make_moe(*overrides)
    x = torch.randn(37, 64)  # 111 pairs: groups of every size, none a multiple of GROUP_ALIGN
    reference = outputs_and_grads(moe, lambda x, r: every_expert(moe, x, r), x)
    assert_close(outputs_and_grads(moe, getattr(moe.experts, impl), x), reference, 1e-5)


def test_grouped_experts_with_empty_experts():
    """Experts that receive no token (here all but three) leave empty groups in the layout."""
    moe = make_moe()
    with torch.no_grad():
        moe.gate.e_score_correction_bias.copy_(torch.tensor([0.0, 0, 9, 9, 0, 0, 9, 0]))
    x = torch.randn(5, 64)
    assert moe.gate(x).counts.tolist() == [0, 0, 5, 5, 0, 0, 5, 0]
    reference = outputs_and_grads(moe, lambda x, r: every_expert(moe, x, r), x)
    assert_close(outputs_and_grads(moe, moe.experts.grouped, x), reference, 1e-5)


def test_router_scores_in_fp32_under_bf16_autocast():
    """Autocast would run the router's product in bf16 and reorder near-equal affinities; the
    router's choice and gates are the fp32 ones under autocast too."""
    moe = make_moe("n_routed_experts=64", "num_experts_per_tok=8")
    x = torch.randn(256, 64)
    expected = moe.gate(x)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        routing = moe.gate(x)
    assert routing.affinity.dtype == torch.float32
    assert torch.equal(routing.affinity, expected.affinity) and torch.equal(routing.indices, expected.indices)


def test_grouped_experts_pad_a_width_grouped_mm_refuses():
    """Experts of width 12 (moe_granularity's 64 experts): a bf16 row of 12 is 24 bytes, which
    `torch._grouped_mm` refuses (rows must be multiples of 16 bytes); the grouped path pads the
    width with zeros and still equals the reference, outputs and gradients."""
    moe = make_moe("moe_intermediate_size=12")
    x = torch.randn(37, 64)
    reference = outputs_and_grads(moe, lambda x, r: every_expert(moe, x, r), x)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        ours = outputs_and_grads(moe, moe.experts.grouped, x)
    assert ours[2].shape == moe.experts.gate_up_proj.shape and ours[3].shape == moe.experts.down_proj.shape
    assert_close(ours, reference, 2e-2)


class _PoisonTail(torch.autograd.Function):
    """Rows from `end` on set to NaN: in the forward output (`out=True`) or in the gradient."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, end: torch.Tensor, out: bool) -> torch.Tensor:
        ctx.end, ctx.out = end, out
        x = x.clone()
        if out:
            x[int(end) :] = float("nan")
        return x

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        grad = grad.clone()
        if not ctx.out:
            grad[int(ctx.end) :] = float("nan")
        return grad, None, None


@pytest.mark.parametrize("impl", ["looped", "grouped", "grouped by pairs"])
def test_empty_slots_add_nothing_even_over_uninitialised_rows(monkeypatch, impl):
    """Expert parallelism's received rows: slots of index -1 (experts on other ranks) add nothing,
    in outputs and gradients. The grouped products leave the rows past the last group
    uninitialised, forward and in the input's gradient: here they are NaN, which must not leak (0 *
    NaN is NaN). Given the count of real pairs, the grouped buffers hold those pairs and their
    alignment padding alone."""
    real = torch._grouped_mm
    buffers = []

    def poisoned(a, b, *, offs):
        end = offs[-1]
        buffers.append(a.shape[0])
        return _PoisonTail.apply(real(_PoisonTail.apply(a, end, False), b, offs=offs), end, True)

    monkeypatch.setattr(torch, "_grouped_mm", poisoned)
    moe = make_moe()
    x = torch.randn(37, 64)
    drop = torch.rand(37, 3, generator=torch.Generator().manual_seed(1)) < 0.5  # about half the slots
    drop[5] = True  # a row with no expert here at all

    def with_empty_slots(x, routing):
        kept = torch.where(drop, -1, routing.indices)
        counts = torch.zeros(8, dtype=torch.int64).scatter_add_(0, kept[~drop], torch.ones_like(kept[~drop]))
        empty = Routing(indices=kept, gates=routing.gates, affinity=None, counts=counts)
        if impl == "looped":
            return moe.experts.looped(x, empty)
        pairs = int((~drop).sum()) if impl == "grouped by pairs" else None
        return moe.experts.grouped(x, empty, empty_slots=True, pairs=pairs)

    def reference(x, routing):
        gates = torch.where(drop, 0.0, routing.gates)  # a zero gate: the slot's expert adds nothing
        return every_expert(moe, x, Routing(routing.indices, gates, None, routing.counts))

    ours = outputs_and_grads(moe, with_empty_slots, x)
    assert all(torch.isfinite(t).all() for t in ours)
    assert_close(ours, outputs_and_grads(moe, reference, x), 1e-5)
    assert ours[0][5].abs().max() == 0
    if impl == "grouped by pairs":
        assert set(buffers) == {int((~drop).sum()) + 8 * (GROUP_ALIGN - 1)}


@pytest.mark.parametrize("grad", [True, False])
def test_grouped_layout_is_aligned_and_sized_on_the_device(monkeypatch, grad):
    """The grouped products see int32 offsets at multiples of GROUP_ALIGN, ending at a row count
    fixed by the shapes alone (so nothing is read back to the host); without gradients the pairs
    are packed (alignment 1): no padding rows, the same output."""
    moe = make_moe()
    x = torch.randn(37, 64)
    seen = []
    real = torch._grouped_mm

    def spy(a, b, *, offs):
        seen.append((a.shape[0], offs.clone()))
        return real(a, b, offs=offs)

    monkeypatch.setattr(torch, "_grouped_mm", spy)
    routing = moe.gate(x)
    with torch.set_grad_enabled(grad):
        y = moe.experts.grouped(x, routing)
    align = GROUP_ALIGN if grad else 1
    rows = 37 * 3 + 8 * (align - 1)
    for n, offs in seen:
        assert n == rows and offs.dtype == torch.int32 and offs[-1] == rows
        assert (offs[:-1] % align == 0).all()
        sizes = torch.diff(offs[:-1], prepend=offs.new_zeros(1))
        assert (sizes >= routing.counts[:-1]).all() and (sizes < routing.counts[:-1] + align).all()
    with torch.no_grad():
        torch.testing.assert_close(y, every_expert(moe, x, routing), rtol=1e-5, atol=1e-5)


def test_forward_picks_grouped_only_for_cuda_bf16(monkeypatch):
    moe = make_moe()
    called = []
    monkeypatch.setattr(moe.experts, "grouped", lambda x, r, **_: called.append("grouped"))
    monkeypatch.setattr(moe.experts, "looped", lambda x, r, **_: called.append("looped"))
    x = torch.randn(4, 64)
    moe.experts(x, moe.gate(x))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        moe.experts(x, moe.gate(x))
    assert called == ["looped", "looped"]
    # the rule the decoder's CUDA graphs follow too: CUDA, bf16, a hidden size of 16-byte rows
    from glmlab.model.moe import grouped_form

    assert grouped_form("cuda", torch.bfloat16, 64)
    assert not any(grouped_form(*a) for a in [("cpu", torch.bfloat16, 64), ("cuda", torch.float32, 64),
                                             ("cuda", torch.bfloat16, 60)])  # fmt: skip


@pytest.mark.skipif(not CUDA, reason="needs a CUDA device")
def test_grouped_experts_on_cuda_bf16_without_host_syncs():
    """On the GPU, under bf16 autocast: the grouped kernels equal the fp32 reference to bf16's
    precision, and forward and backward never wait for the device."""
    moe = make_moe(device="cuda")
    x = torch.randn(300, 64, device="cuda")
    reference = outputs_and_grads(moe, lambda x, r: every_expert(moe, x, r), x)
    with torch.autocast("cuda", dtype=torch.bfloat16):
        routing = moe.gate(x)
        torch.cuda.set_sync_debug_mode("error")
        try:
            y = moe.experts(x.requires_grad_(), routing)
            y.float().sum().backward()
            with torch.no_grad():  # the packed layout (decoding)
                packed = moe.experts(x, routing)
        finally:
            torch.cuda.set_sync_debug_mode("default")
        ours = outputs_and_grads(moe, moe.experts, x)
    assert_close(ours, reference, 2e-2)
    assert (packed.float() - reference[0]).abs().max().item() <= 2e-2 * reference[0].abs().max().item()


@pytest.mark.skipif(not CUDA, reason="needs a CUDA device")
def test_empty_slots_on_cuda_bf16_over_recycled_memory():
    """Expert parallelism's received rows on the GPU (bf16 autocast, the real grouped kernels): the
    caching allocator first holds NaN, which the rows past the last group then show; the empty
    slots still add nothing, outputs and gradients equal the reference, and nothing waits on the
    device."""
    moe = make_moe(device="cuda")
    x = torch.randn(300, 64, device="cuda")
    token = torch.arange(300, device="cuda")[:, None]

    def dropped(routing: Routing) -> torch.Tensor:  # by (token, expert), not by slot: autocast's
        return (token * 5 + routing.indices) % 3 == 0  # router may order a token's experts otherwise

    def with_empty_slots(x, routing):
        drop = dropped(routing)
        kept = torch.where(drop, -1, routing.indices)
        slots = torch.where(drop, 8, kept).reshape(-1)
        counts = torch.zeros(9, dtype=torch.int64, device="cuda")
        counts = counts.scatter_add_(0, slots, torch.ones_like(slots))[:8]
        return moe.experts(x, Routing(kept, routing.gates, None, counts), empty_slots=True)

    def reference(x, routing):
        gates = torch.where(dropped(routing), 0.0, routing.gates)
        return every_expert(moe, x, Routing(routing.indices, gates, None, routing.counts))

    expected = outputs_and_grads(moe, reference, x)
    torch.full((1 << 26,), float("nan"), device="cuda")  # freed at once: recycled NaN for what follows
    with torch.autocast("cuda", dtype=torch.bfloat16):
        routing = moe.gate(x)
        torch.cuda.set_sync_debug_mode("error")
        try:
            y = with_empty_slots(x.requires_grad_(), routing)
            y.float().sum().backward()
        finally:
            torch.cuda.set_sync_debug_mode("default")
        ours = outputs_and_grads(moe, with_empty_slots, x)
    assert all(torch.isfinite(t).all() for t in ours)
    assert_close(ours, expected, 2e-2)


@pytest.mark.skipif(not CUDA, reason="needs a CUDA device")
def test_compiled_grouped_experts_equal_eager_ones():
    """Inside a compiled layer the row moves run as custom ops (eager, their kernels are launched
    directly): the same outputs and gradients, forward and backward through Inductor."""
    moe = make_moe(device="cuda")
    x = torch.randn(300, 64, device="cuda")
    with torch.autocast("cuda", dtype=torch.bfloat16):
        eager = outputs_and_grads(moe, moe.experts, x)
        compiled = outputs_and_grads(moe, torch.compile(moe.experts, dynamic=False), x)
    assert_close(compiled, eager, 1e-2)
