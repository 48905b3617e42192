"""The analytic calculator against the model it mirrors and against published figures
(docs/accounting.md, "Public figures the counts reproduce" and "Checking against measurement")."""

from __future__ import annotations

import json

import pytest
import torch
from typer.testing import CliRunner

from glmlab.accounting import (
    flops_report,
    kv_cache_bytes_per_token,
    parameter_counts,
    training_flops_per_token,
)
from glmlab.accounting.claims import check_claims
from glmlab.accounting.flops import indexer_pair_flops
from glmlab.accounting.memory import activation_bytes
from glmlab.accounting.traffic import decode_step_bytes
from glmlab.build import build_model, parameter_report
from glmlab.cli import app
from glmlab.config import load_config, preset_names
from glmlab.measure import flop_counter, saved_tensor_bytes

# Shrinks a preset while keeping its mechanisms (MLA with both latents, DSA or not, IndexShare,
# group-limited routing, shared experts, MTP depth and sharing, YaRN).
TINY = [
    "vocab_size=256", "hidden_size=64", "first_k_dense_replace=1", "intermediate_size=128",
    "moe_intermediate_size=32", "num_experts_per_tok=2", "n_routed_experts=4", "num_attention_heads=2",
    "q_lora_rank=32", "kv_lora_rank=16", "qk_nope_head_dim=16", "qk_rope_head_dim=8", "v_head_dim=16",
    "index_topk=8", "index_n_heads=4", "index_head_dim=16", "max_position_embeddings=256", "train.seq_len=32",
]  # fmt: skip
FULL_PRESETS = ["glm5", "glm5.2", "deepseek-v3", "deepseek-v3.2"]


def tiny(name: str, *extra: str):
    layers = "num_hidden_layers=4" if name == "glm5.2" else "num_hidden_layers=3"  # layer 3 shares top-k
    experts = ["n_routed_experts=8", "n_group=4", "topk_group=2"] if name.startswith("deepseek") else []
    return load_config(name, [*TINY, layers, *experts, *extra])


def executed_train_flops(cfg, batch: int, seq: int) -> tuple[int, int]:
    """(forward, forward + backward) FLOPs FlopCounterMode counts on a training step."""
    torch.manual_seed(0)
    model = build_model(cfg)
    ids = torch.randint(0, cfg.model.vocab_size, (batch, seq))
    with flop_counter() as counter:
        out = model(ids, labels=ids)
        forward = counter.get_total_flops()
        aux = [x for x in (out.balance_loss, out.indexer_loss) if x is not None]
        (out.loss + sum(out.mtp_losses) + sum(aux)).backward()
    return forward, counter.get_total_flops()


@pytest.mark.parametrize("name", preset_names())
def test_parameter_counts_equal_the_built_model(name):
    cfg = load_config(name)
    assert parameter_counts(cfg.model) == parameter_report(build_model(cfg, "meta"))


def test_published_parameter_counts():
    glm5 = parameter_counts(load_config("glm5").model)
    assert glm5["total"] == pytest.approx(744e9, rel=0.005)
    assert glm5["active_non_embedding"] == pytest.approx(39.9e9, rel=0.005)
    assert glm5["total_with_mtp"] == pytest.approx(754e9, rel=0.005)
    assert glm5["mtp"] == 9_952_920_576  # public checkpoint shard
    v3 = parameter_counts(load_config("deepseek-v3").model)
    assert v3["total"] == pytest.approx(671e9, rel=0.005)
    assert v3["active"] == pytest.approx(37e9, rel=0.03)


def test_deepseek_v3_megatron_figure_and_kv_cache():
    cfg = load_config("deepseek-v3")
    assert training_flops_per_token(cfg, 4096, "megatron", mtp=False) == pytest.approx(249.8e9, rel=0.01)
    assert kv_cache_bytes_per_token(cfg, "bf16")["latent"] == 70_272
    # GLM-5: 576 latent values per layer over 78 layers, plus 128-dim indexer keys on every layer
    kv = kv_cache_bytes_per_token(load_config("glm5"), "bf16")
    assert (kv["latent"], kv["indexer_keys"]) == (576 * 78 * 2, 128 * 78 * 2)


