"""How many experiment cells train on one device at once. While a cell trains it holds a file,
named by its process, in a folder per device (shared by every runner on the machine), and samples
how many live holders are there. Cells that trained under different loads ran at different speeds
for that reason alone: the results table says their tokens/s are not comparable."""

from __future__ import annotations

import os
import tempfile
import threading
import uuid
from pathlib import Path

import torch

LOAD_DIR = Path(tempfile.gettempdir()) / "glmlab-device-load"
SAMPLE_EVERY_S = 5.0


def device_key(device: str) -> str:
    """A folder name per device: `cuda0`, `cuda1`, ... or `cpu`."""
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    dev = torch.device(device)
    if dev.type != "cuda":
        return dev.type
    return f"cuda{torch.cuda.current_device() if dev.index is None else dev.index}"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


class DeviceLoad:
    """A context that counts the cells training on `device` (itself included) every `every_s`
    seconds while it is open; `mean` is the average count. Holders whose process has died
    (a killed cell) are removed, not counted."""

    def __init__(self, device: str, *, root: Path = LOAD_DIR, every_s: float = SAMPLE_EVERY_S) -> None:
        self.folder = Path(root) / device_key(device)
        self.every_s = every_s
        self.samples: list[int] = []
        self._file = self.folder / f"{os.getpid()}.{uuid.uuid4().hex[:8]}"
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def count(self) -> int:
        n = 0
        for holder in self.folder.iterdir():
            pid = holder.name.split(".")[0]
            if pid.isdigit() and _alive(int(pid)):
                n += 1
            else:
                holder.unlink(missing_ok=True)
        return n

    @property
    def mean(self) -> float | None:
        return sum(self.samples) / len(self.samples) if self.samples else None

    def _sample(self) -> None:
        while True:
            self.samples.append(self.count())
            if self._stop.wait(self.every_s):
                return

    def __enter__(self) -> DeviceLoad:
        self.folder.mkdir(parents=True, exist_ok=True)
        self._file.touch()
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self._file.unlink(missing_ok=True)
