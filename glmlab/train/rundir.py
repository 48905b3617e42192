"""The run directory: choosing it, refusing to overwrite a run, resolving the config of a new or
resumed run, and leaving nothing behind when a new run fails before its first checkpoint."""

from __future__ import annotations

import contextlib
import dataclasses
import os
import shutil
import time
from collections.abc import Iterator
from pathlib import Path

from glmlab.checkpoint import CHECKPOINTS, CONFIG
from glmlab.config import Config, load_config, validate
from glmlab.errors import GlmlabError


def is_run(path: Path) -> bool:
    return (path / CONFIG).is_file()


def default_run_dir(cfg: Config) -> Path:
    return Path("runs") / f"{cfg.name}-{time.strftime('%Y%m%d-%H%M%S')}"


def ensure_writable(path: Path) -> None:
    """Create the folder and prove it takes files, or fail with one line."""
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe = path / f".write-test-{os.getpid()}"
        probe.write_text("ok")
        probe.unlink()
    except OSError as err:
        msg = f"cannot write to output folder {path}: {err.strerror}; use another --out"
        raise GlmlabError(msg) from None


def refuse_leftover_run(path: Path) -> None:
    """A new run must not start in a folder that holds another run's config (a run that failed
    outside `removed_on_failure`): its files would mix with the new run's."""
    if is_run(path):
        hint = resume_hint(path)
        raise GlmlabError(f"{path} already holds a run: continue it with {hint}, or use a new --out")


def resume_hint(run_dir: str | Path, steps: int | None = None) -> str:
    """The one way to continue a run, spelled out for error messages."""
    return f"glmlab train {run_dir} --resume" + (f" --steps {steps}" if steps is not None else " [--steps N]")


def resolve_run(
    config: str,
    overrides: list[str] | None = None,
    *,
    out: str | None = None,
    resume: bool = False,
    data: str | None = None,
    steps: int | None = None,
    seed: int | None = None,
) -> tuple[Config, Path]:
    """The config and run folder for `glmlab train`. A new run needs a fresh (or empty) folder.
    `resume` continues the run folder `config` from its own config.yaml; only the total number of
    steps may change (`glmlab train RUN_DIR --resume [--steps N]`): every other spelling is an
    error that names this one."""
    if steps is not None and steps < 1:
        raise GlmlabError(f"--steps must be at least 1, got {steps}: it is the run's total number of steps")
    if resume:
        if out is not None:
            run = out if is_run(Path(out)) else "RUN_DIR"
            raise GlmlabError(
                f"--resume takes the run folder in place of the config, not --out: {resume_hint(run)}"
            )
        if not is_run(Path(config)):
            raise GlmlabError(
                f"{config} is not a run folder (no {CONFIG}): continue a run with {resume_hint('RUN_DIR')}"
            )
        if overrides or data or seed is not None:
            raise GlmlabError(
                f"--resume keeps the run's recipe, so drop --set/--data/--seed: {resume_hint(config)}"
            )
        return _apply(load_config(Path(config) / CONFIG), None, steps, None), Path(config)
    if is_run(Path(config)):
        raise GlmlabError(f"{config} is a run folder: continue it with {resume_hint(config, steps)}")
    if Path(config).is_dir():
        raise GlmlabError(f"{config} is a folder but not a run (no {CONFIG}): give a preset or a YAML file")
    cfg = _apply(load_config(config, overrides), data, steps, seed)
    if cfg.train.steps < 1:
        raise GlmlabError(f"train.steps is {cfg.train.steps}: a run needs at least 1 step (--steps N)")
    run_dir = Path(out) if out else default_run_dir(cfg)
    refuse_leftover_run(run_dir)
    if run_dir.is_dir() and any(run_dir.iterdir()):
        raise GlmlabError(f"output folder {run_dir} is not empty: choose a new --out")
    return cfg, run_dir


@contextlib.contextmanager
def removed_on_failure(run_dir: Path) -> Iterator[None]:
    """Around the start of a new run: if it fails (or is interrupted) before writing its first
    checkpoint, remove what it created (the run folder, and parents such as `runs/` that it made),
    so that failed attempts leave nothing behind; a folder the user made is emptied."""
    existed = run_dir.is_dir()
    top = run_dir.absolute()
    while not top.parent.exists():
        top = top.parent
    try:
        yield
    except BaseException:
        if run_dir.is_dir() and not (run_dir / CHECKPOINTS).is_dir():
            for path in list(run_dir.iterdir()) if existed else [top]:
                if path.is_dir():
                    shutil.rmtree(path, ignore_errors=True)
                else:
                    path.unlink(missing_ok=True)
        raise


def _apply(cfg: Config, data: str | None, steps: int | None, seed: int | None) -> Config:
    t = cfg.train
    changes = {k: v for k, v in (("data", data), ("steps", steps), ("seed", seed)) if v is not None}
    cfg = dataclasses.replace(cfg, train=dataclasses.replace(t, **changes))
    validate(cfg)
    return cfg
