"""Checkpoints that are never half-written, and loading a model from a run, a checkpoint or a
Hugging Face folder (design: "never lose a run").

A run directory holds `checkpoints/step-NNNNNNNN/` folders and a `checkpoints/latest` pointer.
Each checkpoint folder is self-contained: `config.yaml` (resolved), `model.safetensors` (weights
and the MoE selection biases, which are buffers), `optimizer.pt`, `trainer_state.pt` (step, stage,
data position, RNG states, the schedule's horizon), `tokenizer/`, and `checksums.json`, the
SHA-256 of every other file, checked whenever one is loaded (checkpoints written before it
existed load unchecked). A checkpoint is written under a temporary name and renamed into place;
`latest` is replaced the same way; older checkpoints are then removed. A run of several ranks
writes `sharded/` (torch.distributed.checkpoint: every rank's shards of the weights and the
optimiser) in place of `model.safetensors` and `optimizer.pt` (glmlab/parallel/dcp.py).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import yaml

from glmlab.config import Config, load_config
from glmlab.data.tokenizer import Tokenizer, load_tokenizer
from glmlab.errors import GlmlabError
from glmlab.model import CausalLM
from glmlab.parallel.dcp import is_sharded, load_sharded

CHECKPOINTS = "checkpoints"
LATEST = "latest"
WEIGHTS = "model.safetensors"
OPTIMIZER = "optimizer.pt"
STATE = "trainer_state.pt"
CONFIG = "config.yaml"
TOKENIZER = "tokenizer"
CHECKSUMS = "checksums.json"
SHARDED = "sharded"


@dataclass
class Loaded:
    """A model ready for inference (eval mode), its config and tokenizer (None if it has none)."""

    config: Config
    model: CausalLM
    tokenizer: Tokenizer | None
    path: Path


def write_config(cfg: Config, path: Path) -> None:
    """The resolved config (every field) as YAML, written atomically."""
    _atomic_write_text(path, yaml.safe_dump(cfg.to_dict(), sort_keys=False))


def _atomic_write_text(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with open(tmp, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def save_checkpoint(
    run_dir: str | Path,
    step: int,
    model: CausalLM,
    optimizer: torch.optim.Optimizer,
    state: dict[str, Any],
    cfg: Config,
    tokenizer: Tokenizer,
    *,
    write_state: Callable[[Path], None] | None = None,
) -> Path:
    """Write checkpoint `step` of a run atomically, point `latest` at it, drop older ones.
    `write_state(folder)` replaces the weights and optimiser files (a sharded checkpoint)."""
    from safetensors.torch import save_model

    root = Path(run_dir) / CHECKPOINTS
    root.mkdir(parents=True, exist_ok=True)
    name = f"step-{step:08d}"
    final = root / name
    tmp = root / f".{name}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    if write_state is None:
        save_model(model, str(tmp / WEIGHTS))
        torch.save(optimizer.state_dict(), tmp / OPTIMIZER)
    else:
        write_state(tmp)
    torch.save({**state, "step": step}, tmp / STATE)
    write_config(cfg, tmp / CONFIG)
    tokenizer.save(tmp / TOKENIZER)
    sums = {p.relative_to(tmp).as_posix(): _sha256(p) for p in sorted(tmp.rglob("*")) if p.is_file()}
    (tmp / CHECKSUMS).write_text(json.dumps({"sha256": sums}, indent=1) + "\n")
    if final.exists():
        shutil.rmtree(final)
    os.replace(tmp, final)
    _atomic_write_text(root / LATEST, name + "\n")
    for old in root.iterdir():
        if old.is_dir() and old.name != name:
            shutil.rmtree(old, ignore_errors=True)
    return final


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 22):
            h.update(chunk)
    return h.hexdigest()


def verify(checkpoint: Path, name: str) -> None:
    """Compare a checkpoint file with the SHA-256 recorded when it was saved (one-line error)."""
    path = checkpoint / name
    record = checkpoint / CHECKSUMS
    if not record.is_file() or not path.is_file():
        return  # written before checksums existed; a missing file is reported by its loader
    try:
        expected = json.loads(record.read_text())["sha256"].get(name)
    except (OSError, ValueError, KeyError, AttributeError):
        raise GlmlabError(f"{record} is unreadable: the checkpoint is damaged; use another") from None
    if expected is not None and _sha256(path) != expected:
        raise GlmlabError(
            f"checkpoint file {path} is corrupt: its SHA-256 differs from the one recorded when it was "
            "saved; resume from another checkpoint or train again"
        )


def latest_checkpoint(run_dir: str | Path) -> Path | None:
    """The checkpoint `latest` points to, or None when the run has none yet."""
    pointer = Path(run_dir) / CHECKPOINTS / LATEST
    if not pointer.is_file():
        return None
    target = pointer.parent / pointer.read_text().strip()
    if not has_weights(target):
        raise GlmlabError(f"{pointer} points to a missing checkpoint {target.name}: the run is damaged")
    return target


def resolve_checkpoint(source: str | Path) -> Path:
    """A run directory (its latest checkpoint) or a checkpoint directory -> the checkpoint folder."""
    path = Path(source)
    if not path.exists():
        raise GlmlabError(f"{source} does not exist: give a run directory, a checkpoint or a HF folder")
    if (path / CHECKPOINTS).is_dir():
        found = latest_checkpoint(path)
        if found is None:
            raise GlmlabError(f"run {source} has no checkpoint yet: train it longer or resume it")
        return found
    if has_weights(path) and (path / CONFIG).is_file():
        return path
    raise GlmlabError(f"{source} is not a glmlab run or checkpoint (no {CHECKPOINTS}/ or {WEIGHTS})")


def has_weights(checkpoint: Path) -> bool:
    """A checkpoint folder holds weights: one file, or a sharded folder."""
    return (checkpoint / WEIGHTS).is_file() or is_sharded(checkpoint / SHARDED)


def load_weights(model: CausalLM, checkpoint: Path) -> None:
    """Weights (and MoE biases) into `model`; a corrupt or mismatched file is a one-line error."""
    from safetensors.torch import load_model as load_safetensors

    if is_sharded(checkpoint / SHARDED):
        for path in sorted((checkpoint / SHARDED).iterdir()):
            verify(checkpoint, path.relative_to(checkpoint).as_posix())
        load_sharded(checkpoint / SHARDED, model)
        return

    path = checkpoint / WEIGHTS
    verify(checkpoint, WEIGHTS)
    try:
        load_safetensors(model, str(path), strict=True, device=str(next(model.parameters()).device))
    except FileNotFoundError:
        raise GlmlabError(f"checkpoint {checkpoint} has no {WEIGHTS}") from None
    except RuntimeError as err:
        first = str(err).strip().splitlines()[0][:200]
        raise GlmlabError(f"checkpoint {path} does not match its config: {first}") from None
    except Exception as err:  # safetensors raises its own error type on a damaged file
        raise GlmlabError(f"checkpoint {path} is corrupt ({type(err).__name__}): write a new one") from None


def load_state(checkpoint: Path, name: str = STATE) -> dict[str, Any]:
    """`trainer_state.pt` or `optimizer.pt` of a checkpoint."""
    path = checkpoint / name
    verify(checkpoint, name)
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise GlmlabError(f"checkpoint {checkpoint} has no {name}: it is incomplete") from None
    except Exception as err:
        raise GlmlabError(f"checkpoint file {path} is corrupt ({type(err).__name__}): use another") from None


def load_checkpoint_config(checkpoint: Path) -> Config:
    verify(checkpoint, CONFIG)
    return load_config(checkpoint / CONFIG)


def load_model(source: str | Path, device: str | torch.device = "cpu") -> Loaded:
    """A run directory, a checkpoint directory or a Hugging Face-format folder -> Loaded."""
    path = Path(source)
    if path.is_dir() and (path / "config.json").is_file() and not (path / CHECKPOINTS).is_dir():
        from glmlab.hf import from_pretrained

        model = from_pretrained(path, device=device)
        tokenizer = load_tokenizer(path) if (path / "tokenizer.json").is_file() else None
        return Loaded(Config(model=model.config, name=path.name), model.eval(), tokenizer, path)
    checkpoint = resolve_checkpoint(path)
    cfg = load_checkpoint_config(checkpoint)
    with torch.device(device):
        model = CausalLM(cfg.model, init=False)
    load_weights(model, checkpoint)
    tok_dir = checkpoint / TOKENIZER
    for path in sorted(tok_dir.rglob("*")):
        verify(checkpoint, path.relative_to(checkpoint).as_posix())
    tokenizer = load_tokenizer(tok_dir) if tok_dir.is_dir() else None
    return Loaded(cfg, model.eval(), tokenizer, checkpoint)
