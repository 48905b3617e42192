"""Each variant's training speed measured alone: after the cells, one variant at a time on the
device, so that speeds compare like with like. Cells trained side by side share the device, and
their tokens/s say as much about how many did (`device_load`) as about the variant."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from pathlib import Path

from glmlab.config import Config
from glmlab.experiment.cell import device_name, write_json
from glmlab.experiment.load import DeviceLoad
from glmlab.experiment.spec import Spec

TIMING = "timing.json"
TIMING_STEPS = 10


def fingerprint(cfg: Config) -> str:
    """A short hash of a config: a timing whose config has changed since is stale."""
    return hashlib.sha256(json.dumps(cfg.to_dict(), sort_keys=True).encode()).hexdigest()[:12]


def _first_config(spec: Spec, variant: str) -> Config:
    return next(c.config for c in spec.cells if c.variant == variant)


def time_variants(spec: Spec, out_dir: Path, *, device: str, steps: int = TIMING_STEPS,
                  echo: Callable[[str], None] = print) -> dict:  # fmt: skip
    """`glmlab.measure.profile` of each variant's first-seed config (`steps` timed training steps
    after a counted one: AdamW, random tokens, the sparse stage), one variant after another on
    `device`, with the device's load recorded. timing.json is rewritten after each variant; a
    variant that fails (too big for the device's free memory, say) records its error and the
    others go on."""
    from glmlab.measure import profile

    data = {"device": device_name(device), "steps": steps, "variants": {}}
    for v in spec.variants:
        cfg = _first_config(spec, v.name)
        row = {"baseline": spec.baseline[v.name], "config": fingerprint(cfg)}
        try:
            with DeviceLoad(device, every_s=1.0) as load:
                p = profile(cfg, steps=steps, device=device)
        except Exception as err:  # noqa: BLE001 - reported in the row and the report, not raised
            row["error"] = f"{type(err).__name__}: {err}".splitlines()[0]
            echo(f"timing {v.name} FAILED: {row['error']}")
        else:
            row.update(step_s=p["step_time_s"], tokens_per_s=p["tokens_per_s"], mfu=p["mfu"],
                       peak_memory_bytes=p["peak_memory_measured_bytes"], device_load=load.mean)  # fmt: skip
            echo(f"timed {v.name}: {p['tokens_per_s']:,.0f} tokens/s alone")
        data["variants"][v.name] = row
        write_json(out_dir / TIMING, data)
    return data


def timing_lines(spec: Spec, out_dir: Path) -> list[str]:
    """The report's section on timing.json, or nothing when the spec was not timed."""
    path = out_dir / TIMING
    if not path.is_file():
        return []
    data = json.loads(path.read_text())
    rows = data["variants"]
    out = [
        "## Speed alone on the device", "",
        f"`glmlab experiment ... --timing` on {data['device']}: each variant's first-seed config, "
        f"{data['steps']} training steps after a counted one (`glmlab.measure.profile`: AdamW, random "
        "tokens, the sparse stage), one variant at a time. `device_load` above 1 means other work shared "
        "the device meanwhile.", "",
        "| variant | step (ms) | tokens/s | vs baseline | peak memory (GB) | MFU | device_load |",
        "|---|---|---|---|---|---|---|",
    ]  # fmt: skip
    current = {v.name: r for v in spec.variants if (r := rows.get(v.name)) is not None
               and r.get("config") == fingerprint(_first_config(spec, v.name))}  # fmt: skip
    for v in spec.variants:
        r = current.get(v.name)
        if r is None:
            note = "config changed since it was timed" if v.name in rows else "not timed"
            out.append(f"| {v.name} | {note} | | | | | |")
            continue
        if "error" in r:
            out.append(f"| {v.name} | failed: {r['error']} | | | | | |")
            continue
        base = current.get(spec.baseline[v.name], {})
        ratio = f"{r['tokens_per_s'] / base['tokens_per_s']:.2f}x" if "tokens_per_s" in base else "-"
        load = "-" if r["device_load"] is None else f"{r['device_load']:.1f}"
        out.append(f"| {v.name} | {r['step_s'] * 1e3:.1f} | {r['tokens_per_s']:,.0f} | {ratio} | "
                   f"{r['peak_memory_bytes'] / 1e9:.2f} | {r['mfu']:.1%} | {load} |")  # fmt: skip
    return [*out, ""]
