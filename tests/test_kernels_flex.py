"""FlexAttention under DSA's top-k mask (glmlab/kernels/flex_masked.py) against its twin, SDPA with
the same boolean mask; where the plan runs it and what the calculator counts for it. On a CPU the
forward runs FlexAttention's unfused reference (it has no CPU backward); on a GPU the compiled
kernel, forward and gradients, and the whole model against dsa_impl=mask."""

from __future__ import annotations

import warnings

import pytest
import torch
import torch.nn.functional as F

from glmlab.accounting import flops_report
from glmlab.config import load_config
from glmlab.kernels.flex_masked import causal_block_mask, flex_masked_attention
from glmlab.plan import Call, attention_plan, layer_kinds

CUDA = torch.cuda.is_available()
DEVICE = "cuda" if CUDA else "cpu"


def _topk_mask(B: int, S: int, T: int, keep_share: float, seed: int) -> torch.Tensor:
    """[B,S,T]: a random subset of each query's visible keys (query s at position T-S+s), itself kept."""
    gen = torch.Generator().manual_seed(seed)
    pos = torch.arange(T - S, T)
    visible = torch.arange(T)[None, :] <= pos[:, None]
    keep = (torch.rand(B, S, T, generator=gen) < keep_share) & visible
    keep[:, torch.arange(S), pos] = True
    return keep


@pytest.mark.parametrize(
    ("S", "T", "share", "whole", "D", "Dv"),
    [(200, 200, 0.3, 0, 32, 16), (128, 128, 0.3, 0, 32, 16), (70, 300, 0.3, 0, 32, 16),
     (384, 384, 1.0, 0, 32, 16), (200, 200, 0.3, 72, 32, 16), (70, 300, 0.3, 40, 32, 16),
     (90, 90, 0.3, 90, 32, 16), (384, 384, 0.5, 128, 256, 256)],
    ids=["ragged", "block", "offset", "full-blocks", "whole-rows", "whole-rows-offset", "all-whole",
         "wide-heads"],
)  # fmt: skip
def test_flex_equals_masked_sdpa(S, T, share, whole, D, Dv):
    """Flex, and with `whole_rows` causal SDPA for the first queries (which keep every key they see:
    with an offset, S < T, Flex takes every query), against SDPA with the boolean mask; at glm5-1b's
    head widths (256) Flex runs with `WIDE_HEAD_TILES`, its own backward tiles."""
    B, H = 2, 3
    gen = torch.Generator().manual_seed(S + T)
    q, k = (torch.randn(B, H, n, D, generator=gen) for n in (S, T))
    v = torch.randn(B, H, T, Dv, generator=gen)
    keep = _topk_mask(B, S, T, share, seed=T)
    keep[:, :whole] = torch.arange(T)[None, :] <= torch.arange(T - S, T - S + whole)[:, None]
    ref = F.scaled_dot_product_attention(q, k, v, attn_mask=keep[:, None], scale=0.2)
    if CUDA:
        q, k, v, keep = (t.cuda().requires_grad_(t.is_floating_point()) for t in (q, k, v, keep))
    with warnings.catch_warnings():  # the CPU's unfused reference warns that it is not compiled
        warnings.simplefilter("ignore")
        out = flex_masked_attention(q, k, v, keep, scale=0.2, whole_rows=whole)
    torch.testing.assert_close(out.detach().cpu(), ref, atol=2e-5, rtol=1e-4)
    if CUDA:  # gradients against the twin's
        grads = torch.autograd.grad(out.square().sum(), (q, k, v))
        twins = [t.detach().clone().requires_grad_() for t in (q, k, v)]
        ref = F.scaled_dot_product_attention(*twins, attn_mask=keep[:, None], scale=0.2)
        for g, r in zip(grads, torch.autograd.grad(ref.square().sum(), twins), strict=True):
            torch.testing.assert_close(g, r, atol=1e-4, rtol=1e-3)


