"""Run an ablation: one training run per variant of a base recipe, then one comparison table.

    python experiments/ablate.py experiments/moe_balance.yaml [--steps N] [--out runs/ablate]

A spec names a base config, the steps, and variants as lists of `--set` overrides:

    base: glm5-tiny
    steps: 120
    variants:
      gamma-0: [bias_update_gamma=0]
      gamma-1e-2: [bias_update_gamma=0.01]

Results (final validation loss, bits per byte, tokens/s, expert imbalance, indexer recall) are
printed and appended to <out>/<spec>/results.jsonl; record what you learn in experiments/README.md.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import yaml
from rich.console import Console
from rich.table import Table

from glmlab.train import resolve_run, train
from glmlab.train.rundir import is_run

COLUMNS = ["val_loss", "val_bpb", "final_lm_loss", "tokens_per_s", "expert_imbalance", "indexer_recall"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("spec", type=Path)
    parser.add_argument("--steps", type=int, help="override the spec's steps")
    parser.add_argument("--out", type=Path, default=Path("runs/ablate"))
    parser.add_argument("--device", default="auto")
    args = parser.parse_args()
    spec = yaml.safe_load(args.spec.read_text())
    steps = args.steps or spec.get("steps")
    console = Console()
    out_dir = args.out / args.spec.stem
    rows = {}
    for name, overrides in spec["variants"].items():
        run_dir = out_dir / name
        resume = is_run(run_dir)
        cfg, run_dir = resolve_run(spec["base"], overrides, str(run_dir), resume, None, steps, None)
        console.rule(f"{args.spec.stem}: {name} {' '.join(overrides or [])}")
        result = train(cfg, run_dir, resume=resume, device=args.device, console=console)
        rows[name] = {key: result.summary.get(key) for key in COLUMNS}
        with (out_dir / "results.jsonl").open("a") as f:
            f.write(
                json.dumps({"variant": name, "overrides": overrides, "steps": steps, **rows[name]}) + "\n"
            )
    table = Table(title=f"{args.spec.stem} ({steps} steps each)")
    table.add_column("variant")
    for key in COLUMNS:
        table.add_column(key, justify="right")
    for name, row in rows.items():
        table.add_row(name, *(f"{v:.4g}" if isinstance(v, float) else str(v) for v in row.values()))
    console.print(table)


if __name__ == "__main__":
    main()
