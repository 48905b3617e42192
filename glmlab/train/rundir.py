"""The run directory: choosing it, refusing to overwrite a run, and resolving the config of a
new or resumed run (design: "never lose a run")."""

from __future__ import annotations

import dataclasses
import os
import time
from pathlib import Path

from glmlab.checkpoint import CONFIG
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


def _first_difference(a: dict, b: dict, prefix: str = "") -> str | None:
    for key in sorted(set(a) | set(b)):
        if isinstance(a.get(key), dict) and isinstance(b.get(key), dict) and key == "train":
            found = _first_difference(a[key], b[key], "train.")
            if found:
                return found
        elif a.get(key) != b.get(key):
            return f"{prefix}{key} ({a.get(key)!r} in the run, {b.get(key)!r} now)"
    return None


def resolve_run(
    config: str,
    overrides: list[str] | None = None,
    out: str | None = None,
    resume: bool = False,
    data: str | None = None,
    steps: int | None = None,
    seed: int | None = None,
) -> tuple[Config, Path]:
    """The config and run folder for `glmlab train`. A new run needs a fresh (or empty) folder;
    `resume` reads the run's own config.yaml, lets only the total number of steps change and
    rejects any other difference from CONFIG/--set/--data/--seed."""
    if resume:
        run_dir = Path(out) if out else Path(config)
        if not is_run(run_dir):
            where = f"--out {out}" if out else config
            raise GlmlabError(f"{where} is not a run to resume (no {CONFIG}): give the run folder with --out")
        saved = load_config(run_dir / CONFIG)
        if out and not Path(config).is_dir():
            wanted = _apply(load_config(config, overrides), data, steps, seed)
            a, b = saved.to_dict(), wanted.to_dict()
            a["train"].pop("steps"), b["train"].pop("steps")
            a.pop("name"), b.pop("name")
            diff = _first_difference(a, b)
            if diff:
                raise GlmlabError(f"--resume with a changed recipe: {diff}; drop it or use a new --out")
        elif overrides or data or seed is not None:
            raise GlmlabError("--resume keeps the run's recipe: drop --set/--data/--seed (not --steps)")
        return _apply(saved, None, steps, None), run_dir
    cfg = _apply(load_config(config, overrides), data, steps, seed)
    run_dir = Path(out) if out else default_run_dir(cfg)
    if is_run(run_dir):
        raise GlmlabError(f"{run_dir} already holds a run: add --resume to continue it, or use a new --out")
    if run_dir.is_dir() and any(run_dir.iterdir()):
        raise GlmlabError(f"output folder {run_dir} is not empty: choose a new --out")
    return cfg, run_dir


def _apply(cfg: Config, data: str | None, steps: int | None, seed: int | None) -> Config:
    t = cfg.train
    changes = {k: v for k, v in (("data", data), ("steps", steps), ("seed", seed)) if v is not None}
    cfg = dataclasses.replace(cfg, train=dataclasses.replace(t, **changes))
    validate(cfg)
    return cfg
