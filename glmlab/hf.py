"""Hugging Face interop: read and write the folders transformers' `save_pretrained` writes.

A folder holds `config.json` and `model.safetensors` (or shards listed in
`model.safetensors.index.json`) for `glm_moe_dsa` (GLM-5), `deepseek_v32` or `deepseek_v3`.
Differences from glmlab's own layout (docs/architecture.md has the model's own names):

- routed experts are stored one by one (`mlp.experts.{e}.gate_proj/up_proj/down_proj.weight`);
  glmlab stacks them as `gate_up_proj [E, 2I, d]` (gate rows first) and `down_proj [E, d, I]`;
- MTP modules are stored after the main layers, DeepSeek-V3 style, as `model.layers.{L+j}.*`
  (`enorm`, `hnorm`, `eh_proj`, `shared_head.norm`, and the decoder layer's own weights);
  glmlab calls them `mtp.{j}.*`. Copies of the embedding and LM head that some checkpoints
  keep there are skipped on load and never written;
- RoPE is `rope_parameters {rope_type, rope_theta, factor, ...}` instead of glmlab's
  `rope_theta` + `rope_scaling`; glm_moe_dsa and deepseek_v32 always interleave MLA's RoPE,
  deepseek_v3 follows `rope_interleave`; the indexer interleaves in glm_moe_dsa and
  half-splits in deepseek_v32; deepseek_v3 has no indexer.

glmlab knobs that transformers has no field for (MTP depth and module sharing, `use_moe`,
`dsa_impl`, `index_dtype`, `sparse_keep_probs_gib`) travel in a `glmlab` entry of config.json,
which transformers ignores.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path

import torch

from glmlab.config import ModelConfig, TrainConfig, config_from_dict
from glmlab.errors import GlmlabError
from glmlab.model import CausalLM

ARCHITECTURES = {
    "glm_moe_dsa": "GlmMoeDsaForCausalLM",
    "deepseek_v32": "DeepseekV32ForCausalLM",
    "deepseek_v3": "DeepseekV3ForCausalLM",
}
# config.json fields with the same name and meaning in glmlab's ModelConfig.
SHARED_FIELDS = [
    "vocab_size", "hidden_size", "num_hidden_layers", "intermediate_size", "moe_intermediate_size",
    "n_routed_experts", "num_experts_per_tok", "n_shared_experts", "n_group", "topk_group",
    "norm_topk_prob", "routed_scaling_factor", "num_attention_heads", "q_lora_rank", "kv_lora_rank",
    "qk_nope_head_dim", "qk_rope_head_dim", "v_head_dim", "max_position_embeddings", "rms_norm_eps",
    "tie_word_embeddings", "initializer_range", "attention_bias",
]  # fmt: skip
INDEXER_FIELDS = ["index_topk", "index_n_heads", "index_head_dim"]
YARN_KEYS = [
    "factor",
    "original_max_position_embeddings",
    "beta_fast",
    "beta_slow",
    "mscale",
    "mscale_all_dim",
]
GLMLAB_KNOBS = ["num_nextn_predict_layers", "mtp_share_modules", "use_moe", "dsa_impl", "index_dtype",
                "sparse_keep_probs_gib"]  # fmt: skip
MTP_OWN = {"enorm.weight", "hnorm.weight", "eh_proj.weight"}
MTP_SKIPPED = {"shared_head.head.weight", "embed_tokens.weight"}
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
INDEX_FILE = "model.safetensors.index.json"
WEIGHTS_FILE = "model.safetensors"


# --------------------------------------------------------------------------------------------
# config.json <-> ModelConfig


def _rope_from_hf(hf: dict) -> dict:
    """rope_parameters (transformers 5) or rope_theta + rope_scaling (older files) -> glmlab fields."""
    params = dict(hf.get("rope_parameters") or hf.get("rope_scaling") or {})
    theta = params.get("rope_theta", hf.get("rope_theta", 10000.0))
    kind = params.get("rope_type", params.get("type", "default"))
    if kind == "default":
        return {"rope_theta": float(theta), "rope_scaling": None}
    if kind != "yarn":
        raise GlmlabError(f"config.json rope type {kind!r} is not supported: glmlab knows default and yarn")
    unsupported = [k for k in ("attention_factor", "truncate") if params.get(k) not in (None, True)]
    if unsupported:
        raise GlmlabError(f"config.json yarn field {unsupported[0]!r} is not supported: remove it")
    scaling = {"type": "yarn", **{k: params[k] for k in YARN_KEYS if params.get(k) is not None}}
    scaling.setdefault("original_max_position_embeddings", hf.get("max_position_embeddings"))
    if "factor" not in scaling and scaling["original_max_position_embeddings"]:
        scaling["factor"] = hf["max_position_embeddings"] / scaling["original_max_position_embeddings"]
    return {"rope_theta": float(theta), "rope_scaling": scaling}


def _dense_prefix(types: list, n_layers: int) -> int:
    """mlp_layer_types as glmlab's first_k_dense_replace: dense layers must come first."""
    k = 0
    while k < len(types) and types[k] == "dense":
        k += 1
    if len(types) != n_layers or any(t != "sparse" for t in types[k:]):
        raise GlmlabError(
            "config.json mlp_layer_types must be 'dense' layers then 'sparse' ones, one per layer: "
            "glmlab builds dense layers only before the MoE layers"
        )
    return k


