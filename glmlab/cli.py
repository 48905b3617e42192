"""The `glmlab` command: a thin typer layer over the library. Errors in the user's input
print one line and exit with status 2."""

from __future__ import annotations

import json
import sys
from typing import Optional

import typer
from rich import box
from rich.console import Console
from rich.table import Table
from rich.tree import Tree

from glmlab.errors import GlmlabError

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    help="glmlab: build, train, generate with and account for GLM-5-style models.",
)
console = Console()

CONFIG_ARG = typer.Argument(..., help="A preset name (glm5-tiny) or a YAML file.")
SET_OPT = typer.Option(None, "--set", help="Override a field: --set index_topk=64 (repeatable).")


def _fmt(n: float) -> str:
    for unit, size in (("T", 1e12), ("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if abs(n) >= size:
            return f"{n / size:.2f}{unit}"
    return str(int(n))


@app.command()
def presets() -> None:
    """List the presets with their headline numbers."""
    from glmlab.build import build_model, parameter_report
    from glmlab.config import load_config, preset_names

    table = Table(title="glmlab presets", box=box.SIMPLE)
    for col in ("preset", "layers", "experts", "DSA k", "MTP D", "total", "active"):
        table.add_column(col, justify="left" if col == "preset" else "right", no_wrap=True)
    for name in preset_names():
        cfg = load_config(name)
        m = cfg.model
        report = parameter_report(build_model(cfg, "meta"))
        experts = f"{m.num_experts_per_tok}/{m.n_routed_experts}" if m.use_moe else "dense"
        table.add_row(
            name, str(m.num_hidden_layers), experts,
            str(m.index_topk) if m.use_dsa else "-", str(m.num_nextn_predict_layers),
            _fmt(report["total"]), _fmt(report["active"]),
        )  # fmt: skip
    console.print(table)


@app.command()
def build(
    config: str = CONFIG_ARG,
    set_: Optional[list[str]] = SET_OPT,  # noqa: UP045 (typer needs Optional here)
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object instead of tables."),
) -> None:
    """Validate a config, build the model on the meta device, and count its parameters."""
    from glmlab.build import build_model, layer_summary, parameter_report
    from glmlab.config import load_config

    cfg = load_config(config, set_)
    model = build_model(cfg, "meta")
    report = parameter_report(model)
    layers = layer_summary(model)
    if as_json:
        out = {"name": cfg.name, "config": cfg.to_dict(), "params": report, "layers": layers}
        print(json.dumps(out, indent=2))
        return
    m = cfg.model
    tree = Tree(f"[bold]{cfg.name}[/] ({m.model_type}): {_fmt(report['total'])} total, "
                f"{_fmt(report['active'])} active per token")  # fmt: skip
    tree.add(f"embedding  {m.vocab_size} x {m.hidden_size} = {_fmt(report['by_component']['embedding'])}")
    for row in layers:
        first, last = row["layers"][0], row["layers"][-1]
        span = f"layer {first}" if first == last else f"layers {first}-{last}"
        node = tree.add(
            f"{span} ({len(row['layers'])} x {_fmt(row['params'])}): {row['attention']}, {row['kind']} FFN"
        )
        if row["kind"] == "MoE":
            node.add(f"{m.n_routed_experts} routed experts (top-{m.num_experts_per_tok}) of width "
                     f"{m.moe_intermediate_size}, {m.n_shared_experts} shared")  # fmt: skip
    tree.add(
        f"final norm, lm_head {m.hidden_size} x {m.vocab_size} = {_fmt(report['by_component']['lm_head'])}"
    )
    if m.num_mtp_modules:
        how = "shared across depths" if m.mtp_share_modules else "one per depth"
        tree.add(f"MTP: {m.num_mtp_modules} module(s), depth {m.num_nextn_predict_layers} ({how}) "
                 f"= {_fmt(report['mtp'])}")  # fmt: skip
    console.print(tree)
    table = Table(title="parameters by component")
    for col in ("component", "total", "active / token", "MTP"):
        table.add_column(col, justify="left" if col == "component" else "right")
    mtp_parts = report["mtp_by_component"]
    for comp in [*report["by_component"], *(c for c in mtp_parts if c not in report["by_component"])]:
        n, active = report["by_component"].get(comp, 0), report["active_by_component"].get(comp, 0)
        table.add_row(comp, f"{n:,}", f"{active:,}", f"{mtp_parts.get(comp, 0):,}")
    table.add_row("[bold]total", f"[bold]{report['total']:,}", f"[bold]{report['active']:,}",
                  f"[bold]{report['mtp']:,}")  # fmt: skip
    console.print(table)
    console.print(
        f"total {report['total']:,} | with MTP {report['total_with_mtp']:,} | "
        f"active {report['active']:,} | active without embedding and head {report['active_non_embedding']:,}"
    )


@app.command()
def train(
    config: str = typer.Argument(..., help="A preset, a YAML file, or (with --resume) a run folder."),
    set_: Optional[list[str]] = SET_OPT,  # noqa: UP045
    data: Optional[str] = typer.Option(None, "--data", help="stdlib, synthetic, or a file/folder/glob."),  # noqa: UP045
    steps: Optional[int] = typer.Option(None, "--steps", help="Total optimiser steps of the run."),  # noqa: UP045
    out: Optional[str] = typer.Option(None, "--out", help="Run folder (default runs/<name>-<time>)."),  # noqa: UP045
    resume: bool = typer.Option(False, "--resume", help="Continue the run in --out from its checkpoint."),
    device: str = typer.Option("auto", "--device", help="auto, cpu or cuda."),
    seed: Optional[int] = typer.Option(None, "--seed", help="Overrides train.seed."),  # noqa: UP045
) -> None:
    """Train a model on the built-in corpus or your own text; Ctrl-C saves a resumable checkpoint
    (exit 130; SIGTERM exits 143)."""
    from glmlab.train import resolve_run
    from glmlab.train import train as run_training

    cfg, run_dir = resolve_run(config, set_, out, resume, data, steps, seed)
    console.print(f"run folder [bold]{run_dir}[/] ({'resuming' if resume else 'new run'})")
    result = run_training(cfg, run_dir, resume, device, console)
    table = Table(title=f"{cfg.name}: summary")
    table.add_column("metric")
    table.add_column("value", justify="right")
    for key, value in result.summary.items():
        table.add_row(key, f"{value:.4g}" if isinstance(value, float) else str(value))
    console.print(table)
    if result.signum is not None:
        raise typer.Exit(128 + result.signum)


def main() -> None:
    """Entry point: run the app, turning GlmlabError into one line and exit status 2."""
    try:
        app()
    except GlmlabError as err:
        Console(stderr=True).print(f"[red]error:[/] {err}", highlight=False, soft_wrap=True)
        sys.exit(2)


if __name__ == "__main__":
    main()
