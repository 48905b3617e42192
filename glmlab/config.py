"""One typed config for model and training: YAML with `extends:`, `--set` overrides, validation.

Model field names follow transformers' `GlmMoeDsaConfig` (GLM-5's values and what each does:
docs/architecture.md); the fields glmlab adds are marked in `ModelConfig`. Every command reads the
same `Config` object: nothing downstream re-derives a shape on its own.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from glmlab.device import PRECISIONS
from glmlab.errors import GlmlabError

# How DSA selects and attends (glmlab/plan.py resolves `auto` per device and context).
DSA_IMPLS = ("auto", "triton", "gather", "mask", "flex")

PRESETS_DIR = Path(__file__).resolve().parent.parent / "presets"
RECOMPUTE = ("none", "full")  # train.recompute: activation recomputation per decoder layer
EP_DISPATCH = ("exact", "padded")  # train.ep_dispatch: how expert parallelism sends tokens


@dataclass
class ModelConfig:
    """Architecture. Names as in transformers' GlmMoeDsaConfig; glmlab's own knobs last."""

    model_type: str = "glm_moe_dsa"
    vocab_size: int = 154880
    hidden_size: int = 6144
    num_hidden_layers: int = 78
    first_k_dense_replace: int = 3
    intermediate_size: int = 12288
    moe_intermediate_size: int = 2048
    n_routed_experts: int = 256
    num_experts_per_tok: int = 8
    n_shared_experts: int = 1
    n_group: int = 1
    topk_group: int = 1
    norm_topk_prob: bool = True
    routed_scaling_factor: float = 2.5
    num_attention_heads: int = 64
    q_lora_rank: int | None = 2048
    kv_lora_rank: int = 512
    qk_nope_head_dim: int = 192
    qk_rope_head_dim: int = 64
    v_head_dim: int = 256
    rope_theta: float = 1e6
    rope_interleave: bool = True
    # YaRN as DeepSeek-V3 writes it: {type: yarn, factor, original_max_position_embeddings,
    # beta_fast, beta_slow, mscale, mscale_all_dim}; null for plain RoPE.
    rope_scaling: dict | None = None
    index_topk: int = 2048
    index_n_heads: int = 32
    index_head_dim: int = 128
    indexer_rope_interleave: bool = True
    # IndexShare: per-layer "full"/"shared" (or a string of F/S). Null derives it from
    # index_topk_freq and index_skip_topk_offset: layer i is full iff
    # max(i - offset + 1, 0) % freq == 0 (freq 1 makes every layer full).
    indexer_types: list | None = None
    index_topk_freq: int = 1
    index_skip_topk_offset: int = 2
    num_nextn_predict_layers: int = 1
    max_position_embeddings: int = 202752
    rms_norm_eps: float = 1e-5
    tie_word_embeddings: bool = False
    initializer_range: float = 0.02
    attention_bias: bool = False
    # --- glmlab's own knobs -------------------------------------------------------------
    use_dsa: bool = True  # False: dense MLA, no indexer (DeepSeek-V3, or an ablation baseline)
    use_moe: bool = True  # False: every layer a dense SwiGLU MLP (the dense-FFN baseline)
    mtp_share_modules: bool = False  # True: one MTP module applied at all D depths (GLM-5)
    dsa_impl: str = "auto"  # auto | triton | gather (sparse) | mask (dense reference) | flex: glmlab/plan.py
    # bf16 | fp8: the Triton top-k scores in fp8 e4m3 (CUDA, Hopper; glmlab/kernels/indexer.py); the
    # torch paths and the indexer's loss ignore it
    index_dtype: str = "bf16"
    # The Triton sparse attention keeps a training call's probabilities [n,H,K] from the forward for
    # the backward (which then skips recomputing them) when one sequence's, over every layer that
    # attends (the main layers and the MTP depths), fit in this many GiB counted at bf16's 2 bytes
    # (fp32 compute keeps twice that); each sequence of the batch keeps its own. 0 always
    # recomputes. 32 covers the two-layer GLM-5 attention slice at 64K tokens, not the whole GLM-5 at
    # 4K (81 layers of 1 GiB: glmlab/plan.py); lower it where a run at the edge of memory no longer fits
    sparse_keep_probs_gib: float = 32.0
    # mla | gqa | mha (docs/architecture.md, "Attention types"): gqa and mha replace MLA with
    # grouped-query attention (q/k/v/o projections, a per-head K/V cache) and read the two fields below
    attention_type: str = "mla"
    num_key_value_heads: int | None = None  # gqa: K/V heads (a divisor of num_attention_heads); mha: heads
    head_dim: int | None = None  # gqa/mha: width of every q, k and v head; null: hidden_size // heads
    # Normal std of the token embedding at initialisation; null: initializer_range (transformers'
    # rule). A larger one keeps tokens apart at the routers (docs/architecture.md, "Routing collapse
    # at initialisation").
    embedding_init_std: float | None = None
    # True: the projections that write into the residual stream (attention's o_proj, the down
    # projections of dense MLPs and experts) start with std initializer_range / sqrt(2 *
    # num_hidden_layers), as GPT-2 and torchtitan draw them, so deep layers' routers still tell
    # tokens apart at initialisation (same section).
    scale_residual_init: bool = False

    # Derived shapes, computed from the fields above (never stored in YAML).
    @property
    def qk_head_dim(self) -> int:
        return self.qk_nope_head_dim + self.qk_rope_head_dim

    @property
    def mlp_layer_types(self) -> list[str]:
        """'dense' or 'sparse' (MoE) per main layer, as transformers spells it."""
        n_dense = self.num_hidden_layers if not self.use_moe else self.first_k_dense_replace
        n_dense = min(n_dense, self.num_hidden_layers)
        return ["dense"] * n_dense + ["sparse"] * (self.num_hidden_layers - n_dense)

    @property
    def resolved_indexer_types(self) -> list[str]:
        """'full' or 'shared' per main layer (docs/architecture.md, "IndexShare")."""
        if self.indexer_types is not None:
            return list(self.indexer_types)
        freq, offset = max(self.index_topk_freq, 1), self.index_skip_topk_offset
        return [
            "full" if max(i - offset + 1, 0) % freq == 0 else "shared" for i in range(self.num_hidden_layers)
        ]

    @property
    def num_mtp_modules(self) -> int:
        """MTP modules stored: one when shared across depths, else one per depth."""
        if self.num_nextn_predict_layers == 0:
            return 0
        return 1 if self.mtp_share_modules else self.num_nextn_predict_layers

    @property
    def mtp_uses_moe(self) -> bool:
        """An MTP layer sits after the main layers, so it is MoE unless MoE is off."""
        return self.use_moe and self.num_hidden_layers >= self.first_k_dense_replace

    @property
    def yarn(self) -> dict | None:
        scaling = self.rope_scaling
        if scaling and scaling.get("type", scaling.get("rope_type")) == "yarn":
            return scaling
        return None

    @property
    def resolved_kv_heads(self) -> int:
        """GQA's key/value heads: num_key_value_heads, or every query head (MHA)."""
        if self.attention_type == "mha" or self.num_key_value_heads is None:
            return self.num_attention_heads
        return self.num_key_value_heads

    @property
    def resolved_head_dim(self) -> int:
        """GQA/MHA head width: head_dim, or hidden_size // num_attention_heads."""
        return self.head_dim if self.head_dim is not None else self.hidden_size // self.num_attention_heads

    @property
    def softmax_scale(self) -> float:
        """Score scale 1/sqrt(width of q.k) (MLA: nope + rope; GQA/MHA: head_dim), times mscale**2
        under YaRN (docs/architecture.md, YaRN)."""
        width = self.qk_head_dim if self.attention_type == "mla" else self.resolved_head_dim
        scale = width**-0.5
        if self.yarn and self.yarn.get("mscale_all_dim"):
            factor = self.yarn["factor"]
            mscale = 0.1 * self.yarn["mscale_all_dim"] * math.log(factor) + 1.0 if factor > 1 else 1.0
            scale *= mscale * mscale
        return scale


