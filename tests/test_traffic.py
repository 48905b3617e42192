"""The bytes a decoding step reads (glmlab/accounting/traffic.py) against a built model's own
parameters and cache, term by term."""

from __future__ import annotations

import pytest

from glmlab.accounting.traffic import decode_step_bytes, experts_reached
from glmlab.build import build_model
from glmlab.config import load_config

TINY = ["hidden_size=64", "num_attention_heads=4", "q_lora_rank=32", "kv_lora_rank=16", "qk_rope_head_dim=8",
        "qk_nope_head_dim=16", "v_head_dim=16", "index_n_heads=2", "index_head_dim=16", "index_topk=8",
        "vocab_size=128", "num_nextn_predict_layers=0", "num_hidden_layers=3"]  # fmt: skip


def test_weights_are_the_models_parameters_but_the_embedding_table():
    """A dense-FFN model past index_topk: every parameter once, in bf16, except the embedding table,
    of which each row reads one row (tied to the head, the table is read whole by the head); within
    index_topk the indexers' query and weight projections are not read; with MoE the routed experts
    count only as far as the batch reaches them."""
    cfg = load_config("glm5-tiny", [*TINY, "use_moe=false"])
    model = build_model(cfg)
    params = sum(p.numel() for p in model.parameters())
    table = model.model.embed_tokens.weight.numel()
    d = cfg.model.hidden_size
    for batch in (1, 3):
        want = (params - table + batch * d) * 2
        assert decode_step_bytes(cfg, 64, batch)["weights"] == want
    unused = sum(p.numel() for n, p in model.named_parameters() if "wq_b" in n or "weights_proj" in n)
    assert unused > 0 and decode_step_bytes(cfg, 8, 1)["weights"] == (params - table + d - unused) * 2
    tied = load_config("glm5-tiny", [*TINY, "use_moe=false", "tie_word_embeddings=true"])
    tied_params = sum(p.numel() for p in build_model(tied).parameters())
    assert decode_step_bytes(tied, 64, 1)["weights"] == (tied_params + d) * 2
    moe = load_config("glm5-tiny", TINY)  # glm5-tiny's MoE layers after the first dense ones
    E, k = moe.model.n_routed_experts, moe.model.num_experts_per_tok
    one, many = decode_step_bytes(moe, 64, 1)["weights"], decode_step_bytes(moe, 64, 10_000)["weights"]
    model = build_model(moe)
    routed = sum(p.numel() for name, p in model.named_parameters() if ".experts." in name)
    assert many - one == pytest.approx(2 * routed * (1 - k / E) + 2 * (10_000 - 1) * moe.model.hidden_size)
    assert experts_reached(E, k, 1) == pytest.approx(k) and experts_reached(E, k, 10_000) == pytest.approx(E)


def test_cache_reads_every_position_dense_and_the_top_k_with_dsa():
    """Per row and layer: the dense step reads every cached latent (kv_lora + rope values); DSA past
    index_topk reads k of them, plus each full layer's indexer keys and fp32 scores (written and
    read); within index_topk DSA reads what dense reads. GQA reads K and V."""
    dsa = load_config("glm5-tiny", TINY)
    dense = load_config("glm5-tiny", [*TINY, "use_dsa=false"])
    m = dsa.model
    latent, L = m.kv_lora_rank + m.qk_rope_head_dim, m.num_hidden_layers
    B, T = 2, 100
    assert decode_step_bytes(dense, T, B)["cache"] == B * T * latent * 2 * L
    got = decode_step_bytes(dsa, T, B)
    assert got["cache"] == B * m.index_topk * latent * 2 * L
    assert got["indexer"] == B * T * (m.index_head_dim * 2 + 8) * L  # every layer has an indexer here
    fp8 = decode_step_bytes(load_config("glm5-tiny", [*TINY, "index_dtype=fp8"]), T, B)
    # bf16 keys read and quantised again each step (1 byte written, 1 read, a 4-byte scale each way)
    assert fp8["indexer"] == B * T * (m.index_head_dim * (2 + 1 + 1) + 8 + 8) * L
    short = decode_step_bytes(dsa, m.index_topk, B)
    assert short["indexer"] == 0 and short["cache"] == decode_step_bytes(dense, m.index_topk, B)["cache"]
    assert got["total"] == got["weights"] + got["cache"] + got["indexer"]
    gqa = load_config("glm5-tiny", [*TINY, "use_dsa=false", "attention_type=gqa", "num_key_value_heads=2",
                                    "head_dim=16"])  # fmt: skip
    assert decode_step_bytes(gqa, T, B)["cache"] == B * T * 2 * 2 * 16 * 2 * L
