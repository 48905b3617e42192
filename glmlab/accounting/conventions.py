"""The named counting conventions (docs/accounting.md, "FLOP conventions").

A convention decides which pairs of (query, key) attention is charged for, which form of
core attention is counted, and which small modules are counted at all. The arithmetic of
each module lives in `flops.py`; this file only names the choices.
"""

from __future__ import annotations

from dataclasses import dataclass

from glmlab.errors import GlmlabError


@dataclass(frozen=True)
class Convention:
    name: str
    description: str
    executed: bool  # True: count what glmlab's implementation runs, op by op
    sparse: bool = False  # charge DSA layers for top-k keys instead of the causal context
    count_indexer: bool = False
    count_router: bool = False
    count_latent_norms: bool = False  # Megatron-LM adds r_q + r_kv (+ 3d per MTP layer) "norm" terms
    attention_form: str = "expanded"  # "expanded" (MHA form) or "absorbed" (latent form)


CONVENTIONS = {
    "megatron": Convention(
        "megatron",
        "Megatron-LM num_floating_point_operations: causal s/2 keys per query, expanded MLA, "
        "dense attention even on DSA layers, k experts + shared, LM head 1+D times, no indexer, no router",
        executed=False,
        count_latent_norms=True,
    ),
    "dsa": Convention(
        "dsa",
        "Megatron-Bridge DSA: (s+1)/2 keys dense, K - K(K-1)/(2s) sparse when s > K, indexer "
        "H_I*(d_I+1) multiply-adds per causal pair on full layers, indexer projections 2x in training",
        executed=False,
        sparse=True,
        count_indexer=True,
        count_latent_norms=True,
    ),
    "glmlab": Convention(
        "glmlab",
        "what glmlab's implementation executes: expanded causal SDPA when T <= index_topk (or no DSA), "
        "gathered absorbed attention when T > index_topk, indexer scores for each chunk of queries up to "
        "its last query (about the causal half of S x T), router GEMM",
        executed=True,
        sparse=True,
        count_indexer=True,
        count_router=True,
    ),
}


def get_convention(name: str, attention_form: str | None = None) -> Convention:
    """The convention called `name`; `attention_form` overrides the core-attention form of `dsa`."""
    if name not in CONVENTIONS:
        raise GlmlabError(f"unknown convention '{name}': choose one of {', '.join(CONVENTIONS)}")
    conv = CONVENTIONS[name]
    if attention_form is None or attention_form == conv.attention_form:
        return conv
    if attention_form not in ("expanded", "absorbed"):
        raise GlmlabError(f"attention form must be expanded or absorbed, got '{attention_form}'")
    if conv.name != "dsa":
        raise GlmlabError(
            f"the {conv.name} convention fixes its attention form; choose it with --convention dsa"
        )
    return Convention(**{**conv.__dict__, "attention_form": attention_form})