@dataclass
class TrainConfig:
    """Training recipe: lives in the same YAML as the model (`train:` section)."""

    seq_len: int = 256
    batch_size: int = 8
    grad_accum: int = 1
    steps: int = 200
    optimizer: str = "adamw"  # "adamw" or "muon" (Muon on matrices, AdamW on the rest)
    lr: float = 3e-3
    min_lr_ratio: float = 0.1
    warmup_steps: int = 20
    schedule: str = "cosine"  # "cosine" or "wsd" (warm-up, stable, decay)
    decay_fraction: float = 0.2  # share of steps spent decaying under "wsd"
    weight_decay: float = 0.1
    beta1: float = 0.9
    beta2: float = 0.95
    grad_clip: float = 1.0
    mtp_lambda: float = 0.3  # L = L_LM + lambda * L_MTP (docs/architecture.md, "Training objective")
    balance_alpha: float = 1e-4  # sequence-wise balance loss weight (docs/architecture.md, MoE)
    bias_update_gamma: float = 1e-3  # auxiliary-loss-free bias step (docs/architecture.md); 0 turns it off
    dsa_warmup_steps: int = 0  # stage 1: dense attention, only the indexer trains (docs/architecture.md, DSA)
    dsa_warmup_lr: float = 1e-3
    indexer_loss_weight: float = 1.0  # weight of the indexer KL loss in stage 2
    tokenizer: str = "bpe"  # "bpe" (trained on the training split) or "byte"
    data: str = "stdlib"  # "stdlib", "synthetic", or a file / directory / glob
    val_fraction: float = 0.05
    eval_interval: int = 50
    eval_batches: int = 8
    log_interval: int = 10
    checkpoint_interval: int = 50
    # steps between Python's young-generation collections; the automatic collector is off while
    # training (glmlab/train/gc_schedule.py). 0 leaves it on, as Python has it
    gc_interval: int = 50
    seed: int = 1337
    compile: bool = False  # torch.compile each decoder layer (model/compile.py); pays off on long runs
    # full: keep only each decoder layer's input and recompute the rest in backward (model/recompute.py)
    recompute: str = "none"
    # bf16-mixed: fp32 weights, bf16 autocast on a GPU (plain fp32 on the CPU, where autocast is
    # slower); bf16: bf16 weights and compute; fp32: no autocast anywhere
    precision: str = "bf16-mixed"
    tensorboard: bool = False  # also log to TensorBoard in <run>/tensorboard (the `tensorboard` extra)
    # read the gradient norm back after every step and stop at the first non-finite one, naming the
    # parameters whose gradients are not finite, before the optimiser spreads them (costs a sync)
    check_gradients: bool = False
    expert_parallel: int = 1  # ranks the routed experts are split over: 1, or every rank (docs/scaling.md)
    # how EP sends tokens: exact (only to the ranks holding one of their experts, sizes read back
    # per layer) or padded (to every rank, fixed sizes, no read-back, twice the experts' buffers at
    # EP=2; slower and larger on two H200s in session 14, faster on one since: docs/scaling.md)
    ep_dispatch: str = "exact"