def _model_type(hf: dict) -> str:
    model_type = hf.get("model_type")
    if model_type not in ARCHITECTURES:
        raise GlmlabError(
            f"config.json model_type {model_type!r} is not supported: use {', '.join(ARCHITECTURES)}"
        )
    return model_type


def config_from_hf(hf: dict, mtp_modules: int) -> ModelConfig:
    """A transformers config.json (as a dict) -> a validated ModelConfig.

    `mtp_modules` is how many MTP modules the checkpoint stores; it sets the MTP depth
    unless the file's `glmlab` entry records a depth for shared modules."""
    model_type = _model_type(hf)
    if hf.get("hidden_act", "silu") != "silu" or hf.get("mlp_bias"):
        raise GlmlabError("config.json asks for a non-SiLU or biased MLP: glmlab builds SwiGLU without bias")
    raw: dict = {"name": model_type, "model_type": model_type}
    raw.update({k: hf[k] for k in SHARED_FIELDS if k in hf})
    raw.update(_rope_from_hf(hf))
    n_layers = raw.get("num_hidden_layers", ModelConfig.num_hidden_layers)
    if hf.get("mlp_layer_types") is not None:
        raw["first_k_dense_replace"] = _dense_prefix(list(hf["mlp_layer_types"]), n_layers)
    elif "first_k_dense_replace" in hf:
        raw["first_k_dense_replace"] = hf["first_k_dense_replace"]
    raw["rope_interleave"] = bool(hf.get("rope_interleave", True)) if model_type == "deepseek_v3" else True
    raw["use_dsa"] = model_type != "deepseek_v3"
    if raw["use_dsa"]:
        raw.update({k: hf[k] for k in INDEXER_FIELDS if k in hf})
        raw["indexer_rope_interleave"] = model_type == "glm_moe_dsa"
        types = hf.get("indexer_types") if model_type == "glm_moe_dsa" else None
        raw["indexer_types"] = list(types) if types is not None else ["full"] * n_layers
    raw["num_nextn_predict_layers"] = mtp_modules
    raw["mtp_share_modules"] = False
    knobs = hf.get("glmlab") or {}
    if knobs.get("mtp_share_modules") and mtp_modules == 1:
        raw["mtp_share_modules"] = True
        raw["num_nextn_predict_layers"] = knobs.get("num_nextn_predict_layers", 1)
    raw.update({k: knobs[k] for k in GLMLAB_KNOBS[2:] if k in knobs})  # the MTP knobs are read above
    seq_len = min(
        TrainConfig.seq_len, raw.get("max_position_embeddings", ModelConfig.max_position_embeddings)
    )
    raw["train"] = {"seq_len": seq_len}
    return config_from_dict(raw).model


