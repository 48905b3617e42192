"""`glmlab plan`: one layout's memory, communication and time, or the layouts a search found."""

from __future__ import annotations

from rich.console import Console
from rich.table import Table

from glmlab.report.units import nbytes


def _layout(p: dict) -> str:
    lay = p["layout"]
    return " ".join(f"{k.upper()}{lay[k]}" for k in ("tp", "pp", "cp", "dp", "ep"))


def print_plan(summary: dict, console: Console) -> None:
    """Tables of `glmlab.accounting.cluster.plan_summary`."""
    plans = summary["plans"]
    if not plans:
        console.print(f"no layout of {summary['gpus']} GPUs fits {summary['name']}: add GPUs, pin "
                      "--pp/--ep, shorten --seq or lower --micro-batch")  # fmt: skip
        return
    first = plans[0]
    o = first["options"]
    skew = f", the busiest EP rank at {o['ep_imbalance']:.2f}x the mean load" if o["ep_imbalance"] > 1 else ""
    console.print(
        f"[bold]{summary['name']}[/] on {summary['gpus']} x {o['gpu']['name']}: {o['global_batch']} x "
        f"{o['seq_len']} tokens per step, micro-batch {o['micro_batch']}, {o['sharding']}, "
        f"{o['optimizer']}, compute at {o['efficiency']:.0%} of {o['gpu']['peak'] / 1e12:.0f} TFLOP/s{skew}",
        highlight=False,
    )
    if summary["search"]:
        table = Table(title="layouts that fit, fastest first")
        for col in ("layout", "recompute", "memory/GPU", "bubble", "step", "tokens/s", "MFU"):
            table.add_column(col, justify="left" if col in ("layout", "recompute") else "right")
        for p in plans:
            table.add_row(_layout(p), p["options"]["recompute"], nbytes(p["memory"]["total"]),
                          f"{p['bubble']:.1%}", f"{p['times']['step']:.2f} s", f"{p['tokens_per_s']:,.0f}",
                          f"{p['mfu']:.1%}")  # fmt: skip
        console.print(table)
        return
    p = first
    fits = "fits" if p["fits"] else "[red]does NOT fit[/]"
    mem = Table(title=f"{_layout(p)}: memory per GPU (pipeline stage {p['memory']['stage']}, {fits})")
    mem.add_column("part")
    mem.add_column("bytes", justify="right")
    for key in ("weights", "gradients", "optimizer", "transient", "activations", "total"):
        mem.add_row(key, nbytes(p["memory"][key]))
    mem.add_row("GPU memory", nbytes(o["gpu"]["memory"]))
    console.print(mem)
    comm = Table(title="communication per GPU per step")
    for col in ("kind", "bytes sent", "time"):
        comm.add_column(col, justify="left" if col == "kind" else "right")
    for key, sent in p["comm_bytes"].items():
        if sent:
            comm.add_row(key, nbytes(sent), f"{p['comm_seconds'][key] * 1000:,.1f} ms")
    console.print(comm)
    t, inf = p["times"], p["inference"]
    console.print(
        f"step {t['step']:.3f} s = compute {t['compute']:.3f} s, with a {p['bubble']:.1%} pipeline bubble "
        f"({p['micro_batches']} micro-batches) {t['with_bubble']:.3f} s, exposed TP/EP/CP/PP traffic "
        f"{t['exposed_comm']:.3f} s, data-parallel traffic beyond compute "
        f"{max(0.0, t['data_parallel_comm'] - t['compute']):.3f} s\n"
        f"{p['tokens_per_s']:,.0f} tokens/s, MFU {p['mfu']:.1%}\n"
        f"inference on this layout: bf16 weights {nbytes(inf['weights'])} per GPU, KV cache "
        f"{inf['kv_bytes_per_token']:,.0f} B per token per GPU, room for {inf['kv_tokens_fit']:,.0f} tokens",
        highlight=False,
    )