@dataclass
class Config:
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    name: str = "custom"

    def to_dict(self) -> dict:
        out = {"name": self.name}
        out.update(dataclasses.asdict(self.model))
        out["train"] = dataclasses.asdict(self.train)
        return out


# --------------------------------------------------------------------------------------------
# Loading: presets, extends, overrides


def preset_names() -> list[str]:
    return sorted(p.stem for p in PRESETS_DIR.glob("*.yaml"))


def _resolve_source(source: str | Path, relative_to: Path | None = None) -> Path:
    """A preset name ('glm5-tiny') or a path to a YAML file."""
    text = str(source)
    if not text.endswith((".yaml", ".yml")) and "/" not in text:
        path = PRESETS_DIR / f"{text}.yaml"
        if path.is_file():
            return path
        hint = difflib.get_close_matches(text, preset_names(), n=1)
        tip = f"did you mean '{hint[0]}'?" if hint else f"choose one of {', '.join(preset_names())}"
        raise GlmlabError(f"unknown preset '{text}': {tip} (or give a path to a YAML file)")
    path = Path(text)
    if not path.is_absolute() and relative_to is not None and not path.exists():
        path = relative_to / path
    if not path.exists():
        raise GlmlabError(f"config file not found: {text} (check the path, or use a preset name)")
    if not path.is_file():
        raise GlmlabError(f"config path is not a file: {text}")
    return path


