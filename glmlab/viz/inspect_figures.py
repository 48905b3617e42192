"""The inspector's pictures: per layer a routing map and a DSA map; the MLA cache bars; MTP acceptance."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from glmlab.viz.inspect import DSAMap, Inspection, MTPInspection, RoutingMap
from glmlab.viz.mpl import output_dir, pyplot, save_figures


def _token_axis(ax, tokens: list[str], *, axis: str) -> None:
    step = max(1, len(tokens) // 40)  # at most about 40 labels
    ticks = list(range(0, len(tokens), step))
    labels = [tokens[t][:10] for t in ticks]
    if axis == "y":
        ax.set_yticks(ticks, labels, fontsize=7)
    else:
        ax.set_xticks(ticks, labels, fontsize=7, rotation=90)


def routing_figure(routing: RoutingMap, tokens: list[str], layer: int):
    """Token x expert map coloured by gate weight, and the shared expert's share per token."""
    plt = pyplot()
    with_shared = routing.shared_share is not None
    height = min(2 + 0.18 * len(tokens), 16)
    fig, axes = plt.subplots(1, 2 if with_shared else 1, figsize=(9, height), squeeze=False,
                             gridspec_kw={"width_ratios": [4, 1] if with_shared else [1]})  # fmt: skip
    ax = axes[0, 0]
    gates = routing.dense().numpy()
    cmap = plt.get_cmap("viridis").with_extremes(bad="white")
    image = ax.imshow(
        np.ma.masked_equal(gates, 0.0), aspect="auto", cmap=cmap, interpolation="nearest", vmin=0
    )
    ax.set_title(f"layer {layer}: gate weight of each chosen expert per token")
    ax.set_xlabel("expert")
    ax.set_xticks(range(routing.n_experts))
    _token_axis(ax, tokens, axis="y")
    fig.colorbar(image, ax=ax, label="gate weight")
    if with_shared:
        side = axes[0, 1]
        side.barh(range(len(tokens)), routing.shared_share, color="C1")
        side.set_ylim(len(tokens) - 0.5, -0.5)
        side.set_xlim(0, 1)
        side.set_yticks([])
        side.set_title("shared expert share")
        side.set_xlabel("|shared| / (|shared| + |routed|)")
    fig.tight_layout()
    return fig


def dsa_figure(dsa: DSAMap, tokens: list[str], layer: int):
    """Dense attention (heads summed, rows normalised), the indexer's scores, what the top-k
    keeps of the dense attention (grey: causal keys left out), and the recall of each row."""
    plt = pyplot()
    S = len(tokens)
    height = min(2.5 + 0.12 * S, 8)
    fig, axes = plt.subplots(1, 4, figsize=(17, height), gridspec_kw={"width_ratios": [4, 4, 4, 1.2]})
    causal = np.tril(np.ones((S, S), dtype=bool))
    dense, chosen = np.array(dsa.attention), np.zeros((S, S), dtype=bool)
    for q, keys in enumerate(dsa.selected):
        chosen[q, keys] = True
    scores = np.array([[np.nan if v is None else v for v in row] for row in dsa.scores], dtype=float)
    from matplotlib.colors import PowerNorm

    # square-root colour scale up to the 99th percentile: the first rows (one or two keys, each
    # near 1) would wash out the rest
    top = max(float(np.quantile(dense[causal], 0.99)), 1e-9)
    heat = {"norm": PowerNorm(0.5, 0.0, top, clip=True), "interpolation": "nearest", "aspect": "auto"}
    blues = plt.get_cmap("Blues").with_extremes(bad="white")
    axes[0].imshow(np.ma.masked_where(~causal, dense), cmap=blues, **heat)
    axes[0].set_title(f"layer {layer}: dense attention (heads summed)")
    image = axes[1].imshow(np.ma.masked_invalid(scores), cmap="magma", interpolation="nearest", aspect="auto")
    who = f"layer {dsa.shared_from}'s indexer (IndexShare)" if dsa.shared_from is not None else "indexer"
    axes[1].set_title(f"{who} scores")
    fig.colorbar(image, ax=axes[1], fraction=0.046)
    left_out = np.where(causal & ~chosen, 0.3, np.nan)
    axes[2].imshow(left_out, cmap="Greys", vmin=0, vmax=1, interpolation="nearest", aspect="auto")
    axes[2].imshow(np.ma.masked_where(~chosen, dense), cmap="Blues", **heat)  # masked: transparent
    axes[2].set_title(f"top-{dsa.topk} selection (grey: keys left out)")
    for ax in axes[:3]:
        ax.set_xlabel("key")
        ax.set_ylabel("query")
        _token_axis(ax, tokens, axis="y")
    axes[3].barh(range(S), dsa.recall, color="C2")
    axes[3].set_ylim(S - 0.5, -0.5)
    axes[3].set_xlim(0, 1.02)
    axes[3].set_yticks([])
    axes[3].set_title(f"recall (mean {dsa.mean_recall:.2f})")
    if not dsa.sparse:
        fig.text(0.01, 0.01, f"the prompt ({S} tokens) fits in k = {dsa.topk}: every key is selected; "
                 "a longer prompt makes the selection bite", fontsize=8)  # fmt: skip
    fig.tight_layout()
    return fig


