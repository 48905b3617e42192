"""Sharded model and optimiser state with torch.distributed.checkpoint (DCP).

Every rank writes the shards it holds into one folder (`__<rank>_0.distcp` files) and rank 0
writes `.metadata`, which maps each tensor's global shape to those pieces. State is keyed by
parameter name (`model.layers.3.mlp.experts.gate_up_proj`, the same names as the single-device
model), so a folder written by N ranks loads into M ranks, or into one process without a
process group. Optimiser state is keyed by the same names, not by position.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.distributed.checkpoint as dcp
from torch import nn
from torch.distributed.checkpoint import DefaultLoadPlanner
from torch.distributed.checkpoint.state_dict import (
    StateDictOptions,
    get_model_state_dict,
    get_optimizer_state_dict,
    set_model_state_dict,
    set_optimizer_state_dict,
)

from glmlab.errors import GlmlabError

METADATA = ".metadata"


def is_sharded(folder: Path) -> bool:
    return (Path(folder) / METADATA).is_file()


def _optimizers(optimizer: torch.optim.Optimizer) -> torch.optim.Optimizer | tuple:
    """The optimisers DCP sees: each part of a combined one (Muon + AdamW, glmlab/train/optim.py)."""
    parts = getattr(optimizer, "optimizers", None)
    return tuple(parts.values()) if isinstance(parts, dict) else optimizer


def save_sharded(folder: Path, model: nn.Module, optimizer: torch.optim.Optimizer) -> None:
    """Collective on every rank: write this rank's shards of the model and optimiser."""
    optim_state = get_optimizer_state_dict(model, _optimizers(optimizer))
    state = {"model": get_model_state_dict(model), "optimizer": optim_state}
    dcp.save(state, checkpoint_id=str(folder))


def load_sharded(folder: Path, model: nn.Module, optimizer: torch.optim.Optimizer | None = None) -> None:
    """Read the model (every tensor required) and, if given, the optimiser (a parameter that had
    no state when saved, frozen in the DSA warm-up, keeps the fresh state that AdamW starts from)."""
    if not is_sharded(folder):
        raise GlmlabError(f"{folder} has no {METADATA}: the sharded checkpoint is incomplete; use another")
    try:
        state = {"model": get_model_state_dict(model)}
        dcp.load(state, checkpoint_id=str(folder))
        set_model_state_dict(model, state["model"])
        if optimizer is not None:
            state = {"optimizer": get_optimizer_state_dict(model, _optimizers(optimizer))}
            dcp.load(state, checkpoint_id=str(folder), planner=DefaultLoadPlanner(allow_partial_load=True))
            set_optimizer_state_dict(model, _optimizers(optimizer), state["optimizer"])
    except (RuntimeError, ValueError, KeyError) as err:
        first = (str(err).strip().splitlines() or [type(err).__name__])[0][:200]
        raise GlmlabError(f"sharded checkpoint {folder} does not match this model: {first}") from None


def load_full_into_sharded(
    weights: dict[str, torch.Tensor],
    optimizer_state: dict,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
) -> None:
    """A one-process checkpoint (full weights, the optimiser's position-keyed state) into a
    sharded model and its optimiser, every rank keeping its shards. The optimiser was built the
    same way over the same parameter names, so the i-th parameter of the saved state is the i-th
    parameter of this one; the state is re-keyed by name, then distributed."""
    full = StateDictOptions(full_state_dict=True)
    set_model_state_dict(model, weights, options=full)
    names = {id(p): n for n, p in model.named_parameters()}
    parts = getattr(optimizer, "optimizers", None)
    saved = optimizer_state if isinstance(parts, dict) else {"": optimizer_state}
    current = parts if isinstance(parts, dict) else {"": optimizer}
    state, groups = {}, []
    for key, opt in current.items():
        index = 0
        for group, saved_group in zip(opt.param_groups, saved[key]["param_groups"], strict=True):
            fqns = []
            for p in group["params"]:
                if index in saved[key]["state"]:
                    state[names[id(p)]] = saved[key]["state"][index]
                fqns.append(names[id(p)])
                index += 1
            groups.append({**{k: v for k, v in saved_group.items() if k != "params"}, "params": fqns})
    set_optimizer_state_dict(
        model, _optimizers(optimizer), {"state": state, "param_groups": groups}, options=full
    )
