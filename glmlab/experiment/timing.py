"""Each variant's training speed measured alone: after the cells, one variant at a time on the
device, so that speeds compare like with like. Cells trained side by side share the device, and
their tokens/s say as much about how many did (`device_load`) as about the variant."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

from glmlab.experiment.cell import device_name, write_json
from glmlab.experiment.load import DeviceLoad
from glmlab.experiment.spec import Spec

TIMING = "timing.json"
TIMING_STEPS = 10


def time_variants(spec: Spec, out_dir: Path, *, device: str, steps: int = TIMING_STEPS,
                  echo: Callable[[str], None] = print) -> dict:  # fmt: skip
    """`glmlab.measure.profile` of each variant's first-seed config (`steps` timed training steps
    after a counted one: AdamW, random tokens, the sparse stage), one variant after another on
    `device`, with the device's load recorded; written to timing.json and returned."""
    from glmlab.measure import profile

    variants = {}
    for v in spec.variants:
        cfg = next(c.config for c in spec.cells if c.variant == v.name)
        with DeviceLoad(device, every_s=1.0) as load:
            p = profile(cfg, steps=steps, device=device)
        variants[v.name] = {"step_s": p["step_time_s"], "tokens_per_s": p["tokens_per_s"],
                            "peak_memory_bytes": p["peak_memory_measured_bytes"], "mfu": p["mfu"],
                            "device_load": load.mean}  # fmt: skip
        echo(f"timed {v.name}: {p['tokens_per_s']:,.0f} tokens/s alone")
    data = {"device": device_name(device), "steps": steps, "variants": variants}
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
    for v in spec.variants:
        r = rows.get(v.name)
        if r is None:
            continue
        base = rows.get(spec.baseline[v.name])
        ratio = f"{r['tokens_per_s'] / base['tokens_per_s']:.2f}x" if base else "-"
        load = "-" if r["device_load"] is None else f"{r['device_load']:.1f}"
        out.append(f"| {v.name} | {r['step_s'] * 1e3:.1f} | {r['tokens_per_s']:,.0f} | {ratio} | "
                   f"{r['peak_memory_bytes'] / 1e9:.2f} | {r['mfu']:.1%} | {load} |")  # fmt: skip
    return [*out, ""]