def test_block_mask_lists_the_causal_blocks():
    """Each query block lists every key block up to its last query's position, and no other; a
    block whose pairs are all kept is full (no mask read), the diagonal and ragged ones partial."""
    S, T = 300, 556  # queries at 256..555, blocks of 128
    causal = torch.arange(T)[None, :] <= torch.arange(T - S, T)[:, None]
    bm = causal_block_mask(causal[None].clone())
    partial, full = bm.kv_num_blocks[0, 0].tolist(), bm.full_kv_num_blocks[0, 0].tolist()
    listed = [(min(b * 128 + 127, S - 1) + T - S) // 128 + 1 for b in range(3)]
    assert [p + f for p, f in zip(partial, full, strict=True)] == listed == [3, 4, 5]
    # query block 0 (positions 256..383) is full on key blocks 0 and 1; block 2 (512..555) is ragged
    assert full == [2, 3, 0] and bm.full_kv_indices[0, 0, 1, :3].tolist() == [0, 1, 2]
    assert bm.kv_indices[0, 0, 0, :1].tolist() == [2]  # the diagonal block reads the mask
    # one pair dropped from a full block makes it partial
    sparse = causal.clone()
    sparse[5, 10] = False
    assert causal_block_mask(sparse[None]).full_kv_num_blocks[0, 0].tolist() == [1, 3, 0]


def test_full_blocks_are_all_kept_and_never_also_partial():
    """Per sequence of the batch: every full block is kept whole, partial and full lists are
    disjoint, and together they are the causal blocks (what the kernel trusts on a GPU; a CPU's
    reference reads the mask everywhere, so only this check covers the lists there)."""
    B, S, T, blk = 2, 512, 640, 128
    keep = _topk_mask(B, S, T, 0.5, seed=3)
    keep[0, :, :256] = torch.arange(256)[None, :] <= torch.arange(T - S, T)[:, None]  # whole blocks
    bm = causal_block_mask(keep)
    padded = keep.view(B, S // blk, blk, T // blk, blk)
    for b in range(B):
        for qb in range(S // blk):
            n_p, n_f = bm.kv_num_blocks[b, 0, qb].item(), bm.full_kv_num_blocks[b, 0, qb].item()
            partial = bm.kv_indices[b, 0, qb, :n_p].tolist()
            full = bm.full_kv_indices[b, 0, qb, :n_f].tolist()
            assert not set(partial) & set(full)
            assert sorted(partial + full) == list(range((qb * blk + blk - 1 + T - S) // blk + 1))
            assert all(bool(padded[b, qb, :, kb].all()) for kb in full)
            assert not any(bool(padded[b, qb, :, kb].all()) for kb in partial)
    assert bm.full_kv_num_blocks[0].sum() > bm.full_kv_num_blocks[1].sum()


def _plan(dsa_impl: str, *, labels: bool, device: str = "cuda", context: int = 1024):
    m = load_config("glm5-tiny", [f"dsa_impl={dsa_impl}", "index_topk=64"]).model
    call = Call(context, context, cache=False, labels=labels, dsa_dense=False, device=device)
    return attention_plan(m, layer_kinds(m)[-1], call)


def test_plan_runs_flex_where_it_can():
    flex = _plan("flex", labels=False)
    assert (flex.path, flex.flex, flex.full_square) == ("masked", True, False)
    assert _plan("mask", labels=False).full_square
    # with the indexer's KL: no explicit probabilities, the key mass in chunks of queries
    flex = _plan("flex", labels=True)
    assert flex.flex and flex.key_mass and not flex.probs and not flex.full_square
    # the indexer scores and selects with the Triton kernels (installed here): no [S,T] scores kept
    assert flex.kernel == "triton" and flex.score_chunks == ()
    assert flex.kl_chunks[-1][1] == 1024 and _plan("mask", labels=True).probs
    # no CPU backward: a CPU runs the masked reference
    assert not _plan("flex", labels=False, device="cpu").flex


def test_auto_trains_the_indexer_on_the_triton_path_at_short_context(monkeypatch):
    """`auto` on CUDA: the masked reference up to 4K keys, except where a layer trains its indexer
    in the sparse stage (Triton there at any context); not in the dense warm-up, not on a CPU."""
    from glmlab import plan as plan_module

    monkeypatch.setattr(plan_module, "triton_available", lambda: True)
    shared = ["index_topk=64", "num_hidden_layers=3", "indexer_types=[full,shared,full]"]
    m = load_config("glm5-tiny", shared).model
    kinds = layer_kinds(m)

    def path(kind, *, labels: bool, dense: bool = False, device: str = "cuda", context: int = 1024) -> tuple:
        call = Call(context, context, cache=False, labels=labels, dsa_dense=dense, device=device)
        p = attention_plan(m, kind, call)
        return p.path, p.kernel

    assert path(kinds[0], labels=True) == ("sparse", "triton")
    assert path(kinds[1], labels=True) == ("masked", "torch")  # IndexShare: no KL on this layer
    assert path(kinds[0], labels=False) == ("masked", "torch")
    assert path(kinds[0], labels=False, context=8192) == ("sparse", "triton")
    assert path(kinds[0], labels=True, dense=True) == ("dense", "torch")  # the warm-up
    assert path(kinds[0], labels=True, context=64) == ("dense", "torch")  # k keeps every key: not sparse
    assert path(kinds[0], labels=True, device="cpu") == ("sparse", "torch")  # gather


def test_auto_takes_flex_where_the_sparse_kernels_do_not_pay(monkeypatch):
    """`auto` on CUDA: Flex (scoring and selecting with Triton) where the top-k keeps at least half
    the keys and the heads are fewer than 64, with or without the KL and in the warm-up; the sparse
    kernels or the masked path where either holds; a CPU keeps the gather path."""
    from glmlab import plan as plan_module

    monkeypatch.setattr(plan_module, "triton_available", lambda: True)

    def plan(*overrides: str, labels: bool, dense: bool = False, device: str = "cuda"):
        m = load_config("glm5-tiny", ["index_topk=512", *overrides]).model
        call = Call(1024, 1024, cache=False, labels=labels, dsa_dense=dense, device=device)
        p = attention_plan(m, layer_kinds(m)[-1], call)
        return p.path, p.flex, p.kernel

    assert plan(labels=True) == plan(labels=False) == ("masked", True, "triton")
    assert plan(labels=True, dense=True) == ("dense", False, "triton")  # the warm-up's chunked KL
    assert plan("index_topk=511", labels=True) == ("sparse", False, "triton")  # k < context / 2
    assert plan("index_topk=511", labels=False) == ("masked", False, "torch")
    assert plan("num_attention_heads=64", labels=True) == ("sparse", False, "triton")
    assert plan(labels=True, device="cpu") == ("sparse", False, "torch")
    m = load_config("glm5-tiny", ["index_topk=512"]).model
    cached = attention_plan(m, layer_kinds(m)[-1], Call(1, 1024, cache=True, labels=False, dsa_dense=False,
                                                          device="cuda"))  # fmt: skip
    assert (cached.path, cached.kernel) == ("cached", "torch")  # decoding follows generate's rule
    monkeypatch.setattr(plan_module, "triton_available", lambda: False)
    plan_module._attention_plan.cache_clear()
    assert plan(labels=True)[:2] == ("masked", False)  # Flex compiles with Triton: not without it
    plan_module._attention_plan.cache_clear()


def test_key_mass_equals_explicit_probabilities(monkeypatch):
    """key_mass_at, chunk by chunk (the plan's chunks, made small), against softmax probabilities
    summed over heads at each query's selected keys."""
    from glmlab import plan
    from glmlab.kernels.flex_masked import key_mass_at

    B, H, S, D, K = 2, 3, 150, 16, 12
    monkeypatch.setattr(plan, "KL_TARGET_BYTES", 6 * H * S * 40)  # 40 queries a chunk
    gen = torch.Generator().manual_seed(5)
    q, k = (torch.randn(B, H, S, D, generator=gen) for _ in range(2))
    keep = _topk_mask(B, S, S, 0.2, seed=1)
    indices = torch.multinomial(keep.flatten(0, 1).float() + 1e-6, K, generator=gen).view(B, S, K)
    chunks = tuple(plan.kl_target_chunks(S, S, H))
    assert chunks == ((0, 40, 40), (40, 80, 80), (80, 120, 120), (120, 150, 150))
    mass = key_mass_at(q, k, keep, indices, scale=0.3, chunks=chunks)
    probs = ((q @ k.transpose(-1, -2)) * 0.3).masked_fill(~keep[:, None], float("-inf")).softmax(-1)
    torch.testing.assert_close(mass, probs.sum(1).gather(-1, indices), atol=1e-5, rtol=1e-4)


def test_calculator_counts_flex_causally():
    """Flex's attention is counted over the causal pairs, as fused causal SDPA's, not the square."""

    def attention(*overrides: str) -> float:
        cfg = load_config("glm5-tiny", ["index_topk=64", *overrides])
        report = flops_report(cfg, 1024, "forward", mtp=False, device="cuda", labels=False)
        return report.by_component()["core_attention"]

    assert attention("dsa_impl=flex") == attention("use_dsa=false") < attention("dsa_impl=mask") / 1.5


@pytest.mark.skipif(not CUDA, reason="FlexAttention's compiled kernel and its backward need CUDA")
@pytest.mark.parametrize("labels", [False, True], ids=["forward", "with-indexer-kl"])
def test_model_with_flex_equals_masked(tiny, labels):
    """Logits, LM loss, the indexer's KL (Flex: its key mass from the log-sum-exp) and every
    gradient equal the masked reference's (explicit probabilities when the KL runs)."""
    ids = torch.randint(0, 128, (2, 300), generator=torch.Generator().manual_seed(1)).cuda()
    mask = tiny("dsa_impl=mask", "num_hidden_layers=2").cuda().train()
    flex = tiny("dsa_impl=flex", "num_hidden_layers=2").cuda().train()
    flex.load_state_dict(mask.state_dict())
    outs = []
    for model in (mask, flex):
        out = model(ids, labels=ids if labels else None)
        loss = out.loss + out.indexer_loss if labels else out.logits.float().square().mean()
        loss.backward()
        outs.append(out)
    torch.testing.assert_close(outs[1].logits, outs[0].logits, atol=1e-4, rtol=1e-3)
    if labels:
        assert outs[0].indexer_loss.item() > 0
        torch.testing.assert_close(outs[1].indexer_loss, outs[0].indexer_loss, atol=1e-5, rtol=1e-4)
    for (name, a), b in zip(mask.named_parameters(), flex.parameters(), strict=True):
        if a.grad is not None:
            torch.testing.assert_close(b.grad, a.grad, atol=1e-4, rtol=1e-3, msg=name)


def test_calculator_counts_the_key_mass_that_key_mass_at_runs():
    """With the KL, Flex's count grows by the key mass's QK^T per chunk, as FlopCounterMode counts
    key_mass_at over the plan's chunks, once per layer that trains its indexer."""
    from glmlab.kernels.flex_masked import key_mass_at
    from glmlab.measure import flop_counter

    cfg = load_config("glm5-tiny", ["dsa_impl=flex", "index_topk=64"])
    m, S = cfg.model, 1024

    def core(labels: bool) -> float:
        report = flops_report(cfg, S, "forward", mtp=False, device="cuda", labels=labels)
        return report.by_component()["core_attention"]

    call = Call(S, S, cache=False, labels=True, dsa_dense=False, device="cuda")
    plans = [attention_plan(m, kind, call) for kind in layer_kinds(m)]
    assert all(p.flex for p in plans) and len(plans[0].kl_chunks) > 0
    H, D = m.num_attention_heads, m.qk_head_dim
    q, k = torch.randn(1, H, S, D), torch.randn(1, H, S, D)
    keep = torch.ones(1, S, S, dtype=torch.bool).tril()
    counter = flop_counter()
    with counter:
        key_mass_at(q, k, keep, torch.zeros(1, S, 64, dtype=torch.long), scale=1.0, chunks=plans[0].kl_chunks)
    trained = sum(p.index_loss for p in plans)
    assert trained > 0 and core(True) - core(False) == trained * counter.get_total_flops()


def test_flop_counter_counts_the_causal_pairs():
    """FlopCounterMode cannot run FlexAttention itself; the marker op counts its causal pairs."""
    from glmlab.measure import flop_counter

    B, H, S, D, Dv = 2, 3, 200, 32, 16
    q, k = torch.randn(B, H, S, D), torch.randn(B, H, S, D)
    v = torch.randn(B, H, S, Dv)
    counter = flop_counter()
    with counter, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        out = flex_masked_attention(q, k, v, _topk_mask(B, S, S, 1.0, seed=0), scale=0.2)
    pairs = B * H * S * (S + 1) // 2
    assert counter.get_total_flops() == pairs * 2 * (D + Dv)
    ref = F.scaled_dot_product_attention(q, k, v, is_causal=True, scale=0.2)
    torch.testing.assert_close(out, ref, atol=2e-5, rtol=1e-4)
    counter = flop_counter()  # causal SDPA for the first 70 queries, Flex for the rest: the same pairs
    with counter, warnings.catch_warnings():  # (values as wide as keys, as the model pads them: else
        warnings.simplefilter("ignore")  # the CPU's SDPA falls back to products over the whole square)
        flex_masked_attention(q, k, torch.randn(B, H, S, D), _topk_mask(B, S, S, 1.0, seed=0), scale=0.2,
                              whole_rows=70)  # fmt: skip
    assert counter.get_total_flops() == pairs * 4 * D
    if CUDA:  # the compiled kernel, forward and backward, under the counter
        q, k, v = (t.cuda().requires_grad_() for t in (q, k, v))
        counter = flop_counter()
        with counter:
            out = flex_masked_attention(q, k, v, _topk_mask(B, S, S, 1.0, seed=0).cuda(), scale=0.2)
            out.sum().backward()
        assert counter.get_total_flops() == pairs * (2 * (D + Dv) + 2 * (3 * D + 2 * Dv))
        torch.testing.assert_close(out.detach().cpu(), ref, atol=2e-5, rtol=1e-4)
