"""Hugging Face interop (glmlab/hf.py): tiny random checkpoints written by transformers load in
glmlab with the same logits, and glmlab's own saves load in transformers with the same logits."""

from __future__ import annotations

import json

import pytest
import torch

import glmlab
from glmlab.build import build_model
from glmlab.config import load_config
from glmlab.errors import GlmlabError

transformers = pytest.importorskip("transformers")
pytestmark = pytest.mark.usefixtures("one_thread")

SEQ = 24  # longer than index_topk (8): DSA really selects
COMMON = dict(
    vocab_size=96, hidden_size=64, intermediate_size=96, moe_intermediate_size=32, num_hidden_layers=4,
    first_k_dense_replace=1, num_attention_heads=4, num_key_value_heads=4, n_routed_experts=8,
    num_experts_per_tok=2, n_shared_experts=1, kv_lora_rank=32, q_lora_rank=48, qk_nope_head_dim=16,
    qk_rope_head_dim=8, v_head_dim=16, max_position_embeddings=256, initializer_range=0.1,
)  # fmt: skip
DSA = dict(index_topk=8, index_n_heads=8, index_head_dim=16)
YARN = {
    "rope_type": "yarn", "rope_theta": 10000.0, "factor": 4.0, "original_max_position_embeddings": 64,
    "beta_fast": 32, "beta_slow": 1, "mscale": 0.9, "mscale_all_dim": 0.7,
}  # fmt: skip
PLAIN = {"rope_type": "default", "rope_theta": 10000.0}
HF_CASES = {
    "glm_moe_dsa": ("GlmMoeDsaConfig", "GlmMoeDsaForCausalLM",
                    dict(**DSA, rope_parameters=PLAIN, indexer_types=["full", "shared", "full", "shared"])),
    "deepseek_v32": ("DeepseekV32Config", "DeepseekV32ForCausalLM",
                     dict(**DSA, rope_parameters=PLAIN, n_group=4, topk_group=2)),
    "deepseek_v3": ("DeepseekV3Config", "DeepseekV3ForCausalLM",
                    dict(rope_parameters=YARN, n_group=4, topk_group=2)),
    "deepseek_v3_halfsplit": ("DeepseekV3Config", "DeepseekV3ForCausalLM",
                              dict(rope_parameters=YARN, n_group=4, topk_group=2, rope_interleave=False)),
}  # fmt: skip


def _set_biases(model: torch.nn.Module) -> None:
    """Nonzero MoE selection biases, so that choosing by `s + b` but weighing by `s` is tested."""
    for name, buf in model.named_buffers():
        if name.endswith("e_score_correction_bias"):
            buf.copy_(torch.randn_like(buf) * 0.1)


def _hf_model(case: str):
    config_cls, model_cls, extra = HF_CASES[case]
    cfg = getattr(transformers, config_cls)(**COMMON, **extra, attn_implementation="eager")
    model = getattr(transformers, model_cls)(cfg).eval()
    _set_biases(model)
    return model


def _ids(vocab: int, batch: int = 2) -> torch.Tensor:
    return torch.randint(0, vocab, (batch, SEQ), generator=torch.Generator().manual_seed(1))


@pytest.mark.parametrize("case", list(HF_CASES))
def test_transformers_checkpoint_loads_with_same_logits(case, tmp_path):
    torch.manual_seed(0)
    hf = _hf_model(case)
    hf.save_pretrained(tmp_path)
    model = glmlab.from_pretrained(tmp_path).eval()
    ids = _ids(COMMON["vocab_size"])
    with torch.no_grad():
        expected = hf(ids).logits
        got = model(ids).logits
    assert got.shape == expected.shape
    assert (got - expected).abs().max().item() < 1e-4
    assert model.config.model_type == hf.config.model_type
    assert not model.mtp  # transformers stores no MTP weights


def test_sharded_checkpoint_loads(tmp_path):
    torch.manual_seed(0)
    hf = _hf_model("glm_moe_dsa")
    hf.save_pretrained(tmp_path, max_shard_size="200KB")
    assert (tmp_path / "model.safetensors.index.json").is_file()
    model = glmlab.from_pretrained(tmp_path).eval()
    ids = _ids(COMMON["vocab_size"])
    with torch.no_grad():
        assert (model(ids).logits - hf(ids).logits).abs().max().item() < 1e-4


GLMLAB_CASES = {
    "glm_moe_dsa": ["indexer_types=FSFS"],
    "deepseek_v32": ["model_type=deepseek_v32", "indexer_rope_interleave=false", "n_group=4", "topk_group=2"],
    "deepseek_v3": ["model_type=deepseek_v3", "use_dsa=false", "n_group=4", "topk_group=2",
                    "rope_scaling={type: yarn, factor: 4, original_max_position_embeddings: 64, "
                    "mscale: 1.0, mscale_all_dim: 1.0}"],
}  # fmt: skip
TINY = ["vocab_size=96", "hidden_size=64", "num_hidden_layers=4", "initializer_range=0.1", "index_topk=8"]


def _glmlab_model(case: str):
    cfg = load_config("glm5-tiny", TINY + GLMLAB_CASES[case])
    model = build_model(cfg).eval()
    with torch.no_grad():
        _set_biases(model)
    return model