def config_to_hf(cfg: ModelConfig, dtype: torch.dtype) -> dict:
    """A ModelConfig -> the config.json transformers reads for its model type; a GlmlabError
    names any setting that model type cannot express."""
    t = cfg.model_type

    def refuse(what: str) -> None:
        raise GlmlabError(f"{t} in transformers cannot express {what}: change the config or the model_type")

    if cfg.attention_type != "mla":
        kind = cfg.attention_type
        raise GlmlabError(f"attention_type {kind} cannot be exported: {t} in transformers is MLA only "
                          "(export needs attention_type mla)")  # fmt: skip
    if t != "deepseek_v3" and not cfg.use_dsa:
        refuse("use_dsa false (it always has an indexer); use model_type deepseek_v3")
    if t == "deepseek_v3" and cfg.use_dsa:
        refuse("use_dsa true (it has no indexer); use model_type deepseek_v32 or glm_moe_dsa")
    if t != "deepseek_v3" and not cfg.rope_interleave:
        refuse("rope_interleave false (MLA RoPE is always interleaved)")
    if t != "deepseek_v3" and cfg.q_lora_rank is None:
        refuse("q_lora_rank null (the indexer reads the query latent)")
    if cfg.use_dsa and cfg.indexer_rope_interleave != (t == "glm_moe_dsa"):
        refuse(f"indexer_rope_interleave {str(cfg.indexer_rope_interleave).lower()}")
    if t == "deepseek_v32" and "shared" in cfg.resolved_indexer_types:
        refuse("shared indexer layers (IndexShare); use model_type glm_moe_dsa")
    out: dict = {
        "architectures": [ARCHITECTURES[t]],
        "model_type": t,
        "dtype": str(dtype).removeprefix("torch."),
        "hidden_act": "silu",
        "num_key_value_heads": cfg.num_attention_heads,
    }
    out.update({k: getattr(cfg, k) for k in SHARED_FIELDS})
    rope: dict = {"rope_type": "default", "rope_theta": cfg.rope_theta}
    if cfg.yarn:
        rope = {"rope_type": "yarn", "rope_theta": cfg.rope_theta}
        rope.update({k: cfg.yarn[k] for k in YARN_KEYS if cfg.yarn.get(k) is not None})
    out["rope_parameters"] = rope
    out["first_k_dense_replace"] = len([k for k in cfg.mlp_layer_types if k == "dense"])
    if t == "deepseek_v3":
        out["rope_interleave"] = cfg.rope_interleave
    else:
        out["mlp_layer_types"] = cfg.mlp_layer_types
        out.update({k: getattr(cfg, k) for k in INDEXER_FIELDS})
    if t == "glm_moe_dsa":
        out["indexer_types"] = cfg.resolved_indexer_types
    out["num_nextn_predict_layers"] = cfg.num_mtp_modules
    out["glmlab"] = {k: getattr(cfg, k) for k in GLMLAB_KNOBS}
    return out


# --------------------------------------------------------------------------------------------
# tensor names: transformers layout <-> glmlab state dict


def _glmlab_name(name: str, n_layers: int) -> str | None:
    """A stored tensor name -> glmlab's name (None: a copy glmlab does not keep)."""
    m = re.fullmatch(r"model\.layers\.(\d+)\.(.+)", name)
    if not m or int(m[1]) < n_layers:
        return name
    j, rest = int(m[1]) - n_layers, m[2]
    if rest in MTP_SKIPPED:
        return None
    if rest in MTP_OWN:
        return f"mtp.{j}.{rest}"
    if rest == "shared_head.norm.weight":
        return f"mtp.{j}.shared_head_norm.weight"
    return f"mtp.{j}.layer.{rest}"


def _hf_name(name: str, n_layers: int) -> str:
    """glmlab's name -> the stored name (inverse of `_glmlab_name`)."""
    m = re.fullmatch(r"mtp\.(\d+)\.(.+)", name)
    if not m:
        return name
    prefix, rest = f"model.layers.{n_layers + int(m[1])}.", m[2]
    if rest == "shared_head_norm.weight":
        return prefix + "shared_head.norm.weight"
    return prefix + rest.removeprefix("layer.")