def megatron_reference(m, seq: int, mtp_layers: int) -> float:
    """Megatron-LM's num_floating_point_operations for MLA + MoE, transcribed term by term
    (training/training.py, transformer_flops), divided by the tokens of the batch."""
    H, d = m.num_attention_heads, m.hidden_size
    q_term = m.q_lora_rank * (d + H * (m.qk_nope_head_dim + m.qk_rope_head_dim) + 1)
    attn = 6 * (
        q_term
        + m.kv_lora_rank * (d + H * (m.qk_nope_head_dim + m.v_head_dim) + 1)
        + d * m.qk_rope_head_dim
        + H * m.v_head_dim * d
        + seq * H * (m.qk_nope_head_dim + m.qk_rope_head_dim) / 2
        + seq * H * m.v_head_dim / 2
    )
    moe_layers = m.num_hidden_layers - m.first_k_dense_replace + mtp_layers
    mlp = (
        6
        * d
        * (
            3 * m.intermediate_size * m.first_k_dense_replace
            + 3 * m.moe_intermediate_size * m.num_experts_per_tok * moe_layers
            + 3 * m.moe_intermediate_size * m.n_shared_experts * moe_layers
        )
    )
    mtp = 6 * mtp_layers * (3 * d + 2 * d * d)
    logits = 6 * d * m.vocab_size * (mtp_layers + 1)
    return mlp + attn * (m.num_hidden_layers + mtp_layers) + mtp + logits


@pytest.mark.parametrize("name", FULL_PRESETS)
@pytest.mark.parametrize("seq", [4096, 32768, 131072])
@pytest.mark.parametrize("mtp", [True, False])
def test_megatron_convention_matches_megatron_lm(name, seq, mtp):
    m = load_config(name).model
    depth = m.num_nextn_predict_layers if mtp else 0
    ours = training_flops_per_token(m, seq, "megatron", mtp=mtp)
    assert ours == pytest.approx(megatron_reference(m, seq, depth), rel=1e-12)


def test_megatron_counts_dsa_layers_dense_and_dsa_convention_counts_sparse():
    cfg = load_config("glm5")
    dense = load_config("glm5", ["use_dsa=false"])
    assert training_flops_per_token(cfg, 131072, "megatron") == training_flops_per_token(
        dense, 131072, "megatron"
    )
    s, K = 131072, cfg.model.index_topk
    sparse = flops_report(cfg, s, "train", "dsa").by_component()
    full = flops_report(dense, s, "train", "dsa").by_component()
    assert sparse["core_attention"] / full["core_attention"] == pytest.approx(
        (K - K * (K - 1) / (2 * s)) / ((s + 1) / 2)
    )
    layers = cfg.model.num_hidden_layers + cfg.model.num_nextn_predict_layers
    expected_index = 3 * s * (s + 1) / 2 * indexer_pair_flops(cfg.model) * layers
    assert sparse["indexer_scoring"] == pytest.approx(expected_index)
    assert "indexer_scoring" not in flops_report(cfg, s, "train", "megatron").by_component()


def test_article_claims_for_glm5():
    rows = {r["claim"].split()[1]: r["value"] for r in check_claims(load_config("glm5"))}
    assert rows["indexer"] == "5.9% absorbed, 12.6% expanded"
    assert "98.4%" in rows["context"] and "96.9%" in rows["context"]