def _read_yaml(path: Path) -> dict:
    try:
        text = path.read_text()
    except OSError as err:
        raise GlmlabError(f"cannot read config {path}: {err.strerror}") from None
    if not text.strip():
        raise GlmlabError(f"config file {path} is empty: add fields or `extends: glm5-tiny`")
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(err, "problem", None) or "invalid YAML"
        raise GlmlabError(f"YAML syntax error in {path}{where}: {problem}") from None
    if data is None:
        raise GlmlabError(f"config file {path} has no fields: add fields or `extends: glm5-tiny`")
    if not isinstance(data, dict):
        raise GlmlabError(f"config file {path} must be a mapping of field: value")
    return data


def _merge(base: dict, over: dict) -> dict:
    out = dict(base)
    for key, value in over.items():
        if key == "train" and isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = {**out[key], **value}
        else:
            out[key] = value
    return out


def _load_raw(source: str | Path, chain: tuple[Path, ...] = (), relative_to: Path | None = None) -> dict:
    path = _resolve_source(source, relative_to).resolve()
    if path in chain:
        cycle = " -> ".join(p.name for p in (*chain, path))
        raise GlmlabError(f"`extends:` cycle in configs: {cycle}; remove one of the links")
    data = _read_yaml(path)
    parent = data.pop("extends", None)
    data.setdefault("name", path.stem)
    if parent is None:
        return data
    if not isinstance(parent, str):
        raise GlmlabError(f"`extends:` in {path} must be a preset name or a path, got {parent!r}")
    base = _load_raw(parent, (*chain, path), path.parent)
    return _merge(base, data)


def parse_overrides(items: list[str] | None) -> dict:
    """`FIELD=VALUE` strings into a nested dict; plain names find their section themselves."""
    out: dict = {}
    model_fields = {f.name for f in dataclasses.fields(ModelConfig)}
    train_fields = {f.name for f in dataclasses.fields(TrainConfig)}
    for item in items or []:
        if "=" not in item:
            raise GlmlabError(f"--set expects FIELD=VALUE, got '{item}' (for example --set index_topk=64)")
        key, text = item.split("=", 1)
        key = key.strip()
        try:
            value = yaml.safe_load(text) if text.strip() else None
        except yaml.YAMLError:
            value = text
        parts = key.split(".")
        if len(parts) == 1 and parts[0] in train_fields and parts[0] not in model_fields:
            parts = ["train", parts[0]]
        if parts[0] == "model":
            parts = parts[1:]
        if len(parts) == 2 and parts[0] == "train":
            out.setdefault("train", {})[parts[1]] = value
        elif len(parts) == 1:
            out[parts[0]] = value
        else:
            raise GlmlabError(
                f"--set {key}: nested fields are `train.FIELD`; model fields take the plain name"
            )
    return out


def load_config(source: str | Path | dict, overrides: list[str] | None = None) -> Config:
    """Load a preset name, YAML path or dict, apply `--set` overrides, and validate."""
    raw = dict(source) if isinstance(source, dict) else _load_raw(source)
    raw.pop("extends", None)
    raw = _merge(raw, parse_overrides(overrides))
    return config_from_dict(raw)


# --------------------------------------------------------------------------------------------
# Typing and validation


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", str(tp)).replace("NoneType", "null")


def _coerce(section: str, name: str, tp: Any, value: Any) -> Any:
    """Check and convert one field's value; int to float is allowed, bool to int is not."""
    where = f"{section}{name}"
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        tp = next(a for a in args if a is not type(None))
        origin = typing.get_origin(tp)
    if value is None:
        raise GlmlabError(f"{where} must be {_type_name(tp)}, got null")
    if tp is float:
        if isinstance(value, str):
            try:
                return float(value)
            except ValueError:
                pass
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
    elif tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
    elif tp is bool:
        if isinstance(value, bool):
            return value
    elif tp is str:
        if isinstance(value, str):
            return value
    elif tp is dict or origin is dict:
        if isinstance(value, dict):
            return value
    elif tp is list or origin is list:
        if isinstance(value, str) and name == "indexer_types":
            return value  # an F/S pattern, checked in validation
        if isinstance(value, list):
            return value
    raise GlmlabError(f"{where} must be {_type_name(tp)}, got {value!r}")


def _build(cls: type, data: dict, section: str) -> Any:
    known = {f.name: f for f in dataclasses.fields(cls)}
    kwargs = {}
    hints = typing.get_type_hints(cls)
    for key, value in data.items():
        if key not in known:
            near = difflib.get_close_matches(key, list(known), n=1)
            tip = f"did you mean '{near[0]}'?" if near else "see `glmlab build --help` or presets/*.yaml"
            raise GlmlabError(f"unknown field '{section}{key}': {tip}")
        kwargs[key] = _coerce(section, key, hints[key], value)
    return cls(**kwargs)


