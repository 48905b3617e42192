"""`glmlab presets` and `glmlab build`: the preset listing and a model's parameter tree."""

from __future__ import annotations

from rich import box
from rich.console import Console
from rich.table import Table
from rich.tree import Tree

from glmlab.accounting.params import parameter_counts
from glmlab.config import Config, load_config, preset_names
from glmlab.report.units import count


def preset_rows() -> list[dict]:
    """One row per preset from the analytic counts (no model is built, torch is not imported)."""
    rows = []
    for name in preset_names():
        m = load_config(name).model
        params = parameter_counts(m)
        rows.append({
            "preset": name, "layers": m.num_hidden_layers,
            "experts": f"{m.num_experts_per_tok}/{m.n_routed_experts}" if m.use_moe else "dense",
            "dsa_k": m.index_topk if m.use_dsa else None, "mtp_depth": m.num_nextn_predict_layers,
            "total": params["total"], "active": params["active"], "total_with_mtp": params["total_with_mtp"],
        })  # fmt: skip
    return rows


def print_presets(rows: list[dict], console: Console) -> None:
    table = Table(title="glmlab presets", box=box.SIMPLE, pad_edge=False)
    for col in ("preset", "layers", "experts", "DSA k", "MTP D", "total", "active", "+ MTP"):
        table.add_column(col, justify="left" if col == "preset" else "right", no_wrap=True)
    for r in rows:
        dsa = "-" if r["dsa_k"] is None else str(r["dsa_k"])
        table.add_row(r["preset"], str(r["layers"]), r["experts"], dsa, str(r["mtp_depth"]),
                      count(r["total"]), count(r["active"]), count(r["total_with_mtp"]))  # fmt: skip
    console.print(table)


def print_build(cfg: Config, report: dict, layers: list[dict], console: Console) -> None:
    """The model as a tree of layer groups, then its parameters by component."""
    m = cfg.model
    comp = report["by_component"]
    tree = Tree(f"[bold]{cfg.name}[/] ({m.model_type}): {count(report['total'])} total, "
                f"{count(report['active'])} active per token")  # fmt: skip
    tree.add(f"embedding  {m.vocab_size} x {m.hidden_size} = {count(comp['embedding'])}")
    for row in layers:
        first, last = row["layers"][0], row["layers"][-1]
        span = f"layer {first}" if first == last else f"layers {first}-{last}"
        node = tree.add(
            f"{span} ({len(row['layers'])} x {count(row['params'])}): {row['attention']}, {row['kind']} FFN"
        )
        if row["kind"] == "MoE":
            node.add(f"{m.n_routed_experts} routed experts (top-{m.num_experts_per_tok}) of width "
                     f"{m.moe_intermediate_size}, {m.n_shared_experts} shared")  # fmt: skip
    tree.add(f"final norm, lm_head {m.hidden_size} x {m.vocab_size} = {count(comp['lm_head'])}")
    if m.num_mtp_modules:
        how = "shared across depths" if m.mtp_share_modules else "one per depth"
        tree.add(f"MTP: {m.num_mtp_modules} module(s), depth {m.num_nextn_predict_layers} ({how}) "
                 f"= {count(report['mtp'])}")  # fmt: skip
    console.print(tree)
    table = Table(title="parameters by component")
    for col in ("component", "total", "active / token", "MTP"):
        table.add_column(col, justify="left" if col == "component" else "right")
    mtp_parts = report["mtp_by_component"]
    for name in [*comp, *(c for c in mtp_parts if c not in comp)]:
        n, active = comp.get(name, 0), report["active_by_component"].get(name, 0)
        table.add_row(name, f"{n:,}", f"{active:,}", f"{mtp_parts.get(name, 0):,}")
    table.add_row("[bold]total", f"[bold]{report['total']:,}", f"[bold]{report['active']:,}",
                  f"[bold]{report['mtp']:,}")  # fmt: skip
    console.print(table)
    console.print(
        f"total {report['total']:,} | with MTP {report['total_with_mtp']:,} | "
        f"active {report['active']:,} | active without embedding and head {report['active_non_embedding']:,}"
    )
