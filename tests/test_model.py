"""Model correctness: each mechanism's fast path equals its reference, causality, MTP, IndexShare,
MoE statistics and where the indexer's gradient comes from (docs/architecture.md)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from glmlab.model.compile import compile_layers
from glmlab.model.layers import RMSNorm, _RMSNormFP32
from glmlab.plan import score_chunks

SEQ = 40  # > index_topk (8)


def _ids(vocab: int = 128, batch: int = 2, seq: int = SEQ, seed: int = 1) -> torch.Tensor:
    return torch.randint(0, vocab, (batch, seq), generator=torch.Generator().manual_seed(seed))


def _close(a: torch.Tensor, b: torch.Tensor, tol: float = 2e-5) -> bool:
    return (a - b).abs().max().item() < tol


@pytest.mark.parametrize("dsa", ["use_dsa=false", "use_dsa=true"])
@pytest.mark.parametrize("chunks", [[1] * SEQ, [5, 11, 1, 16, 7]])
def test_latent_cache_decoding_equals_full_forward(tiny, dsa, chunks):
    """Absorbed MLA over the latent cache (token by token, or chunked prefill) = expanded MLA."""
    model = tiny(dsa)
    ids = _ids()
    with torch.no_grad():
        full = model(ids).logits
        cache = model.new_cache(ids.shape[0], SEQ)
        parts, start = [], 0
        for n in chunks:
            parts.append(model(ids[:, start : start + n], cache=cache).logits)
            start += n
    assert cache.length == SEQ
    assert _close(torch.cat(parts, dim=1), full)


def test_dense_cached_decoding_never_copies_the_latents_per_head(tiny):
    """Absorbed decoding reads one latent cache for all heads; broadcasting it over a head axis
    made matmul copy it per head (84 GB at batch 8 and 128K positions on an H200). No operator
    output spanning the cached positions may be as large as H copies of the cache."""
    from torch.utils._python_dispatch import TorchDispatchMode

    class Largest(TorchDispatchMode):
        numel = 0

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            out = func(*args, **(kwargs or {}))
            for t in out if isinstance(out, (tuple, list)) else [out]:
                if isinstance(t, torch.Tensor) and SEQ + 1 in t.shape:  # over the cached positions
                    self.numel = max(self.numel, t.numel())
            return out

    model = tiny("use_dsa=false")
    ids = _ids(seq=SEQ)
    m = model.config
    with torch.no_grad():
        cache = model.new_cache(ids.shape[0], SEQ + 1)
        model(ids, cache=cache)
        with Largest() as seen:
            model(ids[:, :1], cache=cache)
    one_copy = ids.shape[0] * (SEQ + 1) * (m.kv_lora_rank + m.qk_rope_head_dim)
    assert seen.numel < 2 * one_copy < m.num_attention_heads * one_copy


def test_gathered_dsa_equals_masked_dsa(tiny):
    """dsa_impl gather (sparse) and mask (dense reference): same logits, losses and gradients."""
    gather = tiny("dsa_impl=gather").train()
    mask = tiny("dsa_impl=mask").train()
    mask.load_state_dict(gather.state_dict())
    ids = _ids()
    a, b = gather(ids, labels=ids), mask(ids, labels=ids)
    assert _close(a.logits, b.logits)
    assert a.indexer_loss.item() > 0 and abs(a.indexer_loss.item() - b.indexer_loss.item()) < 1e-5
    (a.loss + a.indexer_loss).backward()
    (b.loss + b.indexer_loss).backward()
    for (name, p), q in zip(gather.named_parameters(), mask.parameters(), strict=True):
        assert (p.grad is None) == (q.grad is None), name
        if p.grad is not None:
            assert _close(p.grad, q.grad, 1e-5), name


def test_dsa_with_topk_covering_the_sequence_is_dense_attention(tiny):
    dsa = tiny("index_topk=64")
    dense = tiny("use_dsa=false")
    missing, unexpected = dense.load_state_dict(dsa.state_dict(), strict=False)
    assert not missing and unexpected and all(".indexer." in n for n in unexpected)
    ids = _ids()
    with torch.no_grad():
        assert _close(dsa(ids).logits, dense(ids).logits)
        assert not _close(tiny("index_topk=4")(ids).logits, dense(ids).logits)  # k < T does select


@pytest.mark.parametrize("new", [300, 40])
def test_indexer_chunked_scores_equal_the_full_score_matrix(tiny, new):
    """Chunks scored only up to their last query = the full [S,T] formula, values
    and gradients, for a sequence on its own and for new tokens after a cache."""
    indexer = tiny().model.layers[0].self_attn.indexer
    T, H = 300, indexer.n_heads
    assert len(score_chunks(new, T, H, "cpu")) > 1
    xn = torch.randn(2, new, 64, requires_grad=True)
    q_latent = torch.randn(2, new, indexer.wq_b.in_features, requires_grad=True)
    keys = torch.randn(2, T, indexer.head_dim, requires_grad=True)
    positions = torch.arange(T - new, T)
    angles = positions[:, None].float() * torch.rand(indexer.rope_dim // 2)
    cos, sin = angles.cos(), angles.sin()
    causal = torch.arange(T)[None, :] <= positions[:, None]
    q = indexer._rope(indexer.wq_b(q_latent).view(2, new, H, -1), cos, sin)
    dots = torch.einsum("bshd,btd->bsht", q, keys).relu()
    w = indexer.weights_proj(xn) * (H**-0.5 * indexer.head_dim**-0.5)
    reference = torch.einsum("bsh,bsht->bst", w, dots).masked_fill(~causal, float("-inf"))
    ours = indexer.scores(xn, q_latent, cos, sin, keys, causal, chunks=tuple(score_chunks(new, T, H, "cpu")))
    assert torch.equal(ours.isinf(), reference.isinf())
    assert _close(ours.nan_to_num(neginf=0), reference.nan_to_num(neginf=0), 1e-4)
    inputs = (xn, q_latent, keys, indexer.wq_b.weight, indexer.weights_proj.weight)
    grad = torch.randn_like(ours).masked_fill(~causal, 0)
    for a, b in zip(
        torch.autograd.grad(ours, inputs, grad), torch.autograd.grad(reference, inputs, grad), strict=True
    ):
        assert _close(a, b, 1e-3 * b.abs().max().item())


def test_rmsnorm_hand_written_backward_is_the_gradient():
    """The CPU fp32 RMSNorm (its own backward) = torch's rms_norm, values and gradients."""
    norm = RMSNorm(24, eps=1e-6)
    with torch.no_grad():
        norm.weight.copy_(torch.randn(24))
    x = torch.randn(3, 5, 24, requires_grad=True)
    grad = torch.randn(3, 5, 24)
    ours = torch.autograd.grad(norm(x), (x, norm.weight), grad)
    reference = F.rms_norm(x, (24,), norm.weight, 1e-6)
    assert _close(norm(x), reference, 1e-6)
    for a, b in zip(ours, torch.autograd.grad(reference, (x, norm.weight), grad), strict=True):
        assert _close(a, b, 1e-5)
    args = (x.detach().double().requires_grad_(), norm.weight.detach().double().requires_grad_(), 1e-6)
    assert torch.autograd.gradcheck(_RMSNormFP32.apply, args)  # the backward itself, in fp64