def config_from_dict(raw: dict) -> Config:
    raw = dict(raw)
    name = raw.pop("name", "custom")
    train = raw.pop("train", None) or {}
    if not isinstance(train, dict):
        raise GlmlabError("`train:` must be a mapping of training fields")
    cfg = Config(
        model=_build(ModelConfig, raw, ""), train=_build(TrainConfig, train, "train."), name=str(name)
    )
    _normalise(cfg.model)
    validate(cfg)
    return cfg


def _normalise(m: ModelConfig) -> None:
    if isinstance(m.indexer_types, str):
        letters = {"F": "full", "S": "shared"}
        bad = sorted(set(m.indexer_types.upper()) - set(letters))
        if bad:
            raise GlmlabError(f"indexer_types pattern may only use F and S, found {''.join(bad)!r}")
        m.indexer_types = [letters[c] for c in m.indexer_types.upper()]


def _fail(name: str, problem: str, fix: str) -> None:
    raise GlmlabError(f"{name} {problem}: {fix}")


def validate(cfg: Config) -> None:
    """Reject configs that cannot build a model, naming the field and the fix."""
    m, t = cfg.model, cfg.train
    positive = [
        "vocab_size", "hidden_size", "num_hidden_layers", "intermediate_size",
        "moe_intermediate_size", "n_routed_experts", "num_experts_per_tok", "n_group",
        "topk_group", "num_attention_heads", "kv_lora_rank", "qk_nope_head_dim",
        "qk_rope_head_dim", "v_head_dim", "index_n_heads", "index_head_dim",
        "max_position_embeddings", "index_topk_freq",
    ]  # fmt: skip
    for name in positive:
        if getattr(m, name) <= 0:
            _fail(name, f"must be positive, got {getattr(m, name)}", "set a size of at least 1")
    if m.q_lora_rank is not None and m.q_lora_rank <= 0:
        _fail("q_lora_rank", f"must be positive or null, got {m.q_lora_rank}", "null gives a plain q_proj")
    if m.n_shared_experts < 0:
        _fail("n_shared_experts", f"must be >= 0, got {m.n_shared_experts}", "use 0 for no shared expert")
    if m.index_topk < 1:
        _fail("index_topk", f"must be >= 1, got {m.index_topk}", "set the keys per query, e.g. 64")
    if m.first_k_dense_replace < 0:
        _fail("first_k_dense_replace", f"must be >= 0, got {m.first_k_dense_replace}", "use 0 for all-MoE")
    if m.num_nextn_predict_layers < 0:
        _fail(
            "num_nextn_predict_layers", f"must be >= 0, got {m.num_nextn_predict_layers}", "use 0 for no MTP"
        )
    if m.index_skip_topk_offset < 0:
        _fail("index_skip_topk_offset", "must be >= 0", "use 2 for no IndexShare offset")
    if m.num_experts_per_tok > m.n_routed_experts:
        _fail(
            "num_experts_per_tok",
            f"({m.num_experts_per_tok}) exceeds n_routed_experts ({m.n_routed_experts})",
            "choose at most n_routed_experts",
        )
    if m.n_routed_experts % m.n_group:
        _fail(
            "n_routed_experts",
            f"({m.n_routed_experts}) is not divisible by n_group ({m.n_group})",
            "make the expert count a multiple of n_group",
        )
    if m.topk_group > m.n_group:
        _fail("topk_group", f"({m.topk_group}) exceeds n_group ({m.n_group})", "choose at most n_group")
    if m.n_group > 1 and m.n_routed_experts // m.n_group < 2:
        _fail("n_group", "leaves fewer than 2 experts per group", "group scores sum each group's top 2")
    if m.n_group > 1 and m.topk_group * (m.n_routed_experts // m.n_group) < m.num_experts_per_tok:
        _fail("topk_group", "keeps fewer experts than num_experts_per_tok", "raise topk_group")
    if m.qk_rope_head_dim % 2:
        _fail("qk_rope_head_dim", f"must be even, got {m.qk_rope_head_dim}", "rotary dims come in pairs")
    if m.use_dsa and m.qk_rope_head_dim > m.index_head_dim:
        _fail(
            "qk_rope_head_dim",
            f"({m.qk_rope_head_dim}) does not fit in index_head_dim ({m.index_head_dim})",
            "the indexer rotates its first qk_rope_head_dim dims: raise index_head_dim",
        )
    types_ = m.indexer_types
    if types_ is not None:
        if len(types_) != m.num_hidden_layers:
            _fail(
                "indexer_types",
                f"has {len(types_)} entries for {m.num_hidden_layers} layers",
                "give one 'full' or 'shared' per layer",
            )
        bad = [x for x in types_ if x not in ("full", "shared")]
        if bad:
            _fail("indexer_types", f"has {bad[0]!r}", "each entry must be 'full' or 'shared'")
        if types_[0] != "full":
            _fail("indexer_types", "starts with 'shared'", "layer 0 must be 'full' to have top-k to share")
    if m.rope_scaling is not None:
        kind = m.rope_scaling.get("type", m.rope_scaling.get("rope_type"))
        if kind not in ("yarn", "default", None):
            _fail("rope_scaling", f"type {kind!r} is not supported", "use type: yarn or null")
        if kind == "yarn" and float(m.rope_scaling.get("factor", 0)) <= 0:
            _fail("rope_scaling", "needs a positive factor", "add factor: 40 (DeepSeek-V3)")
        if kind == "yarn" and not m.rope_scaling.get("original_max_position_embeddings"):
            _fail("rope_scaling", "needs original_max_position_embeddings", "add it (4096 for DeepSeek-V3)")
    if m.dsa_impl not in DSA_IMPLS:
        _fail("dsa_impl", f"must be one of {', '.join(DSA_IMPLS)}, got {m.dsa_impl!r}", "use auto")
    if not m.sparse_keep_probs_gib >= 0:
        _fail("sparse_keep_probs_gib", f"must be at least 0, got {m.sparse_keep_probs_gib}", "use 32, or 0")
    if m.index_dtype not in ("bf16", "fp8"):
        _fail("index_dtype", f"must be bf16 or fp8, got {m.index_dtype!r}", "use bf16")
    if m.index_dtype == "fp8" and (not m.use_dsa or m.dsa_impl in ("gather", "mask")):
        _fail("index_dtype", "fp8 scores the Triton top-k only, which this config never runs "
              f"(use_dsa={m.use_dsa}, dsa_impl={m.dsa_impl})",
              "use dsa_impl auto, triton or flex, or index_dtype bf16")  # fmt: skip
    if m.model_type not in ("glm_moe_dsa", "deepseek_v32", "deepseek_v3"):
        _fail("model_type", f"{m.model_type!r} is unknown", "use glm_moe_dsa, deepseek_v32 or deepseek_v3")
    if m.rms_norm_eps <= 0:
        _fail("rms_norm_eps", "must be positive", "use 1e-5 or 1e-6")
    if m.embedding_init_std is not None and not m.embedding_init_std > 0:
        _fail("embedding_init_std", f"must be positive, got {m.embedding_init_std}",
              "use 1.0, or null for initializer_range")  # fmt: skip
    if m.embedding_init_std is not None and m.tie_word_embeddings:
        _fail("embedding_init_std", "is ignored with tie_word_embeddings (the tied LM head is drawn at "
              "initializer_range)", "leave it null, or set tie_word_embeddings: false")  # fmt: skip
    _validate_attention_type(m)

    for name in ["seq_len", "batch_size", "grad_accum", "eval_batches", "log_interval"]:
        if getattr(t, name) <= 0:
            _fail(f"train.{name}", f"must be positive, got {getattr(t, name)}", "set at least 1")
    for name in [
        "steps",
        "warmup_steps",
        "dsa_warmup_steps",
        "eval_interval",
        "checkpoint_interval",
        "gc_interval",
    ]:
        if getattr(t, name) < 0:
            _fail(f"train.{name}", f"must be >= 0, got {getattr(t, name)}", "use 0 to turn it off")
    for name in ["lr", "dsa_warmup_lr"]:
        if getattr(t, name) <= 0:
            _fail(f"train.{name}", f"must be positive, got {getattr(t, name)}", "try 1e-3")
    if not 0 <= t.min_lr_ratio <= 1:
        _fail("train.min_lr_ratio", "must be in [0, 1]", "0.1 decays to a tenth of lr")
    if not 0 < t.val_fraction < 1:
        _fail("train.val_fraction", "must be between 0 and 1", "0.05 holds out 5% of files")
    if not 0 <= t.decay_fraction <= 1:
        _fail("train.decay_fraction", "must be in [0, 1]", "0.2 decays over the last fifth")
    if t.expert_parallel < 1 or m.n_routed_experts % t.expert_parallel:
        _fail("train.expert_parallel", f"({t.expert_parallel}) must divide n_routed_experts "
              f"({m.n_routed_experts})", "use 1 or a divisor of the expert count")  # fmt: skip
    if t.ep_dispatch not in EP_DISPATCH:
        _fail("train.ep_dispatch", f"is {t.ep_dispatch!r}", f"use one of {', '.join(EP_DISPATCH)}")
    if t.precision not in PRECISIONS:
        _fail("train.precision", f"is {t.precision!r}", f"use one of {', '.join(PRECISIONS)}")
    if t.recompute not in RECOMPUTE:
        _fail("train.recompute", f"is {t.recompute!r}", f"use one of {', '.join(RECOMPUTE)}")
    if t.optimizer not in ("adamw", "muon"):
        _fail("train.optimizer", f"must be adamw or muon, got {t.optimizer!r}", "use adamw")
    if t.schedule not in ("cosine", "wsd"):
        _fail("train.schedule", f"must be cosine or wsd, got {t.schedule!r}", "use cosine")
    if t.tokenizer not in ("bpe", "byte"):
        _fail("train.tokenizer", f"must be bpe or byte, got {t.tokenizer!r}", "use bpe")
    if t.seq_len > m.max_position_embeddings:
        _fail(
            "train.seq_len",
            f"({t.seq_len}) exceeds max_position_embeddings ({m.max_position_embeddings})",
            "shorten the sequence or raise the context",
        )
    for name in ["mtp_lambda", "balance_alpha", "bias_update_gamma", "indexer_loss_weight", "grad_clip"]:
        if getattr(t, name) < 0:
            _fail(f"train.{name}", "must be >= 0", "use 0 to turn it off")


def _validate_attention_type(m: ModelConfig) -> None:
    """attention_type and the GQA/MHA fields (docs/architecture.md, "Attention types")."""
    if m.attention_type not in ("mla", "gqa", "mha"):
        _fail("attention_type", f"must be mla, gqa or mha, got {m.attention_type!r}", "use mla")
    if m.attention_type == "mla":
        for name in ("num_key_value_heads", "head_dim"):  # read by gqa/mha only: a silent no-op otherwise
            if getattr(m, name) is not None:
                _fail(name, "is set but attention_type is mla, which does not read it",
                      "set attention_type gqa or mha, or leave it null")  # fmt: skip
        return
    H, kv = m.num_attention_heads, m.num_key_value_heads
    if m.attention_type == "gqa" and kv is None:
        _fail("num_key_value_heads", "is null with attention_type gqa", f"set a divisor of {H} heads")
    if kv is not None and kv <= 0:
        _fail("num_key_value_heads", f"must be positive, got {kv}", f"set a divisor of {H} heads")
    if m.attention_type == "mha" and kv not in (None, H):
        _fail("num_key_value_heads", f"({kv}) differs from num_attention_heads ({H}) under mha",
              "use attention_type gqa, or leave num_key_value_heads null")  # fmt: skip
    if H % m.resolved_kv_heads:
        _fail("num_attention_heads", f"({H}) is not divisible by num_key_value_heads ({kv})",
              "each K/V head serves a whole group of query heads: choose a divisor")  # fmt: skip
    if m.head_dim is not None and m.head_dim <= 0:
        _fail("head_dim", f"must be positive, got {m.head_dim}", "set a width, or null for d // heads")
    if m.resolved_head_dim < m.qk_rope_head_dim:
        _fail("head_dim", f"({m.resolved_head_dim}) is narrower than qk_rope_head_dim ({m.qk_rope_head_dim})",
              "GQA rotates the first qk_rope_head_dim dims of each head: raise head_dim")  # fmt: skip
    if m.use_dsa:
        _fail("use_dsa", f"is true with attention_type {m.attention_type}",
              "DSA's indexer is wired into MLA only: set use_dsa=false")  # fmt: skip