def _stack_experts(tensors: dict[str, torch.Tensor], n_experts: int) -> dict[str, torch.Tensor]:
    """Per-expert `experts.{e}.{gate,up,down}_proj.weight` -> stacked `gate_up_proj`, `down_proj`."""
    out, groups = {}, {}
    for name, t in tensors.items():
        m = re.fullmatch(r"(.+\.mlp\.experts)\.(\d+)\.(gate_proj|up_proj|down_proj)\.weight", name)
        if m:
            groups.setdefault(m[1], {})[(int(m[2]), m[3])] = t
        else:
            out[name] = t
    for prefix, parts in groups.items():
        missing = [f"{e}.{p}" for e in range(n_experts) for p in ("gate_proj", "up_proj", "down_proj")
                   if (e, p) not in parts]  # fmt: skip
        if missing or len(parts) != 3 * n_experts:
            first = (
                f"{prefix}.{missing[0]}.weight" if missing else f"{prefix} (more than {n_experts} experts)"
            )
            raise GlmlabError(f"checkpoint expert tensors do not match n_routed_experts={n_experts}: {first}")
        try:
            out[f"{prefix}.gate_up_proj"] = torch.stack(
                [torch.cat([parts[(e, "gate_proj")], parts[(e, "up_proj")]]) for e in range(n_experts)]
            )
            out[f"{prefix}.down_proj"] = torch.stack([parts[(e, "down_proj")] for e in range(n_experts)])
        except RuntimeError:
            raise GlmlabError(
                f"checkpoint experts under {prefix} have mismatched shapes: the file is damaged"
            ) from None
    return out


def state_dict_to_hf(model: CausalLM) -> dict[str, torch.Tensor]:
    """The model's weights under transformers' names, experts one by one, on the CPU."""
    cfg = model.config
    out = {}
    for name, t in model.state_dict().items():
        if cfg.tie_word_embeddings and name == "lm_head.weight":
            continue
        name, t = _hf_name(name, cfg.num_hidden_layers), t.detach().cpu()
        if name.endswith(".mlp.experts.gate_up_proj"):
            base = name.removesuffix("gate_up_proj")
            gate, up = t.chunk(2, dim=1)  # [E, I, d] each: gate rows come first
            for e in range(t.shape[0]):
                out[f"{base}{e}.gate_proj.weight"] = gate[e].clone()
                out[f"{base}{e}.up_proj.weight"] = up[e].clone()
        elif name.endswith(".mlp.experts.down_proj"):
            base = name.removesuffix("down_proj")
            for e, w in enumerate(t.unbind(0)):
                out[f"{base}{e}.down_proj.weight"] = w.clone()
        else:
            out[name] = t.clone().contiguous()
    return out


# --------------------------------------------------------------------------------------------
# files


def _read_json(path: Path) -> dict:
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise GlmlabError(f"{path} not found: give a folder written by save_pretrained") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise GlmlabError(f"{path} is not valid JSON ({type(err).__name__}): re-save the folder") from None
    if not isinstance(data, dict):
        raise GlmlabError(f"{path} must hold a JSON object")
    return data


def _read_tensors(folder: Path) -> dict[str, torch.Tensor]:
    """Every tensor of `model.safetensors`, or of the shards its index lists, on the CPU."""
    from safetensors.torch import load_file

    if (folder / INDEX_FILE).is_file():
        weight_map = _read_json(folder / INDEX_FILE).get("weight_map")
        if not isinstance(weight_map, dict) or not weight_map:
            raise GlmlabError(f"{folder / INDEX_FILE} has no weight_map: re-save the folder")
        files = sorted(set(weight_map.values()))
    elif (folder / WEIGHTS_FILE).is_file():
        files = [WEIGHTS_FILE]
    else:
        raise GlmlabError(f"{folder} has no {WEIGHTS_FILE} or {INDEX_FILE}: save the model with safetensors")
    tensors: dict[str, torch.Tensor] = {}
    for file in files:
        path = folder / file
        if not path.is_file():
            raise GlmlabError(f"shard {path} listed in {INDEX_FILE} is missing: copy the whole folder")
        try:
            tensors.update(load_file(str(path)))
        except Exception as err:  # safetensors raises its own error type on a damaged file
            raise GlmlabError(
                f"{path} is corrupt ({type(err).__name__}): re-download or re-save it"
            ) from None
    return tensors


