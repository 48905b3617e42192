"""Checkpoints of a run of several ranks, and exporting any checkpoint to a Hugging Face folder.

Rank 0 writes the checkpoint folder as a single process does (glmlab/checkpoint.py: temporary
name, checksums, rename, `latest`), except that the weights and the optimiser are a sharded
folder that every rank writes its own part of. Rank 0 renames only after `dcp.save` returns on
every rank, so `latest` never points at a checkpoint some rank has not finished; a run that dies
while saving leaves the previous checkpoint as `latest`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from glmlab.checkpoint import OPTIMIZER, SHARDED, WEIGHTS, load_model, load_state, save_checkpoint, verify
from glmlab.config import Config
from glmlab.data.tokenizer import Tokenizer
from glmlab.errors import GlmlabError
from glmlab.model import CausalLM
from glmlab.parallel.dcp import load_full_into_sharded, save_sharded
from glmlab.parallel.world import World


def save_sharded_checkpoint(
    world: World,
    run_dir: Path,
    step: int,
    model: CausalLM,
    optimizer: torch.optim.Optimizer,
    state: dict[str, Any],
    cfg: Config,
    tokenizer: Tokenizer,
) -> Path:
    """Collective: checkpoint `step` with every rank's shards; returns its folder on every rank."""

    def write(folder: Path) -> None:
        world.broadcast(str(folder))  # the other ranks learn where to write
        save_sharded(folder / SHARDED, model, optimizer)

    if world.is_main:
        final = save_checkpoint(run_dir, step, model, optimizer, state, cfg, tokenizer, write_state=write)
    else:
        save_sharded(Path(world.broadcast(None)) / SHARDED, model, optimizer)
        final = None
    return Path(world.broadcast(str(final) if final else None))


def resume_one_process_checkpoint(
    checkpoint: Path, model: CausalLM, optimizer: torch.optim.Optimizer
) -> None:
    """A checkpoint written by one process (`model.safetensors`, `optimizer.pt`) into a model
    and optimiser sharded over several ranks: every rank reads the files, keeps its shards."""
    from safetensors.torch import load_file

    verify(checkpoint, WEIGHTS)
    device = next(p.device for p in model.parameters())
    try:
        weights = load_file(str(checkpoint / WEIGHTS), device=str(device))
    except Exception as err:  # safetensors raises its own error type on a damaged file
        raise GlmlabError(f"checkpoint {checkpoint / WEIGHTS} is unreadable ({type(err).__name__})") from None
    load_full_into_sharded(weights, load_state(checkpoint, OPTIMIZER), model, optimizer)


def export_hf(source: str | Path, out: str | Path) -> Path:
    """Gather a checkpoint (single-file or sharded, any number of ranks) into a Hugging Face
    folder: config.json and model.safetensors (`glmlab.hf.save_pretrained`), plus the
    tokenizer, which transformers and `glmlab.from_pretrained` load."""
    from glmlab.hf import save_pretrained

    target = Path(out)
    if target.exists() and any(target.iterdir()):
        raise GlmlabError(f"--to folder {out} is not empty: choose a new folder")
    loaded = load_model(source)
    path = save_pretrained(loaded.model, target)
    if loaded.tokenizer is not None:
        loaded.tokenizer.save(path)
    return path
