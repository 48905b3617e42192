"""Construct a model from a config (on the meta device when only shapes matter) and count
its parameters by component, total and active per token (docs/accounting.md)."""

from __future__ import annotations

from collections import defaultdict

import torch
from torch import nn

from glmlab.accounting.params import summarize
from glmlab.config import Config
from glmlab.model import CausalLM


def build_model(cfg: Config, device: str | torch.device = "cpu") -> CausalLM:
    """The model of `cfg` with initialised weights; device 'meta' allocates nothing."""
    with torch.device(device):
        return CausalLM(cfg.model, init=str(device) != "meta")


def component_of(name: str) -> str:
    """Which component a parameter (or the router bias buffer) belongs to, by its name."""
    if name.startswith("model.embed_tokens"):
        return "embedding"
    if name.startswith("lm_head"):
        return "lm_head"
    if ".indexer." in name:
        return "indexer"
    if ".self_attn." in name:
        return "attention" if "layernorm" not in name else "norms"
    if ".mlp.gate." in name:
        return "router"
    if ".mlp.experts." in name:
        return "routed_experts"
    if ".mlp.shared_experts." in name:
        return "shared_experts"
    if ".mlp." in name:
        return "dense_mlp"
    if ".eh_proj." in name:
        return "mtp_projection"
    return "norms"


def _counted(model: nn.Module) -> list[tuple[str, torch.Tensor]]:
    """Parameters plus the MoE selection bias: stored weights that the model reads."""
    items = list(model.named_parameters())
    items += [(n, b) for n, b in model.named_buffers() if n.endswith("e_score_correction_bias")]
    return items


def parameter_report(model: CausalLM) -> dict:
    """Totals and per-component counts of the built module (see `summarize`)."""
    main: dict[str, int] = defaultdict(int)
    mtp: dict[str, int] = defaultdict(int)
    for name, tensor in _counted(model):
        (mtp if name.startswith("mtp.") else main)[component_of(name)] += tensor.numel()
    return summarize(main, mtp, model.config)


def layer_summary(model: CausalLM) -> list[dict]:
    """One row per group of identical layers (dense / MoE, full / shared indexer)."""
    rows: list[dict] = []
    for i, layer in enumerate(model.model.layers):
        kind = "MoE" if layer.kind.moe else "dense"
        attention = layer.kind.label.split(",")[0]
        params = sum(p.numel() for p in layer.parameters())
        key = (kind, attention, params)
        if rows and rows[-1]["key"] == key:
            rows[-1]["layers"].append(i)
        else:
            rows.append({"key": key, "kind": kind, "attention": attention, "params": params, "layers": [i]})
    for row in rows:
        row.pop("key")
    return rows