def _mtp_modules_stored(names, n_layers: int) -> int:
    found = {int(m[1]) for n in names if (m := re.match(r"model\.layers\.(\d+)\.", n))}
    extra = sorted(i for i in found if i >= n_layers)
    if extra != list(range(n_layers, n_layers + len(extra))):
        raise GlmlabError(f"checkpoint MTP layers {extra} are not numbered from {n_layers} without gaps")
    return len(extra)


def from_pretrained(
    path: str | Path, device: str | torch.device = "cpu", dtype: torch.dtype | None = None
) -> CausalLM:
    """Load a transformers-format folder (glm_moe_dsa, deepseek_v32, deepseek_v3) as a CausalLM.

    dtype None keeps the dtype config.json names (float32 if none). The MTP depth is the
    number of MTP modules stored (transformers itself stores none)."""
    folder = Path(path)
    if not folder.is_dir():
        raise GlmlabError(f"{path} is not a folder: give the directory written by save_pretrained")
    hf = _read_json(folder / "config.json")
    _model_type(hf)
    tensors = _read_tensors(folder)
    n_layers = hf.get("num_hidden_layers")
    if not isinstance(n_layers, int):
        raise GlmlabError(f"{folder / 'config.json'} has no integer num_hidden_layers")
    cfg = config_from_hf(hf, _mtp_modules_stored(tensors, n_layers))
    if dtype is None:
        dtype = DTYPES.get(str(hf.get("dtype") or hf.get("torch_dtype") or "float32"), torch.float32)
    renamed = {}
    for name, t in tensors.items():
        new = _glmlab_name(name, n_layers)
        if new is not None:
            renamed[new] = t
    state = _stack_experts(renamed, cfg.n_routed_experts)
    with torch.device(device):
        model = CausalLM(cfg, init=False)
    for p in model.parameters():
        p.data = p.data.to(dtype)
    expected = model.state_dict()
    missing = [
        n for n in expected if n not in state and not (n == "lm_head.weight" and cfg.tie_word_embeddings)
    ]
    unexpected = [n for n in state if n not in expected]
    if missing:
        raise GlmlabError(
            f"checkpoint lacks {len(missing)} tensors that config.json implies, e.g. {missing[0]}"
        )
    if unexpected:
        raise GlmlabError(
            f"checkpoint has {len(unexpected)} tensors glmlab does not know, e.g. {unexpected[0]}"
        )
    for name, t in state.items():
        if t.shape != expected[name].shape:
            raise GlmlabError(
                f"checkpoint tensor {name} has shape {list(t.shape)}, config.json implies "
                f"{list(expected[name].shape)}: the config and the weights do not match"
            )
    model.load_state_dict(state, strict=False)
    return model


def save_pretrained(model: CausalLM, path: str | Path) -> Path:
    """Write config.json + model.safetensors that transformers (and `from_pretrained`) load.

    Written to a temporary folder next to `path` and renamed into place, so an interrupted
    save never leaves a half-written folder."""
    from safetensors.torch import save_file

    final = Path(path)
    if final.exists() and not final.is_dir():
        raise GlmlabError(f"{path} exists and is not a folder: choose another path")
    dtype = model.lm_head.weight.dtype
    config = config_to_hf(model.config, dtype)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = final.parent / f".{final.name}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        (tmp / "config.json").write_text(json.dumps(config, indent=2) + "\n")
        save_file(state_dict_to_hf(model), str(tmp / WEIGHTS_FILE), metadata={"format": "pt"})
        old = final.parent / f".{final.name}.old-{os.getpid()}"
        if final.exists():
            os.replace(final, old)
        os.replace(tmp, final)
        shutil.rmtree(old, ignore_errors=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return final
