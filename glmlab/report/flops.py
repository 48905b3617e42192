"""`glmlab flops`: the analytic report of `glmlab.accounting.report.flops_summary` as tables."""

from __future__ import annotations

from rich.console import Console
from rich.table import Table

from glmlab.report.units import nbytes

# the H200's measured bf16 matmul rate over its measured copy rate (790 TFLOP/s, 4.3 TB/s)
H200_FLOPS_PER_BYTE = 790e12 / 4.3e12


def print_flops(s: dict, console: Console) -> None:
    """Tables of `glmlab.accounting.report.flops_summary`: FLOPs by component and by layer,
    training memory, the KV cache, parameters and the article's claims."""
    mtp = "with MTP" if s["mtp"] else "no MTP"
    console.print(
        f"[bold]{s['name']}[/]: {s['convention']} convention ({mtp}; attention {s['attention_form']}; "
        f"{s['device']}): "
        f"{s['convention_description']}"
    )
    sweep = s["sweep"]
    table = Table(title="GFLOPs per token, training step (forward + backward) by component")
    table.add_column("component")
    for entry in sweep:
        table.add_column(f"s={entry['seq_len']:,}", justify="right")
        table.add_column("share", justify="right")
    comps = list(dict.fromkeys(c for e in sweep for c in e["breakdown"]))
    for comp in comps:
        cells = []
        for e in sweep:
            v = e["breakdown"].get(comp, 0.0)
            cells += [f"{v / 1e9:,.3f}", f"{v / e['training_flops_per_token']:.1%}"]
        table.add_row(comp, *cells)
    for key, label in (
        ("training_flops_per_token", "training"),
        ("forward_flops_per_token", "forward"),
        ("prefill_flops_per_token", "prefill"),
        ("decode_flops_per_token", "decode at s-1"),
    ):
        table.add_row(f"[bold]{label}", *[c for e in sweep for c in (f"[bold]{e[key] / 1e9:,.3f}", "")])
    console.print(table)  # fmt: skip
    first = sweep[0]
    layers = Table(title=f"by layer at s={first['seq_len']:,} (training GFLOPs per token)")
    for col in ("layers", "kind", "each", "total"):
        layers.add_column(col, justify="left" if col in ("layers", "kind") else "right")
    groups: list[list] = []
    for row in first["by_layer"]:
        if (
            groups
            and groups[-1][1] == row["kind"]
            and abs(groups[-1][2] - row["flops"]) < 1e-9 * row["flops"] + 1
        ):
            groups[-1][0].append(row["layer"])
        else:
            groups.append([[row["layer"]], row["kind"], row["flops"]])
    for names, kind, each in groups:
        span = names[0] if len(names) == 1 else f"{names[0]}-{names[-1]}"
        layers.add_row(span, kind, f"{each / 1e9:,.3f}", f"{each * len(names) / 1e9:,.3f}")
    console.print(layers)
    mem = Table(title=f"training memory at s={first['seq_len']:,}, batch {first['batch']}")
    for col in ("", "weights", "gradients", "optimizer", "activations", "total"):
        mem.add_column(col, justify="left" if not col else "right")
    for label, key in (("fp32 AdamW", "memory_fp32"), ("bf16 mixed, fp32 master (GPU)", "memory_bf16_mixed")):
        m = first[key]
        mem.add_row(
            label, *[nbytes(m[k]) for k in ("weights", "gradients", "optimizer", "activations", "total")]
        )
    console.print(mem)
    kv, inf = s["kv_cache_dtype"], first["memory_inference"]
    cached = f"K/V {kv['kv']:,} B" if kv["kv"] else f"latent {kv['latent']:,} B"  # GQA/MHA, or MLA
    console.print(
        f"KV cache per token ({kv['dtype']}): {cached} + indexer keys "
        f"{kv['indexer_keys']:,} B = {kv['total']:,} B (expanded K/V would be {kv['expanded']:,} B; "
        f"MTP adds {kv['mtp']:,} B)\n"
        f"inference at s={first['seq_len']:,}, batch {first['batch']}: weights {nbytes(inf['weights'])} + "
        f"joined input products {nbytes(inf['joined_inputs'])} + cache {nbytes(inf['kv_cache'])} = "
        f"{nbytes(inf['total'])}"
    )
    step = first["decode_step_bytes"]
    console.print(
        f"decoding step at s={first['seq_len']:,}, batch {first['batch']} ({kv['dtype']}, no MTP): reads "
        f"{nbytes(step['total'])} (weights {nbytes(step['weights'])}, cache {nbytes(step['cache'])}, indexer "
        f"{nbytes(step['indexer'])}), {step['flops_per_byte']:,.1f} FLOPs a byte: bound by memory bandwidth "
        f"below the GPU's FLOPs per byte ({H200_FLOPS_PER_BYTE:.0f} on the lab's H200)"
    )
    p = s["params"]
    console.print(
        f"parameters: {p['total']:,} total, {p['active']:,} active, {p['total_with_mtp']:,} with MTP"
    )
    if s["claims"]:
        claims = Table(title="the article's claims, for this config")
        for col in ("claim", "here", "how"):
            claims.add_column(col)
        for row in s["claims"]:
            claims.add_row(row["claim"], row["value"], row["note"])
        console.print(claims)