@pytest.mark.parametrize("extra", [[], ["dsa_impl=mask"], ["indexer_types=FSF"]])
def test_future_tokens_never_change_earlier_logits(tiny, extra):
    model = tiny(*extra)
    ids = _ids()
    changed = ids.clone()
    changed[:, 30:] = (changed[:, 30:] + 1) % 128
    with torch.no_grad():
        a, b = model(ids).logits, model(changed).logits
    assert _close(a[:, :30], b[:, :30], 1e-6)
    assert not _close(a[:, 30:], b[:, 30:])


@pytest.mark.parametrize("share", [False, True])
def test_mtp_losses_are_cross_entropies_of_mtp_steps(tiny, share):
    D = 3
    model = tiny(f"num_nextn_predict_layers={D}", f"mtp_share_modules={str(share).lower()}")
    assert len(model.mtp) == (1 if share else D)
    ids = _ids()
    labels = ids.clone()
    labels[0, 20:30] = -100  # ignored positions (padding, a prompt) drop out of every loss
    with torch.no_grad():
        out = model(ids, labels=labels)
        assert len(out.mtp_losses) == D
        h = out.hidden_states
        lm = F.cross_entropy(out.logits[:, :-1].flatten(0, 1), labels[:, 1:].flatten(), ignore_index=-100)
        assert abs(lm.item() - out.loss.item()) < 1e-5
        for depth in range(1, D + 1):
            logits, h = model.mtp_step(depth, h[:, : SEQ - depth], ids[:, depth:])
            assert logits.shape == (2, SEQ - depth, 128) and h.shape == (2, SEQ - depth, 64)
            target = labels[:, depth + 1 :].flatten()
            ce = F.cross_entropy(logits[:, :-1].flatten(0, 1), target, ignore_index=-100)
            assert abs(ce.item() - out.mtp_losses[depth - 1].item()) < 1e-5
    assert len({round(x.item(), 6) for x in out.mtp_losses}) == D


