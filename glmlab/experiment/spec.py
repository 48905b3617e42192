"""An experiment spec (YAML): a base config, axes of variants whose product is the grid, seeds,
the baseline each variant is compared with, and the `--quick` settings for CI.

    question: What does DSA's k cost in loss and buy in speed?
    base: glm5-tiny                 # a preset name or a YAML path (relative to the spec)
    set: [train.seq_len=1024]       # `--set` overrides for every cell
    steps: 1500
    seeds: [1, 2, 3]
    axes:                           # the grid is the product of the axes
      index_topk: [64, 256]         #   a list of values: the level is FIELD=VALUE
      mtp:                          #   or named levels, each a list of overrides
        own: [mtp_share_modules=false]
        shared: [mtp_share_modules=true]
    baseline: {index_topk: 256}     # the other axes stay as the variant has them
    headline: [val_loss, tokens_per_s]
    quick: {steps: 3, seeds: [1], set: [train.seq_len=64]}   # may also replace axes/variants

`variants: {name: [overrides]}` is a one-axis grid named `variant`; with one axis, `baseline`
may be a level name. Also: `requires: [FIELD]` (config fields the study needs), `sweep:` (the
axis the plots put on x; the first by default), `mtp_eval: {domains, prompts, max_new_tokens}`
(the speculative-decoding measurement of cells with MTP), `notes:` (copied into the report).
Cells are ordered seed by seed. Every cell's config is built and validated when the spec is loaded, so a
field this glmlab lacks is reported before anything runs.
"""

from __future__ import annotations

import dataclasses
import itertools
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from glmlab.config import Config, ModelConfig, TrainConfig, load_config
from glmlab.errors import GlmlabError

KEYS = {"question", "requires", "base", "set", "steps", "seeds", "axes", "variants", "baseline",
        "headline", "sweep", "mtp_eval", "notes", "quick"}  # fmt: skip
QUICK_KEYS = {"steps", "seeds", "set", "mtp_eval", "axes", "variants"}
DEFAULT_HEADLINE = ["val_loss", "tokens_per_s"]


@dataclass
class Variant:
    """One point of the grid: its level on each axis and the overrides those levels add."""

    name: str
    levels: dict[str, str]
    overrides: list[str]


@dataclass
class Cell:
    """One training run: a variant at one seed, with its resolved config."""

    variant: str
    seed: int
    config: Config

    @property
    def key(self) -> str:
        return f"{self.variant}/seed-{self.seed}"


@dataclass
class Spec:
    name: str
    path: Path
    question: str
    base: str
    base_set: list[str]
    steps: int
    seeds: list[int]
    axes: dict[str, dict[str, list[str]]]
    variants: list[Variant]
    baseline: dict[str, str]  # variant name -> the variant it is compared with
    headline: list[str]
    sweep: str
    mtp_eval: dict
    notes: str
    quick: bool
    cells: list[Cell] = field(default_factory=list)

    def variant(self, name: str) -> Variant:
        return next(v for v in self.variants if v.name == name)


def _fail(path: Path, problem: str) -> None:
    raise GlmlabError(f"experiment spec {path}: {problem}")


def _overrides(path: Path, where: str, value) -> list[str]:
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, list) or not all(isinstance(i, str) and "=" in i for i in items):
        _fail(path, f"{where} must be a list of FIELD=VALUE strings, got {value!r}")
    return list(items)


def _value_text(value) -> str:
    return yaml.safe_dump(value, default_flow_style=True).strip().removesuffix("...").strip()


def _axes(path: Path, raw: dict) -> dict[str, dict[str, list[str]]]:
    if ("axes" in raw) == ("variants" in raw):
        _fail(path, "give exactly one of `axes:` (a product of axes) or `variants:` (a list of variants)")
    axes_raw = raw["axes"] if "axes" in raw else {"variant": raw["variants"]}
    if not isinstance(axes_raw, dict) or not axes_raw:
        _fail(path, "`axes:`/`variants:` must be a non-empty mapping")
    axes: dict[str, dict[str, list[str]]] = {}
    for axis, levels in axes_raw.items():
        if isinstance(levels, list) and levels:
            axes[axis] = {_value_text(v): [f"{axis}={_value_text(v)}"] for v in levels}
        elif isinstance(levels, dict) and levels:
            axes[axis] = {str(k): _overrides(path, f"level {k!r} of {axis!r}", v) for k, v in levels.items()}
        else:
            _fail(path, f"axis {axis!r} needs a list of values or a mapping of level: [overrides]")
    return axes


