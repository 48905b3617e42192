"""DSA stage 1 on a model whose attention has something to copy: does the indexer learn it?

DeepSeek-V3.2 and GLM-5 ran the dense warm-up (stage 1 in docs/architecture.md, DSA) on a pretrained
model. In a run from scratch the warm-up sees near-uniform attention, so the indexer has nothing to learn
(recall stays at the uniform value; see experiments/README.md). This script takes a trained
run, replaces its lightning indexers with freshly initialised ones, freezes everything else
and trains only the indexers on the KL target with dense attention, printing indexer recall
(the share of dense attention probability inside the top-k) as it goes.

    python experiments/indexer_warmup.py runs/tiny-long [--steps 60] [--lr 3e-3]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from glmlab.checkpoint import load_model
from glmlab.data.batching import Batches
from glmlab.data.prepare import prepare_data
from glmlab.train.loop import set_stage


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run")
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--log-every", type=int, default=10)
    args = parser.parse_args()
    loaded = load_model(args.run)
    model, cfg = loaded.model, loaded.config
    t = cfg.train
    data = prepare_data(cfg, Path(args.run))  # the run's own tokenizer, the cached token stream
    batches = Batches(data.train, t.seq_len, t.batch_size, seed=t.seed + 1)
    torch.manual_seed(t.seed)
    for name, module in model.named_modules():
        if name.endswith(".indexer"):
            module.apply(model._init_module)  # forget what the run's indexers learnt
    model.train()
    set_stage(model, "dense-warmup")  # only the indexer parameters require grad
    optimizer = torch.optim.AdamW(model.indexer_parameters(), lr=args.lr, weight_decay=0.0)
    for step in range(args.steps + 1):
        x = batches.batch(step)
        out = model(x, labels=x, dsa_dense=True)
        if step % args.log_every == 0:
            kl, recall = out.indexer_loss.item(), out.indexer_recall.item()
            print(f"step {step:4d} | indexer KL {kl:.4f} | recall {recall:.3f}", flush=True)
        if step == args.steps:
            break
        optimizer.zero_grad(set_to_none=True)
        out.indexer_loss.backward()
        optimizer.step()


if __name__ == "__main__":
    main()