def test_indexshare_layers_reuse_the_previous_full_layers_topk(tiny):
    model = tiny("num_hidden_layers=4", "indexer_types=FSSF")
    seen = {}
    for i, layer in enumerate(model.model.layers):
        assert (layer.self_attn.indexer is None) == (i in (1, 2))
        layer.self_attn.register_forward_hook(lambda m, a, out, i=i: seen.__setitem__(i, out.topk))
    with torch.no_grad():
        model(_ids())
    assert seen[1] is seen[0] and seen[2] is seen[0]
    assert not torch.equal(seen[3][0].sort(-1).values, seen[0][0].sort(-1).values)  # sets, unordered


def test_balance_loss_and_expert_counts(tiny):
    model = tiny()
    ids = _ids()
    k = model.config.num_experts_per_tok
    with torch.no_grad():
        out = model(ids, labels=ids)
        routers = model.routers()
        assert out.expert_counts.shape == (len(routers), model.config.n_routed_experts)
        main = len(routers) - len(model.mtp)
        assert out.expert_counts[:main].sum(-1).tolist() == [ids.numel() * k] * main
        assert out.expert_counts[main:].sum(-1).tolist() == [2 * (SEQ - 1) * k] * len(model.mtp)
        assert out.balance_loss.item() > 1  # random routing is never perfectly balanced
        for router in routers:  # uniform affinities: f_i * P_i sums to exactly 1
            router.weight.zero_()
        assert abs(model(ids, labels=ids).balance_loss.item() - 1) < 1e-6
        unlabelled = model(ids)  # decoding: counts still, no balance loss
        assert unlabelled.balance_loss is None and unlabelled.expert_counts.shape[0] == len(routers)


def test_indexer_learns_only_from_the_indexer_loss(tiny):
    model = tiny().train()
    ids = _ids()
    indexer = {id(p) for p in model.indexer_parameters()}
    assert indexer
    out = model(ids, labels=ids)
    out.loss.backward(retain_graph=True)
    for name, p in model.named_parameters():
        if id(p) in indexer:
            assert p.grad is None or not p.grad.any(), name
    model.zero_grad(set_to_none=True)
    out.indexer_loss.backward()
    for name, p in model.named_parameters():
        has_grad = p.grad is not None and bool(p.grad.any())
        assert has_grad == (id(p) in indexer), name


@pytest.mark.slow
@pytest.mark.parametrize("impl", ["gather", "mask"])
def test_compiled_layers_train_like_eager_ones(tiny, impl):
    """`train.compile`: the same losses and gradients as the eager model, state dict unchanged."""
    eager = tiny(f"dsa_impl={impl}").train()
    compiled = tiny(f"dsa_impl={impl}").train()
    compiled.load_state_dict(eager.state_dict())
    compile_layers(compiled)
    assert compiled.state_dict().keys() == eager.state_dict().keys()
    ids = torch.randint(0, 128, (2, SEQ), generator=torch.Generator().manual_seed(3))
    results = []
    for model in (eager, compiled):
        out = model(ids, labels=ids)
        total = out.loss + 0.3 * sum(out.mtp_losses) + 1e-2 * out.balance_loss + out.indexer_loss
        total.backward()
        grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
        results.append((total.detach(), grads))
    (loss_e, grads_e), (loss_c, grads_c) = results
    assert torch.allclose(loss_e, loss_c, atol=1e-5)
    assert grads_e.keys() == grads_c.keys()
    for name, g in grads_e.items():
        assert torch.allclose(g, grads_c[name], atol=1e-4, rtol=1e-3), name


def test_topk_mask_keeps_valid_picks_whatever_the_invalid_ones_repeat():
    """The Triton top-k fills invalid picks with key 0, which may also be a valid pick: the mask
    of the masked paths keeps it (a plain scatter of `valid` may write False over it)."""
    from glmlab.model.dsa import TopK, topk_mask

    indices = torch.tensor([[[0, 0, 0], [1, 0, 0], [2, 1, 0]]])
    valid = torch.tensor([[[True, False, False], [True, True, False], [True, True, True]]])
    keep = topk_mask(TopK(indices, valid), 4)
    expected = [[True, False, False, False], [True, True, False, False], [True, True, True, False]]
    assert keep.tolist() == [expected]