# Every preset, T below and above index_topk (8), MTP on and off. With MTP, depth j runs over
# S - j tokens, so glm5 at S=10 (depths over 9, 8, 7) and deepseek-v3.2 at S=9 cross the
# threshold within one step. At S=200 the indexer scores in several chunks (chunking.score_chunks).
# A fast cross-section by default, the full grid with -m slow.
FAST_GRID = [("glm5", 10, True), ("glm5.2", 12, False), ("glm5.2", 6, True), ("deepseek-v3", 12, True),
             ("deepseek-v3.2", 9, True), ("glm5", 200, True)]  # fmt: skip
SLOW_GRID = [
    pytest.param(n, s, mtp, marks=pytest.mark.slow)
    for n in FULL_PRESETS for s in (6, 12) for mtp in (True, False) if (n, s, mtp) not in FAST_GRID
]  # fmt: skip


@pytest.mark.parametrize(("name", "seq", "mtp"), [*FAST_GRID, *SLOW_GRID])
def test_glmlab_convention_equals_executed_flops(name, seq, mtp):
    cfg = tiny(name, *([] if mtp else ["num_nextn_predict_layers=0"]))
    forward, train = executed_train_flops(cfg, 1, seq)
    assert flops_report(cfg, seq, "forward").total == forward
    assert flops_report(cfg, seq, "train").total == train


@pytest.mark.parametrize("extra", [("dsa_impl=mask",), ("v_head_dim=24", "use_dsa=false")])
def test_glmlab_convention_masked_dsa_and_fused_cpu_sdpa(extra):
    """The masked-dense DSA reference, and equal q/k and v widths (CPU then runs a fused causal kernel)."""
    cfg = tiny("glm5", *extra)
    _, train = executed_train_flops(cfg, 1, 12)
    assert flops_report(cfg, 12, "train").total == train


def _prefill_and_decode_count_exactly(cfg, model):
    """A 12-token prefill of 2 rows into a cache, then one decoding step: FlopCounterMode's totals
    equal the calculator's (glmlab convention); returns the cache."""
    ids = torch.randint(0, 256, (2, 12))
    cache = model.new_cache(2, 16)
    with torch.no_grad():
        with flop_counter() as counter:
            model(ids, cache=cache, logits_to_keep=1)
        assert counter.get_total_flops() == flops_report(cfg, 12, "prefill").total * 2
        with flop_counter() as counter:
            model(ids[:, :1], cache=cache)
        assert counter.get_total_flops() == flops_report(cfg, 13, "decode", mtp=False).total * 2
    return cache


GQA_MHA = [("attention_type=gqa", "num_key_value_heads=1", "head_dim=24"), ("attention_type=mha",)]


@pytest.mark.parametrize("extra", GQA_MHA, ids=["gqa", "mha"])
def test_glmlab_convention_counts_gqa_and_mha_exactly(extra):
    """GQA/MHA (no DSA; MTP on): training, prefill and decoding FLOPs equal FlopCounterMode's, and
    the parameters and KV bytes per token are the built model's."""
    cfg = tiny("glm5", "use_dsa=false", *extra)
    forward, train = executed_train_flops(cfg, 1, 12)
    assert (flops_report(cfg, 12, "forward").total, flops_report(cfg, 12, "train").total) == (forward, train)
    model = build_model(cfg)
    assert parameter_counts(cfg.model) == parameter_report(model)
    cache = _prefill_and_decode_count_exactly(cfg, model)
    layer = cache.layers[0]
    per_layer = (layer.k[0, 0].numel() + layer.v[0, 0].numel()) * 2  # bf16
    kv = kv_cache_bytes_per_token(cfg, "bf16")
    assert (kv["kv"], kv["latent"]) == (per_layer * cfg.model.num_hidden_layers, 0)


def test_glmlab_convention_prefill_and_decode_equal_executed_flops():
    cfg = tiny("glm5.2")
    model = build_model(cfg)
    _prefill_and_decode_count_exactly(cfg, model)


