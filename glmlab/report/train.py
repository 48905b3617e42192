"""What `glmlab train` prints: the step lines (each within 80 columns), the validation line and
the final summary table, from the records the trainer writes to metrics.jsonl."""

from __future__ import annotations

from rich.console import Console
from rich.table import Table

from glmlab.report.units import nbytes

INDENT = "    "


def _rate(tokens_per_s: float) -> str:
    return f"{tokens_per_s:,.0f}" if tokens_per_s < 1e5 else f"{tokens_per_s / 1e3:,.0f}k"


def step_lines(r: dict, *, dense_warmup: bool) -> list[str]:
    """Two lines for one training record: what is optimised (and its parts), then the rates.
    During the DSA dense warm-up only the indexer's KL is optimised, and the line says so."""
    head = f"step {r['step']:>6}"
    if dense_warmup:
        kl, lm = r["indexer_loss"], r["lm_loss"]
        first = f"{head}  indexer KL {kl:.4f} (warm-up trains the indexer; lm {lm:.3f})"
    else:
        parts = [f"lm {r['lm_loss']:.4f}"]
        parts += [f"{label} {r[key]:.4f}" for key, label in (("mtp_loss", "mtp"), ("indexer_loss", "idx"))
                  if key in r]  # fmt: skip
        first = f"{head}  loss {r['loss']:.4f} ({', '.join(parts)})"
    rates = [f"lr {r['lr']:.2e}", f"|g| {r['grad_norm']:.3g}", f"{_rate(r['tokens_per_s'])} tok/s"]
    if r.get("mfu") is not None:
        rates.append(f"mfu {100 * r['mfu']:.1f}%")
    if "expert_imbalance" in r:
        rates.append(f"load {r['expert_imbalance']:.2f}")
    if "expert_rank_imbalance" in r:  # expert parallelism: the busiest rank over the mean
        rates.append(f"ranks {r['expert_rank_imbalance']:.2f}")
    if r.get("indexer_recall") is not None:
        rates.append(f"recall {r['indexer_recall']:.3f}")
    return [first, INDENT + "  ".join(rates)]


def collapse_warning(r: dict, *, ceiling: float) -> list[str]:
    """Lines (none, or three within 80 columns) for a record whose load (max over mean tokens per
    expert, mean over the routers) is within 10% of its ceiling E/k: nearly every token then
    chooses the same k experts."""
    load = r.get("expert_imbalance")
    if load is None or load < 0.9 * ceiling:
        return []
    return [f"warning: routers collapsed (load {load:.2f} of at most {ceiling:g}: same experts chosen)",
            INDENT + "try embedding_init_std=1.0 and train.bias_update_gamma=1e-2;",
            INDENT + 'docs/architecture.md, "Routing collapse at initialisation"']  # fmt: skip


def eval_line(r: dict) -> str:
    return f"step {r['step']:>6}  val loss {r['val_loss']:.4f}  val bits/byte {r['val_bpb']:.4f}"


def print_summary(name: str, summary: dict, console: Console) -> None:
    """The final table of a training run."""
    table = Table(title=f"{name}: summary")
    table.add_column("metric")
    table.add_column("value", justify="right")
    for key, value in summary.items():
        if key.endswith("_bytes"):
            value = nbytes(value)
        table.add_row(key, f"{value:.4g}" if isinstance(value, float) else str(value))
    console.print(table)
