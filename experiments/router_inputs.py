"""How alike the router inputs of a freshly initialised model are, per MoE layer: the share of
their energy along the mean over tokens (`glmlab.viz.inspect.common_direction_share`) and the
load (max over mean tokens per expert) of 2,048 bytes of the standard library's `inspect.py`
read as byte tokens. Measures docs/architecture.md, "Routing collapse at initialisation":

    python experiments/router_inputs.py glm5-small
    python experiments/router_inputs.py glm5-small --set embedding_init_std=null
"""

from __future__ import annotations

import argparse
import inspect
from pathlib import Path

import torch

from glmlab.build import build_model
from glmlab.config import load_config
from glmlab.train.metrics import load_imbalance
from glmlab.viz.inspect import inspect_layers


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("config", help="a preset or YAML file")
    parser.add_argument("--set", action="append", default=[], help="override a field (repeatable)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--tokens", type=int, default=2048)
    args = parser.parse_args()
    cfg = load_config(args.config, ["vocab_size=256", *args.set])
    torch.manual_seed(args.seed)
    model = build_model(cfg)
    ids = list(Path(inspect.getsourcefile(inspect)).read_bytes()[: args.tokens])
    moe = [i for i, kind in enumerate(cfg.model.mlp_layer_types) if kind == "sparse"]
    std = cfg.model.embedding_init_std or cfg.model.initializer_range
    scaled = cfg.model.scale_residual_init
    print(f"{args.config} {' '.join(args.set)}: embedding std {std}, residual writers scaled: {scaled}")
    for item in inspect_layers(model, ids, moe):
        counts = torch.tensor(item.routing.counts())[None]
        share, load = item.routing.common_share, load_imbalance(counts)[0]
        print(f"layer {item.layer:3d}  common share {share:.2f}  load {load:.2f}")


if __name__ == "__main__":
    main()
