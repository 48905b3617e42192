"""The article's claims, checked for one config (accounting spec, "Claims from the article")."""

from __future__ import annotations

from glmlab.accounting.flops import attention_pair_flops, flops_report, indexer_pair_flops
from glmlab.accounting.params import parameter_counts
from glmlab.config import Config, ModelConfig


def check_claims(
    cfg: Config | ModelConfig, long_context: int = 131072, convention: str = "dsa"
) -> list[dict]:
    """Rows of (claim, figure for this config, what it means). Sparse figures use the
    config's index_topk; the training saving compares DSA with the same model run dense."""
    m = cfg.model if isinstance(cfg, Config) else cfg
    rows = []
    absorbed, expanded = attention_pair_flops(m, "absorbed"), attention_pair_flops(m, "expanded")
    if m.use_dsa:
        idx = indexer_pair_flops(m)
        rows.append({
            "claim": "the indexer costs about 5% of self-attention",
            "value": f"{idx / absorbed:.1%} absorbed, {idx / expanded:.1%} expanded",
            "note": f"per scored pair: {idx:,} vs {absorbed:,} (absorbed) / {expanded:,} (expanded) FLOPs",
        })  # fmt: skip
        K, s = m.index_topk, long_context
        avg_sparse = K - K * (K - 1) / (2 * s)
        rows.append({
            "claim": f"{s // 1024}K context with k = {K} cuts computation by up to 98%",
            "value": f"{1 - K / s:.1%} at the last query; {1 - avg_sparse / ((s + 1) / 2):.1%} of pairs",
            "note": "keys attended by the query at the end of the context; causal prefill average",
        })  # fmt: skip
        dense_cfg = ModelConfig(**{**m.__dict__, "use_dsa": False})
        sparse_t = flops_report(m, s, "train", convention).per_token
        dense_t = flops_report(dense_cfg, s, "train", convention).per_token
        rows.append({
            "claim": f"training FLOPs per token at {s // 1024}K, DSA vs dense",
            "value": f"{1 - sparse_t / dense_t:.1%} fewer",
            "note": f"{sparse_t / 1e9:,.1f} vs {dense_t / 1e9:,.1f} GFLOPs/token ({convention} convention)",
        })  # fmt: skip
    if m.use_moe:
        counts = parameter_counts(m)
        routed = counts["by_component"].get("routed_experts", 0)
        rows.append({
            "claim": "only a few experts run per token",
            "value": f"{m.num_experts_per_tok / m.n_routed_experts:.1%} of routed experts",
            "note": f"active parameters {counts['active'] / counts['total']:.1%} of total; routed "
                    f"experts are {routed / counts['total']:.1%} of all parameters",
        })  # fmt: skip
    return rows
