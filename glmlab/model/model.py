"""Decoder layer, the GLM-5 causal LM and its MTP chain (docs/architecture.md)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
from torch import nn
from torch.utils._pytree import register_dataclass

from glmlab.config import ModelConfig
from glmlab.model.dsa import TopK
from glmlab.model.gqa import GroupedQueryAttention, KVCache
from glmlab.model.layers import RMSNorm, RotaryEmbedding, SwiGLU
from glmlab.model.losses import next_token_loss
from glmlab.model.mla import LatentCache, MultiHeadLatentAttention
from glmlab.model.moe import MoE, Router
from glmlab.model.mtp import MTPModule
from glmlab.plan import (
    AttentionPlan,
    Call,
    LayerKind,
    attention_plan,
    layer_kinds,
    mtp_layer_kind,
)


@dataclass
class LayerOutput:
    hidden: torch.Tensor
    topk: TopK | None
    index_loss: torch.Tensor | None
    index_recall: torch.Tensor | None
    counts: torch.Tensor | None
    balance_loss: torch.Tensor | None


# A layer's output is a pytree, so that hooks that look for the tensors a module returns (FSDP2's
# pre-backward hook, which gathers the layer's weights again before its backward) find them.
register_dataclass(LayerOutput)


class DecoderLayer(nn.Module):
    """Pre-norm: `h = x + Attn(RMSNorm(x))`, `out = h + FFN(RMSNorm(h))`."""

    def __init__(self, cfg: ModelConfig, kind: LayerKind) -> None:
        super().__init__()
        self.kind = kind
        self.input_layernorm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)
        if kind.attention == "mla":
            self.self_attn = MultiHeadLatentAttention(cfg, has_indexer=kind.indexer)
        else:  # gqa, mha (glmlab/model/gqa.py)
            self.self_attn = GroupedQueryAttention(cfg)
        self.post_attention_layernorm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)
        self.mlp = MoE(cfg) if kind.moe else SwiGLU(cfg.hidden_size, cfg.intermediate_size)

    def forward(
        self, x, cos, sin, positions, *, plan: AttentionPlan, cache=None, shared_topk=None, aux=False
    ) -> LayerOutput:
        """`plan` (glmlab.plan.AttentionPlan) is this call's attention path; `aux` (training,
        labels given) adds the MoE balance loss (the indexer's KL follows the plan)."""
        xn = self.input_layernorm(x)
        attn = self.self_attn(xn, cos, sin, positions, plan=plan, cache=cache, shared_topk=shared_topk)
        h = x + attn.out
        ffn_in = self.post_attention_layernorm(h)
        if isinstance(self.mlp, MoE):
            moe = self.mlp(ffn_in, balance=aux)
            return LayerOutput(h + moe.out, attn.topk, attn.index_loss, attn.index_recall, moe.counts,
                               moe.balance_loss)  # fmt: skip
        return LayerOutput(h + self.mlp(ffn_in), attn.topk, attn.index_loss, attn.index_recall, None, None)


class Backbone(nn.Module):
    """`embedding -> L layers -> final RMSNorm` (transformers' `model.` prefix)."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.embed_tokens = nn.Embedding(cfg.vocab_size, cfg.hidden_size)
        self.layers = nn.ModuleList(DecoderLayer(cfg, kind) for kind in layer_kinds(cfg))
        self.norm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)
        self.rotary_emb = RotaryEmbedding(cfg)


def layer_cache(
    cfg: ModelConfig,
    batch: int,
    capacity: int,
    device: torch.device | str,
    dtype: torch.dtype,
    *,
    index_keys: bool,
) -> LatentCache | KVCache:
    """One layer's decoding cache: MLA's latents (and indexer keys), or GQA/MHA's K and V."""
    if cfg.attention_type == "mla":
        return LatentCache(cfg, batch, capacity, device, dtype, index_keys)
    return KVCache(cfg, batch, capacity, device, dtype)


@dataclass
class ModelCache:
    """Caches for the main layers and for each MTP depth (one per depth even when the module
    is shared: each application attends over its own earlier hidden states)."""

    layers: list[LatentCache | KVCache]
    mtp: list[LatentCache | KVCache]

    @property
    def length(self) -> int:
        return self.layers[0].length

    def truncate(self, length: int) -> None:
        for c in self.layers:
            c.truncate(length)


@dataclass
class CausalLMOutput:
    """Logits and, given labels, each loss term separately (the trainer weighs them)."""

    logits: torch.Tensor
    hidden_states: torch.Tensor  # final hidden state after the final norm (MTP's h^0)
    loss: torch.Tensor | None = None  # next-token cross-entropy (the LM loss)
    mtp_losses: list[torch.Tensor] = field(default_factory=list)  # one per depth
    balance_loss: torch.Tensor | None = None  # sequence-wise, mean over MoE layers, before alpha
    indexer_loss: torch.Tensor | None = None  # KL, mean over indexer layers
    indexer_recall: torch.Tensor | None = None  # dense-mode only: attention share inside top-k
    expert_counts: torch.Tensor | None = None  # [routers, E], rows as in CausalLM.routers()


class _Collector:
    """Gathers per-layer auxiliary outputs into the model's output."""

    def __init__(self, n_routers: int) -> None:
        self.index_losses, self.recalls, self.balance = [], [], []
        self.counts: list[torch.Tensor | None] = [None] * n_routers

    def add(self, out: LayerOutput, router_row: int | None) -> None:
        if out.index_loss is not None:
            self.index_losses.append(out.index_loss)
        if out.index_recall is not None:
            self.recalls.append(out.index_recall)
        if out.balance_loss is not None:
            self.balance.append(out.balance_loss)
        if out.counts is not None:
            prev = self.counts[router_row]
            self.counts[router_row] = out.counts if prev is None else prev + out.counts

    @staticmethod
    def _mean(xs: list[torch.Tensor]) -> torch.Tensor | None:
        return torch.stack(xs).mean() if xs else None


class CausalLM(nn.Module):
    """A GLM-5-style model: parameters named as transformers' GlmMoeDsaForCausalLM, plus
    `mtp.{j}` modules that share the embedding and LM head."""

    def __init__(self, cfg: ModelConfig, init: bool = True) -> None:
        super().__init__()
        self.config = cfg
        self.model = Backbone(cfg)
        self.lm_head = nn.Linear(cfg.hidden_size, cfg.vocab_size, bias=False)
        self.mtp = nn.ModuleList(
            MTPModule(cfg, DecoderLayer(cfg, mtp_layer_kind(cfg))) for _ in range(cfg.num_mtp_modules)
        )
        if cfg.tie_word_embeddings:
            self.lm_head.weight = self.model.embed_tokens.weight
        if init:
            self.apply(self._init_module)
            if cfg.scale_residual_init:
                self._scale_residual_writers(1 / math.sqrt(2 * cfg.num_hidden_layers))

    def _init_module(self, module: nn.Module) -> None:
        std = self.config.initializer_range
        if isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, 0.0, self.config.embedding_init_std or std)
        elif isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, 0.0, std)
            if getattr(module, "bias", None) is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, (RMSNorm,)):
            nn.init.ones_(module.weight)
        elif isinstance(module, nn.LayerNorm):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)
        elif isinstance(module, Router):
            nn.init.normal_(module.weight, 0.0, std)
            module.e_score_correction_bias.zero_()
        elif hasattr(module, "gate_up_proj"):
            nn.init.normal_(module.gate_up_proj, 0.0, std)
            nn.init.normal_(module.down_proj, 0.0, std)

    @torch.no_grad()
    def _scale_residual_writers(self, factor: float) -> None:
        """Multiply the weights that write into the residual stream (attention outputs, MLP and
        expert down projections) by `factor`: drawn N(0, std), they become N(0, std * factor)."""
        for name, p in self.named_parameters():
            if name.endswith(("o_proj.weight", "down_proj.weight", "experts.down_proj")):
                p.mul_(factor)

    # ---- structure -----------------------------------------------------------------------

    def routers(self) -> list[Router]:
        """Every MoE router, main layers first, then MTP modules: rows of `expert_counts`."""
        layers = [*self.model.layers, *(m.layer for m in self.mtp)]
        return [layer.mlp.gate for layer in layers if isinstance(layer.mlp, MoE)]

    def indexer_parameters(self) -> list[nn.Parameter]:
        return [p for n, p in self.named_parameters() if ".indexer." in n]

    def mtp_module(self, depth: int) -> MTPModule:
        """The module for depth 1..D: one shared module, or one per depth."""
        return self.mtp[0 if self.config.mtp_share_modules else depth - 1]

    def new_cache(self, batch: int, capacity: int, device=None, dtype=None) -> ModelCache:
        p = self.lm_head.weight
        device, dtype = device or p.device, dtype or p.dtype
        make = lambda idx: layer_cache(self.config, batch, capacity, device, dtype, index_keys=idx)  # noqa: E731
        layers = [make(layer.self_attn.indexer is not None) for layer in self.model.layers]
        depths = self.config.num_nextn_predict_layers if self.mtp else 0
        return ModelCache(layers, [make(self.config.use_dsa) for _ in range(depths)])

    # ---- forward ---------------------------------------------------------------------------

    def plan(self, kind: LayerKind, call: Call) -> AttentionPlan:
        """The attention plan of one layer for one call (glmlab/plan.py)."""
        return attention_plan(self.config, kind, call)

    def forward(
        self,
        input_ids: torch.Tensor,
        labels: torch.Tensor | None = None,
        *,
        cache: ModelCache | None = None,
        dsa_dense: bool = False,
        logits_to_keep: int = 0,
    ) -> CausalLMOutput:
        """input_ids [B,S]. With a cache, the tokens continue at position `cache.length`.

        Given labels (usually input_ids; positions shifted here, -100 ignored), also the LM
        loss, one loss per MTP depth, the balance loss, the indexer KL and expert counts.
        `dsa_dense` attends densely while the indexer keeps scoring (DSA stage 1).
        """
        cfg = self.config
        B, S = input_ids.shape
        start = cache.length if cache is not None else 0
        positions = torch.arange(start, start + S, device=input_ids.device)
        cos, sin = self.model.rotary_emb(positions)
        want_aux = labels is not None
        routers = self.routers()
        row_of = {id(r): i for i, r in enumerate(routers)}
        col = _Collector(len(routers))

        call = Call(S, start + S, cache is not None, want_aux, dsa_dense, input_ids.device.type)
        x = self.model.embed_tokens(input_ids)
        topk = None
        for i, layer in enumerate(self.model.layers):
            layer_cache = cache.layers[i] if cache is not None else None
            plan = self.plan(layer.kind, call)
            out = layer(x, cos, sin, positions, plan=plan, cache=layer_cache, shared_topk=topk, aux=want_aux)
            x, topk = out.hidden, out.topk
            col.add(out, row_of.get(id(getattr(layer.mlp, "gate", None))))
        hidden = self.model.norm(x)
        kept = hidden[:, -logits_to_keep:] if logits_to_keep else hidden
        logits = self.lm_head(kept)
        result = CausalLMOutput(logits=logits, hidden_states=hidden)
        if labels is not None:
            result.loss = next_token_loss(logits, labels, shift=1)
            h = hidden
            for depth in range(1, cfg.num_nextn_predict_layers + 1 if self.mtp else 1):
                if S - depth < 2:
                    break
                module = self.mtp_module(depth)
                ids = input_ids[:, depth:]
                h, outs = self._mtp_apply(module, h[:, : S - depth], ids, dsa_dense=dsa_dense, aux=True)
                col.add(outs, row_of.get(id(getattr(module.layer.mlp, "gate", None))))
                mtp_logits = self.lm_head(module.shared_head_norm(h))
                result.mtp_losses.append(next_token_loss(mtp_logits, labels[:, depth:], shift=1))
        result.balance_loss = col._mean(col.balance)
        result.indexer_loss = col._mean(col.index_losses)
        result.indexer_recall = col._mean(col.recalls)
        if routers and col.counts[0] is not None:
            E = cfg.n_routed_experts
            zero = torch.zeros(E, dtype=torch.long, device=input_ids.device)
            result.expert_counts = torch.stack([c if c is not None else zero for c in col.counts])
        return result

    def _mtp_apply(self, module, hidden, next_ids, *, dsa_dense=False, aux=False, cache=None):
        """Run one MTP depth over a (shortened) sequence: returns its hidden states and the
        layer's auxiliary outputs (its losses when `aux`, as in training)."""
        S = hidden.shape[1]
        start = cache.length if cache is not None else 0
        positions = torch.arange(start, start + S, device=hidden.device)
        cos, sin = self.model.rotary_emb(positions)
        x = module.combine(self.model.embed_tokens(next_ids), hidden)
        call = Call(S, start + S, cache is not None, aux, dsa_dense, hidden.device.type)
        plan = self.plan(module.layer.kind, call)
        out = module.layer(x, cos, sin, positions, plan=plan, cache=cache, aux=aux)
        return out.hidden, out

    def mtp_step(
        self, depth: int, hidden: torch.Tensor, next_ids: torch.Tensor, cache: ModelCache | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """One MTP depth for drafting: hidden h^{depth-1} [B,S,d] and the tokens one step
        ahead [B,S] -> (logits [B,S,V], h^{depth}). With a cache, continues its positions."""
        module = self.mtp_module(depth)
        depth_cache = cache.mtp[depth - 1] if cache is not None else None
        h, _ = self._mtp_apply(module, hidden, next_ids, cache=depth_cache)
        return self.lm_head(module.shared_head_norm(h)), h
