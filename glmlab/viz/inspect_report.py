"""The inspector's terminal summary (rich): a table per layer, the MLA cache, and the MTP drafts
of each decoding step coloured accepted (green) or rejected (red, struck through)."""

from __future__ import annotations

from rich.console import Console
from rich.table import Table
from rich.text import Text

from glmlab.viz.inspect import Inspection, MTPInspection, token_strings


def layer_table(result: Inspection) -> Table:
    table = Table(title=f"{result.name}: {len(result.token_ids)} prompt tokens, layer by layer")
    for col in (
        "layer",
        "busiest experts (tokens)",
        "input common",
        "shared share",
        "DSA selection",
        "recall",
    ):
        table.add_column(col, justify="left" if col in ("layer", "busiest experts (tokens)") else "right")
    for item in result.layers:
        experts = common = share = selection = recall = "-"
        if item.routing is not None:
            counts = item.routing.counts()
            top = sorted(range(len(counts)), key=lambda e: -counts[e])[:4]
            experts = ", ".join(f"{e} ({counts[e]})" for e in top)
            common = f"{item.routing.common_share:.2f}"
            if item.routing.shared_share is not None:
                share = f"{sum(item.routing.shared_share) / len(item.routing.shared_share):.2f}"
        if item.dsa is not None:
            how = f"top-{item.dsa.topk}" if item.dsa.sparse else f"all (<= {item.dsa.topk})"
            selection = how + (
                f", from layer {item.dsa.shared_from}" if item.dsa.shared_from is not None else ""
            )
            recall = f"{item.dsa.mean_recall:.3f}"
        table.add_row(str(item.layer), experts, common, share, selection, recall)
    return table


def cache_line(result: Inspection) -> str:
    c, per = result.cache, result.cache["per_token"]
    if per["latent"]:  # MLA: the latent, and DSA's indexer keys
        parts = (f"MLA cache per token ({c['dtype']}): latent {per['latent']:,} B + indexer keys "
                 f"{per['indexer_keys']:,} B = {per['total']:,} B")  # fmt: skip
    else:  # GQA / MHA: grouped K and V heads
        parts = f"K/V cache per token ({c['dtype']}): {per['total']:,} B"
    return (f"{parts} against {per['expanded']:,} B expanded "
            f"({per['expanded'] / max(per['total'], 1):.1f}x); this prompt: {c['prompt_latent_bytes']:,} B "
            f"against {c['prompt_expanded_bytes']:,} B")  # fmt: skip


def drafts_text(mtp: MTPInspection, tokenizer) -> Text:
    """Each step: accepted drafts green, the rejected draft red and struck through, then the
    main model's token; steps separated by a dim bar."""
    text = Text()
    for step in mtp.steps:
        for j, tok in enumerate(step.drafts):
            word = token_strings(tokenizer, [tok])[0]
            text.append(word, style="bold green" if j < step.accepted else "red strike")
        text.append(token_strings(tokenizer, [step.emitted[-1]])[0], style="bold")
        text.append("|", style="dim")
    return text


def print_inspection(result: Inspection, tokenizer, console: Console) -> None:
    """The whole summary: layers, cache, MTP drafts with acceptance per depth."""
    console.print(layer_table(result))
    console.print(cache_line(result), highlight=False)
    if result.mtp is None:
        return
    m = result.mtp
    console.print(f"MTP drafts ({m.depth} per step) over {len(result.continuation)} greedy tokens: "
                  "[bold green]accepted[/] [red strike]rejected[/] then the main model's token")  # fmt: skip
    console.print(drafts_text(m, tokenizer))
    per_depth = enumerate(zip(m.accepted, m.verified, m.acceptance, strict=True), 1)
    rates = ", ".join(f"depth {d}: {a}/{v} ({r:.0%})" for d, (a, v, r) in per_depth)
    console.print(f"acceptance {rates}; {m.tokens_per_step:.2f} tokens per step", highlight=False)