def cache_figure(cache: dict, name: str):
    """Bytes of cache per token of context: MLA's latent (+ indexer keys) against expanded K/V."""
    plt = pyplot()
    per = cache["per_token"]
    fig, ax = plt.subplots(figsize=(6, 2.4))
    mla = bool(per["latent"])  # GQA/MHA caches K/V heads instead of a latent
    row = "latent + indexer keys" if mla else "grouped K/V"
    ax.barh(["expanded K/V", row], [per["expanded"], 0], color="C7")
    if mla:
        ax.barh([row], [per["latent"]], color="C0", label="latent [c_kv ; k_pe]")
        ax.barh([row], [per["indexer_keys"]], left=[per["latent"]], color="C1", label="indexer keys")
    else:
        ax.barh([row], [per["kv"]], color="C0", label="K and V of the K/V heads")
    ax.set_xlabel(f"bytes per token of context ({cache['dtype']}, all layers)")
    ratio = per["expanded"] / max(per["total"], 1)
    ax.set_title(f"{name}: {'MLA' if mla else 'K/V'} cache, {ratio:.1f}x smaller than expanded")
    ax.legend(fontsize="small")
    fig.tight_layout()
    return fig


def mtp_figure(mtp: MTPInspection, name: str):
    """Acceptance per draft depth, and the drafts each decoding step kept."""
    plt = pyplot()
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 3.2), gridspec_kw={"width_ratios": [1, 3]})
    depths = range(1, mtp.depth + 1)
    left.bar(depths, mtp.acceptance, color="C2")
    for d, (a, v) in zip(depths, zip(mtp.accepted, mtp.verified, strict=True), strict=True):
        left.text(d, 0.02, f"{a}/{v}", ha="center", fontsize=8)
    left.set_xticks(list(depths))
    left.set_ylim(0, 1)
    left.set_xlabel("draft depth")
    left.set_title("acceptance per depth")
    right.bar(range(len(mtp.steps)), [s.accepted for s in mtp.steps], color="C2", label="accepted drafts")
    right.bar(range(len(mtp.steps)), [len(s.drafts) - s.accepted for s in mtp.steps],
              bottom=[s.accepted for s in mtp.steps], color="C3", label="rejected draft")  # fmt: skip
    right.set_xlabel("decoding step")
    right.set_ylabel("drafts")
    right.set_title(f"{name}: {mtp.tokens_per_step:.2f} tokens per step")
    right.legend(fontsize="small")
    fig.tight_layout()
    return fig


def inspection_figures(result: Inspection) -> dict:
    """name -> Figure for everything the inspection holds."""
    figures = {"mla_cache": cache_figure(result.cache, result.name)}
    if result.mtp is not None and result.mtp.steps:
        figures["mtp_drafts"] = mtp_figure(result.mtp, result.name)
    for item in result.layers:
        if item.routing is not None:
            figures[f"layer{item.layer}_routing"] = routing_figure(item.routing, result.tokens, item.layer)
        if item.dsa is not None:
            figures[f"layer{item.layer}_dsa"] = dsa_figure(item.dsa, result.tokens, item.layer)
    return figures


def save_inspection(result: Inspection, out: str | Path) -> list[Path]:
    return save_figures(inspection_figures(result), output_dir(out))
