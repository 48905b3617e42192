"""Names for the rows of `expert_counts` (and `CausalLM.routers()`): main MoE layers first, then
the MoE layer of each MTP module."""

from __future__ import annotations

from glmlab.config import ModelConfig


def router_labels(m: ModelConfig) -> list[str]:
    """'layer 3', ..., 'mtp 1', one per router, in the order the model counts expert loads."""
    main = [f"layer {i}" for i, kind in enumerate(m.mlp_layer_types) if kind == "sparse"]
    mtp = [f"mtp {j + 1}" for j in range(m.num_mtp_modules)] if m.mtp_uses_moe else []
    return main + mtp