def test_init_knobs_draw_the_embedding_and_residual_writers_as_asked():
    from glmlab.build import build_model
    from glmlab.config import load_config

    torch.manual_seed(0)
    plain = build_model(load_config("glm5-tiny"))
    torch.manual_seed(0)
    tuned = build_model(load_config("glm5-tiny", ["embedding_init_std=1.0", "scale_residual_init=true"]))
    std = plain.config.initializer_range
    assert plain.model.embed_tokens.weight.std().item() == pytest.approx(std, rel=0.05)
    assert tuned.model.embed_tokens.weight.std().item() == pytest.approx(1.0, rel=0.05)
    factor = (2 * tuned.config.num_hidden_layers) ** -0.5
    writers = ("o_proj.weight", "down_proj.weight", "experts.down_proj")
    params = dict(plain.named_parameters())
    scaled = 0
    for name, p in tuned.named_parameters():
        if name.endswith(writers):  # drawn as before (same seed), times 1/sqrt(2L)
            assert torch.allclose(p, params[name] * factor)
            scaled += 1
        elif "embed_tokens" not in name:
            assert torch.equal(p, params[name]), name
    layers = tuned.config.num_hidden_layers + tuned.config.num_mtp_modules
    assert scaled >= 2 * layers  # every layer's attention output and its MLP or experts


def test_larger_embedding_init_keeps_router_inputs_apart():
    """docs/architecture.md, "Routing collapse at initialisation": with transformers' init a
    glm5-small-shaped model's routers see mostly one shared vector; the preset's init does not."""
    from glmlab.build import build_model
    from glmlab.config import load_config
    from glmlab.viz.inspect import inspect_layers

    text = torch.randint(32, 127, (512,), generator=torch.Generator().manual_seed(0)).tolist()
    shares = {}
    for std in ("null", "1.0"):
        torch.manual_seed(0)
        overrides = [
            "vocab_size=256",
            "num_hidden_layers=4",
            "num_nextn_predict_layers=0",
            f"embedding_init_std={std}",
        ]
        cfg = load_config("glm5-small", overrides)
        layers = inspect_layers(build_model(cfg), text, [1, 2, 3])
        shares[std] = [item.routing.common_share for item in layers]
    assert min(shares["null"]) > 0.3 and max(shares["1.0"]) < 0.15, shares


def test_mla_joins_without_grad_as_torch_cat_in_one_compiled_graph():
    """`_joined` (MLA's concatenation without a gradient) equals torch.cat, broadcast part included,
    and torch.compile traces it without a graph break; under a gradient it is torch.cat itself."""
    from glmlab.model.mla import _joined

    a = torch.randn(2, 5, 3, 4).transpose(1, 2)  # strided, as the absorbed queries are
    b = torch.randn(2, 1, 1, 2).expand(2, 3, 5, 2)
    with torch.no_grad():
        assert torch.equal(_joined(a, b), torch.cat([a, b], dim=-1))
        explained = torch._dynamo.explain(_joined)(a, b)
    torch._dynamo.reset()
    assert explained.graph_break_count == 0
    grad_a = a.clone().requires_grad_()
    _joined(grad_a, b).sum().backward()
    assert torch.equal(grad_a.grad, torch.ones_like(a))


@pytest.mark.parametrize("cast", [False, True])
def test_absorbed_queries_heads_first_equal_the_joined_ones(tiny, cast):
    """The sparse kernel's queries written per head into a [B,H,S,R] buffer (batch 1, no gradient)
    equal the joined [B,S,H,R] ones, also under bf16 autocast; batch 2 and a gradient take the join."""
    attn = tiny().model.layers[0].self_attn
    H, nope, rope = attn.n_heads, attn.d_nope, attn.d_rope
    q = torch.randn(1, 7, H, nope + rope).to(torch.bfloat16 if cast else torch.float32)  # as projected
    q_nope, q_pe = q.split([nope, rope], dim=-1)  # strided
    with torch.no_grad(), torch.autocast("cpu", torch.bfloat16, enabled=cast):
        joined = attn._absorbed_queries(q_nope, q_pe)
        heads_first = attn._absorbed_queries(q_nope, q_pe, heads_first=True)
        pair = (q_nope.expand(2, -1, -1, -1), q_pe.expand(2, -1, -1, -1))
        two = attn._absorbed_queries(*pair, heads_first=True)
    assert heads_first.dtype == joined.dtype
    assert heads_first.stride(1) == attn.r_kv + rope  # a [B,H,S,R] buffer beneath
    torch.testing.assert_close(heads_first, joined, rtol=0, atol=0)
    assert two.is_contiguous()
    with torch.autocast("cpu", torch.bfloat16, enabled=cast):
        assert attn._absorbed_queries(q_nope.requires_grad_(), q_pe, heads_first=True).is_contiguous()