@pytest.mark.parametrize("case", list(GLMLAB_CASES))
def test_glmlab_save_loads_in_transformers_with_same_logits(case, tmp_path):
    torch.manual_seed(0)
    model = _glmlab_model(case)
    glmlab.save_pretrained(model, tmp_path / "out")
    hf = transformers.AutoModelForCausalLM.from_pretrained(
        tmp_path / "out", attn_implementation="eager"
    ).eval()
    assert type(hf).__name__ == glmlab.hf.ARCHITECTURES[model.config.model_type]
    ids = _ids(96)
    with torch.no_grad():
        assert (model(ids).logits - hf(ids).logits).abs().max().item() < 1e-4


def test_round_trip_keeps_every_tensor_and_mtp(tmp_path):
    """glmlab -> disk -> glmlab: identical weights (MTP included) and glmlab's MTP knobs."""
    torch.manual_seed(0)
    model = _glmlab_model("glm_moe_dsa")
    model.config.num_nextn_predict_layers, model.config.mtp_share_modules = 3, True
    model.config.index_dtype = "fp8"  # a glmlab-only knob: kept beside transformers' fields
    glmlab.save_pretrained(model, tmp_path)
    names = set(_stored_names(tmp_path))
    L = model.config.num_hidden_layers
    assert (
        f"model.layers.{L}.eh_proj.weight" in names and f"model.layers.{L}.shared_head.norm.weight" in names
    )
    assert f"model.layers.{L}.mlp.experts.0.gate_proj.weight" in names
    assert not any(n.startswith("mtp.") or n.startswith(f"model.layers.{L + 1}.") for n in names)
    loaded = glmlab.from_pretrained(tmp_path)
    assert loaded.config.num_nextn_predict_layers == 3 and loaded.config.mtp_share_modules
    assert loaded.config.index_dtype == "fp8"
    original, again = model.state_dict(), loaded.state_dict()
    assert original.keys() == again.keys()
    for name, t in original.items():
        assert torch.equal(t, again[name]), name
    ids = _ids(96)
    with torch.no_grad():
        a, b = model(ids, labels=ids), loaded(ids, labels=ids)
    assert len(b.mtp_losses) == 3
    assert all(torch.equal(x, y) for x, y in zip(a.mtp_losses, b.mtp_losses, strict=True))


def _stored_names(folder) -> list[str]:
    from safetensors import safe_open

    with safe_open(str(folder / "model.safetensors"), "pt") as f:
        return list(f.keys())


def test_mtp_copies_of_embedding_and_head_are_ignored(tmp_path):
    """DeepSeek-V3 checkpoints repeat the embedding and LM head inside the MTP layer."""
    from safetensors.torch import load_file, save_file

    torch.manual_seed(0)
    model = _glmlab_model("deepseek_v3")
    glmlab.save_pretrained(model, tmp_path)
    tensors = load_file(str(tmp_path / "model.safetensors"))
    L = model.config.num_hidden_layers
    tensors[f"model.layers.{L}.embed_tokens.weight"] = torch.zeros_like(tensors["model.embed_tokens.weight"])
    tensors[f"model.layers.{L}.shared_head.head.weight"] = torch.zeros_like(tensors["lm_head.weight"])
    save_file(tensors, str(tmp_path / "model.safetensors"), metadata={"format": "pt"})
    loaded = glmlab.from_pretrained(tmp_path)
    assert torch.equal(loaded.model.embed_tokens.weight, model.model.embed_tokens.weight)
    assert torch.equal(loaded.lm_head.weight, model.lm_head.weight)


def _expect_error(path, match: str) -> None:
    with pytest.raises(GlmlabError, match=match) as info:
        glmlab.from_pretrained(path)
    assert "\n" not in str(info.value)


def test_bad_folders_are_one_line_errors(tmp_path):
    from safetensors.torch import load_file, save_file

    _expect_error(tmp_path / "nope", "not a folder")
    _expect_error(tmp_path, "config.json not found")
    torch.manual_seed(0)
    glmlab.save_pretrained(_glmlab_model("deepseek_v3"), tmp_path / "ok")
    good = tmp_path / "ok"
    config = json.loads((good / "config.json").read_text())

    bad_type = tmp_path / "type"
    bad_type.mkdir()
    (bad_type / "config.json").write_text(json.dumps({**config, "model_type": "llama"}))
    _expect_error(bad_type, "model_type 'llama' is not supported")

    no_weights = tmp_path / "weights"
    no_weights.mkdir()
    (no_weights / "config.json").write_text(json.dumps(config))
    _expect_error(no_weights, "no model.safetensors")

    corrupt = tmp_path / "corrupt"
    corrupt.mkdir()
    (corrupt / "config.json").write_text(json.dumps(config))
    (corrupt / "model.safetensors").write_bytes((good / "model.safetensors").read_bytes()[:5000])
    _expect_error(corrupt, "corrupt")

    mismatch = tmp_path / "mismatch"
    mismatch.mkdir()
    (mismatch / "config.json").write_text(json.dumps({**config, "kv_lora_rank": 16}))
    (mismatch / "model.safetensors").write_bytes((good / "model.safetensors").read_bytes())
    _expect_error(mismatch, "shape")

    missing = tmp_path / "missing"
    missing.mkdir()
    (missing / "config.json").write_text(json.dumps(config))
    tensors = load_file(str(good / "model.safetensors"))
    del tensors["model.norm.weight"]
    save_file(tensors, str(missing / "model.safetensors"))
    _expect_error(missing, "model.norm.weight")


def test_unrepresentable_config_is_refused_on_save(tmp_path):
    model = build_model(load_config("glm5-tiny", TINY + ["use_dsa=false"]), "meta")
    with pytest.raises(GlmlabError, match="use_dsa false"):
        glmlab.save_pretrained(model, tmp_path / "x")
    assert not (tmp_path / "x").exists()
