"""The device load an experiment cell records (cells training on its device at once) and the
results table's refusal to compare speeds measured under different loads."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch

from glmlab.errors import GlmlabError
from glmlab.experiment import load, load_spec
from glmlab.experiment.load import DeviceLoad, device_key
from glmlab.experiment.report import verdict
from glmlab.experiment.results import table


def test_counts_the_cells_on_one_device_and_forgets_dead_ones(tmp_path, monkeypatch):
    monkeypatch.setenv("GLMLAB_LOAD_DIR", str(tmp_path))
    other = subprocess.Popen(
        [sys.executable, "-c", "import time; from glmlab.experiment.load import DeviceLoad\n"
         "with DeviceLoad('cpu'): print('in', flush=True); time.sleep(60)"],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert other.stdout.readline().strip() == "in"
        with DeviceLoad("cpu", every_s=0.01) as ours:
            (ours.folder / "123-left").touch()  # a file nobody holds: not counted, removed
            monkeypatch.setattr(load, "device_key", lambda device: device.replace(":", ""))
            with DeviceLoad("cpu", every_s=0.01), DeviceLoad("cuda:3"):  # the last on another device
                assert ours.count() == 3
            other.kill()  # SIGKILL: no clean-up, but the kernel drops its lock
            other.wait()
            assert ours.count() == 1 and [p.name for p in ours.folder.iterdir()] == [ours.name]
    finally:
        other.kill()
    assert not any(ours.folder.iterdir()) and 1 <= ours.mean <= 3


def test_a_device_folder_per_physical_device():
    assert device_key("cpu") == "cpu"
    if not torch.cuda.is_available():
        with pytest.raises(GlmlabError, match="no CUDA device"):
            device_key("cuda")


def test_speed_differences_under_different_loads_are_not_comparable(tmp_path):
    path = tmp_path / "study.yaml"
    path.write_text("base: glm5-tiny\nsteps: 5\nseeds: [1, 2]\nbaseline: a\n"
                    "variants: {a: [], b: [index_topk=8], c: [index_topk=16]}\n")  # fmt: skip
    spec = load_spec(path)
    loads = {"a": 6.0, "b": 1.0, "c": 5.5}  # b trained alone, a and c beside five others

    def cell(variant: str, seed: int) -> dict:
        metrics = {"val_loss": 3.0 + seed / 10, "tokens_per_s": 1000.0 * seed / loads[variant],
                   "device_load": loads[variant]}  # fmt: skip
        return {"variant": variant, "seed": seed, "metrics": metrics}

    rows = table(spec, {f"{v}/seed-{s}": cell(v, s) for v in loads for s in (1, 2)})
    note = {(r.variant, r.metric): r.load_note for r in rows}
    assert note[("b", "tokens_per_s")] == "not comparable: 1.0 against 6.0 cells training on the device"
    assert note[("c", "tokens_per_s")] is None and note[("b", "val_loss")] is None  # within 25%; not a speed
    row = next(r for r in rows if (r.variant, r.metric) == ("b", "tokens_per_s"))
    assert verdict(row.diff, row.metric, row.load_note).startswith("not comparable")