def _baselines(path: Path, raw, axes: dict, variants: list[Variant]) -> dict[str, str]:
    """Each variant's baseline: the variant with the baseline's levels and the variant's others."""
    if raw is None:
        wanted = {axis: next(iter(levels)) for axis, levels in axes.items()}
    elif isinstance(raw, (str, int, float)) and len(axes) == 1:
        wanted = {next(iter(axes)): _value_text(raw) if not isinstance(raw, str) else raw}
    elif isinstance(raw, dict):
        wanted = {str(k): v if isinstance(v, str) else _value_text(v) for k, v in raw.items()}
    else:
        _fail(path, "`baseline:` is a level name (one axis) or a mapping {axis: level}")
    for axis, level in wanted.items():
        if axis not in axes or level not in axes[axis]:
            known = ", ".join(f"{a}: {list(levels)}" for a, levels in axes.items())
            _fail(path, f"baseline {axis}={level!r} is not a level of the grid ({known})")
    by_levels = {tuple(v.levels.items()): v.name for v in variants}
    return {v.name: by_levels[tuple({**v.levels, **wanted}.items())] for v in variants}


def _check_requires(path: Path, fields: list) -> None:
    """`requires: [FIELD, ...]`: config fields the spec needs that an older glmlab may lack."""
    known = {f.name for f in dataclasses.fields(ModelConfig)} | {
        f"train.{f.name}" for f in dataclasses.fields(TrainConfig)
    }
    missing = [f for f in fields if f not in known]
    if missing:
        _fail(path, f"needs the config field(s) {', '.join(missing)}, which this glmlab does not have: "
                    "it runs once the model supports them")  # fmt: skip


def _resolve_base(path: Path, base: str) -> str:
    if base.endswith((".yaml", ".yml")) or "/" in base:
        candidate = (path.parent / base) if not Path(base).is_absolute() else Path(base)
        return str(candidate if candidate.exists() else base)
    return base


def load_spec(path: str | Path, *, quick: bool = False, steps: int | None = None) -> Spec:
    """Read, check and expand a spec; with `quick`, apply its `quick:` settings; `steps`
    replaces the spec's steps."""
    path = Path(path)
    if not path.is_file():
        raise GlmlabError(
            f"experiment spec {path} not found: give a YAML file such as experiments/dsa_topk.yaml"
        )
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        raise GlmlabError(f"experiment spec {path} is not valid YAML: {err}".splitlines()[0]) from None
    if not isinstance(raw, dict):
        _fail(path, "must be a mapping (question, base, axes or variants, seeds, ...)")
    unknown = sorted(set(raw) - KEYS)
    if unknown:
        _fail(path, f"unknown key {unknown[0]!r}: use {', '.join(sorted(KEYS))}")
    q = raw.get("quick") or {}
    if not isinstance(q, dict) or set(q) - QUICK_KEYS:
        _fail(path, f"`quick:` is a mapping of {', '.join(sorted(QUICK_KEYS))}")
    settings = {**raw, **q} if quick else raw
    steps, seeds = steps or settings.get("steps"), settings.get("seeds", [1])
    if not isinstance(steps, int) or steps < 1:
        _fail(path, f"`steps:` must be a positive integer, got {steps!r}")
    if not isinstance(seeds, list) or not seeds or not all(isinstance(s, int) for s in seeds):
        _fail(path, f"`seeds:` must be a non-empty list of integers, got {seeds!r}")
    if len(set(seeds)) != len(seeds):
        _fail(path, f"`seeds:` repeats a seed: {seeds}")
    _check_requires(path, raw.get("requires", []))
    axes = _axes(path, q if quick and ("axes" in q or "variants" in q) else raw)
    variants = []
    for combo in itertools.product(*(levels.items() for levels in axes.values())):
        levels = {axis: level for axis, (level, _) in zip(axes, combo, strict=True)}
        name = (
            ",".join(levels.values()) if len(axes) == 1 else ",".join(f"{a}={lv}" for a, lv in levels.items())
        )
        variants.append(Variant(name, levels, [o for _, overrides in combo for o in overrides]))
    base_set = _overrides(path, "`set:`", raw.get("set", []))
    if quick:
        base_set += _overrides(path, "`quick.set:`", q.get("set", []))
    headline = raw.get("headline", DEFAULT_HEADLINE)
    sweep = raw.get("sweep", next(iter(axes)))
    if sweep not in axes:
        _fail(path, f"`sweep:` {sweep!r} is not an axis: use one of {list(axes)}")
    spec = Spec(
        name=path.stem, path=path, question=str(raw.get("question", "")).strip(),
        base=_resolve_base(path, str(raw.get("base", "glm5-tiny"))), base_set=base_set, steps=steps,
        seeds=seeds, axes=axes, variants=variants,
        baseline=_baselines(path, raw.get("baseline"), axes, variants), headline=list(headline),
        sweep=sweep, mtp_eval=dict(settings.get("mtp_eval") or {}), notes=str(raw.get("notes", "")).strip(),
        quick=quick,
    )  # fmt: skip
    for seed in seeds:  # seed-major: a run cut short still has whole seeds of paired variants
        for v in variants:
            overrides = [*base_set, *v.overrides, f"train.steps={steps}", f"train.seed={seed}"]
            try:
                cfg = load_config(spec.base, overrides)
            except GlmlabError as err:
                raise GlmlabError(f"experiment spec {path}, variant {v.name}: {err}") from None
            spec.cells.append(Cell(v.name, seed, cfg))
    return spec