@pytest.mark.parametrize(
    ("extra", "seq"),
    [((), 96), (("use_dsa=false",), 48),
     (("use_dsa=false", "attention_type=gqa", "num_key_value_heads=2", "head_dim=48"), 48)],
)  # fmt: skip
def test_activation_estimate_tracks_saved_tensors(extra, seq):
    cfg = load_config("glm5-tiny", list(extra))
    model = build_model(cfg)
    ids = torch.randint(0, cfg.model.vocab_size, (2, seq))
    with saved_tensor_bytes(list(model.parameters())) as saved:
        model(ids, labels=ids)
    assert activation_bytes(cfg, seq, 2)["total"] / saved["bytes"] == pytest.approx(1.0, abs=0.15)


def test_flops_cli_json_sweep_and_errors(tmp_path):
    runner = CliRunner()
    args = [
        "flops",
        "presets/deepseek-v3.yaml",
        "--seq",
        "4096",
        "--convention",
        "megatron",
        "--no-mtp",
        "--json",
    ]
    res = runner.invoke(app, args)
    assert res.exit_code == 0, res.output
    out = json.loads(res.output)
    assert out["training_flops_per_token"] == pytest.approx(249.8e9, rel=0.01)
    assert out["kv_cache_bytes_per_token"] == 70_272
    assert out["forward_flops_per_token"] == pytest.approx(out["training_flops_per_token"] / 3)
    assert sum(out["breakdown"].values()) == pytest.approx(out["training_flops_per_token"])
    assert out["params"]["total"] == parameter_counts(load_config("deepseek-v3").model)["total"]
    res = runner.invoke(app, ["flops", "glm5", "--seq", "4k,32k", "--batch", "2", "--json"])
    sweep = json.loads(res.output)["sweep"]
    assert [e["seq_len"] for e in sweep] == [4096, 32768]
    assert sweep[1]["training_flops_per_token"] > sweep[0]["training_flops_per_token"]
    glm5 = load_config("glm5")
    step = decode_step_bytes(glm5, 32768, 2)  # the step it reads, and the main model's FLOPs over it
    flops = flops_report(glm5, 32768, "decode", "glmlab", False).total * 2
    assert sweep[1]["decode_step_bytes"] == {**step, "flops_per_byte": pytest.approx(flops / step["total"])}
    res = runner.invoke(app, ["flops", "glm5", "--seq", "4q"])
    assert res.exit_code != 0 and "--seq expects" in str(res.exception)
    # glm5-small at 1,024 tokens: the torch indexer scores in one chunk on a GPU, in 16-row ones on
    # a CPU; the Triton kernel scores exactly the causal pairs
    scoring = {}
    for device, impl in (("cpu", "gather"), ("cuda", "gather"), ("cuda", "triton")):
        args = [
            "flops",
            "glm5-small",
            "--seq",
            "1024",
            "--device",
            device,
            "--set",
            f"dsa_impl={impl}",
            "--json",
        ]
        scoring[device, impl] = json.loads(runner.invoke(app, args).output)["breakdown"]["indexer_scoring"]
    assert scoring["cuda", "gather"] > 1.8 * scoring["cpu", "gather"]
    assert scoring["cuda", "triton"] < scoring["cpu", "gather"]
    res = runner.invoke(app, ["flops", "glm5", "--device", "tpu"])
    assert "use auto, cpu, cuda or cuda:N" in str(res.exception)
    res = runner.invoke(app, ["flops", "glm5", "--convention", "palm"])
    assert "unknown convention" in str(res.exception)


def test_flops_cli_tables_and_plot(tmp_path):
    pytest.importorskip("matplotlib")
    png = tmp_path / "flops.png"
    res = CliRunner().invoke(app, ["flops", "glm5", "--seq", "4k,128k", "--plot", str(png)])
    assert res.exit_code == 0, res.output
    assert "the article's claims" in res.output and "indexer_scoring" in res.output
    assert "decoding step at s=4,096, batch 1 (bf16, no MTP): reads" in " ".join(res.output.split())
    assert png.read_bytes()[:4] == b"\x89PNG"
