"""GQA and MHA (glmlab/model/gqa.py): a straightforward reference, cached decoding, training,
the config's checks and HF export's refusal (docs/architecture.md, "Attention types")."""

from __future__ import annotations

import math

import pytest
import torch

from glmlab.build import build_model
from glmlab.config import load_config
from glmlab.errors import GlmlabError
from glmlab.hf import save_pretrained
from glmlab.model.gqa import GroupedQueryAttention
from glmlab.model.layers import RotaryEmbedding, apply_rotary
from glmlab.plan import Call, attention_plan, layer_kinds

TINY = ["vocab_size=64", "hidden_size=32", "num_hidden_layers=2", "first_k_dense_replace=1",
        "intermediate_size=64", "moe_intermediate_size=16", "n_routed_experts=4", "num_experts_per_tok=2",
        "num_attention_heads=4", "qk_rope_head_dim=4", "use_dsa=false", "max_position_embeddings=64",
        "train.seq_len=16"]  # fmt: skip
VARIANTS = {
    "gqa": ["attention_type=gqa", "num_key_value_heads=2", "head_dim=12"],
    "mqa": ["attention_type=gqa", "num_key_value_heads=1"],  # one K/V head, head_dim = d // H = 8
    "mha": ["attention_type=mha", "head_dim=4"],  # full rotary: the whole head is rotated
}


def tiny(variant: str, *extra: str):
    return load_config("glm5-tiny", [*TINY, *VARIANTS[variant], *extra])


def reference(attn: GroupedQueryAttention, x: torch.Tensor, cos, sin) -> torch.Tensor:
    """Explicit softmax(q k^T / sqrt(hd) + causal mask) v, K/V heads repeated for their groups."""
    B, S, _ = x.shape
    H, kv, hd, r = attn.n_heads, attn.n_kv, attn.head_dim, attn.d_rope
    q = attn.q_proj(x).view(B, S, H, hd)
    k = attn.k_proj(x).view(B, S, kv, hd)
    v = attn.v_proj(x).view(B, S, kv, hd)
    q = torch.cat([apply_rotary(q[..., :r], cos, sin, attn.interleave), q[..., r:]], dim=-1)
    k = torch.cat([apply_rotary(k[..., :r], cos, sin, attn.interleave), k[..., r:]], dim=-1)
    k, v = k.repeat_interleave(H // kv, dim=2), v.repeat_interleave(H // kv, dim=2)
    scores = torch.einsum("bshd,bthd->bhst", q, k) / math.sqrt(hd)
    future = torch.ones(S, S, dtype=torch.bool).triu(1)
    probs = scores.masked_fill(future, float("-inf")).softmax(-1)
    o = torch.einsum("bhst,bthd->bshd", probs, v)
    return attn.o_proj(o.reshape(B, S, H * hd))


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_attention_equals_the_reference(variant):
    torch.manual_seed(0)
    cfg = tiny(variant).model
    attn = GroupedQueryAttention(cfg)
    B, S = 2, 9
    x = torch.randn(B, S, cfg.hidden_size)
    cos, sin = RotaryEmbedding(cfg)(torch.arange(S))
    plan = attention_plan(cfg, layer_kinds(cfg)[0], Call(S, S, False, False, False, "cpu"))
    out = attn(x, cos, sin, torch.arange(S), plan=plan)
    torch.testing.assert_close(out.out, reference(attn, x, cos, sin), rtol=1e-5, atol=1e-5)
    assert out.topk is None and out.index_loss is None


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_cached_decoding_equals_the_full_forward(variant):
    """Prefill 7 tokens into the cache, then decode the rest one at a time: the logits equal the
    full forward's at each position, and the fixed-shape step (glmlab generate) agrees."""
    torch.manual_seed(0)
    model = build_model(tiny(variant, "num_nextn_predict_layers=1")).eval()
    ids = torch.randint(0, 64, (2, 12))
    with torch.no_grad():
        full = model(ids).logits
        cache = model.new_cache(2, 12)
        steps = [model(ids[:, :7], cache=cache).logits]
        steps += [model(ids[:, i : i + 1], cache=cache).logits for i in range(7, 12)]
    torch.testing.assert_close(torch.cat(steps, 1), full, rtol=1e-4, atol=1e-5)
    assert cache.length == 12 and cache.layers[0].k.shape[2] == model.config.resolved_kv_heads

    from glmlab.generate.step import model_step

    fixed = model.new_cache(2, 16)
    with torch.no_grad():
        pos = torch.arange(12)[None].expand(2, 12)
        logits, _ = model_step(model, ids, pos, fixed.layers, 16)
    torch.testing.assert_close(logits, full, rtol=1e-4, atol=1e-5)


def test_generate_plain_batched_speculative_and_uncached_agree_on_gqa():
    """Greedy decoding through `glmlab generate`'s paths (K/V caches in the session, a batch of rows
    prefilled into a scratch cache, MTP drafts) gives the tokens the cache-free reference gives."""
    from glmlab.generate import Generator

    torch.manual_seed(0)
    gen = Generator(build_model(tiny("gqa", "num_nextn_predict_layers=1")))
    prompts = [[1, 2, 3, 4, 5, 6], [7, 8, 9]]
    reference_ids = [gen.generate(p, max_new_tokens=8, use_cache=False).ids for p in prompts]
    assert [gen.generate(p, max_new_tokens=8).ids for p in prompts] == reference_ids
    assert [r.ids for r in gen.generate_batch(prompts, max_new_tokens=8)] == reference_ids
    assert gen.generate(prompts[0], max_new_tokens=8, speculative=1).ids == reference_ids[0]


@pytest.mark.parametrize("variant", ["gqa", "mha"])
def test_a_few_training_steps_lower_the_loss(variant):
    torch.manual_seed(0)
    model = build_model(tiny(variant, "num_nextn_predict_layers=1"))
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    ids = torch.randint(0, 64, (4, 16))
    losses = []
    for _ in range(8):
        out = model(ids, labels=ids)
        loss = out.loss + 0.3 * sum(out.mtp_losses)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(out.loss.item())
    assert losses[-1] < losses[0] - 0.5
    assert all(p.grad is not None for n, p in model.named_parameters() if ".self_attn." in n)


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["attention_type=sliding"], "attention_type must be mla, gqa or mha"),
        (["attention_type=gqa", "use_dsa=false"], "num_key_value_heads is null with attention_type gqa"),
        (["attention_type=gqa", "use_dsa=false", "num_key_value_heads=3"], "is not divisible by"),
        (
            ["attention_type=mha", "use_dsa=false", "num_key_value_heads=2"],
            "differs from num_attention_heads",
        ),
        (["attention_type=gqa", "num_key_value_heads=2"], "set use_dsa=false"),
        (["attention_type=mha", "use_dsa=false", "head_dim=8"], "narrower than qk_rope_head_dim"),
        (["num_key_value_heads=2"], "num_key_value_heads is set but attention_type is mla"),
        (["head_dim=32"], "head_dim is set but attention_type is mla"),
    ],
)
def test_config_errors_are_one_line(extra, message):
    with pytest.raises(GlmlabError) as err:
        load_config("glm5-tiny", extra)
    assert message in str(err.value) and "\n" not in str(err.value)


def test_presets_stay_mla_and_hf_export_refuses_gqa(tmp_path):
    assert load_config("glm5").model.attention_type == "mla"
    model = build_model(tiny("gqa"), "meta")
    with pytest.raises(GlmlabError, match="cannot be exported: glm_moe_dsa in transformers is MLA only"):
        save_pretrained(model, tmp_path / "hf")
    assert not (tmp_path / "hf").exists()
