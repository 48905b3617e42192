"""How many experiment cells train on one device at once. While a cell trains it holds a file in a
folder per device, shared by every runner on the machine, with an exclusive lock on it (the
kernel drops the lock when the process dies), and samples how many locked files are there. Cells
that trained under different loads ran at different speeds for that reason alone: the results
table says their tokens/s are not comparable."""

from __future__ import annotations

import fcntl
import os
import tempfile
import threading
import uuid
from pathlib import Path

import torch

from glmlab.device import resolve_device

SAMPLE_EVERY_S = 5.0
# Two loads further apart than this ratio make two speeds incomparable (results.py, claims).
LOAD_TOLERANCE = 1.25


def load_dir() -> Path:
    """The folder of per-device folders: GLMLAB_LOAD_DIR, else one in the temporary directory."""
    return Path(os.environ.get("GLMLAB_LOAD_DIR") or Path(tempfile.gettempdir()) / "glmlab-device-load")


def device_key(device: str) -> str:
    """A folder name per physical device: `cpu`, or `cuda-` and the GPU's UUID (the same GPU under
    any CUDA_VISIBLE_DEVICES numbering)."""
    dev = resolve_device(device)
    if dev.type != "cuda":
        return dev.type
    index = torch.cuda.current_device() if dev.index is None else dev.index
    return f"cuda-{getattr(torch.cuda.get_device_properties(index), 'uuid', index)}"


def _held(path: Path) -> bool:
    """Whether a live process holds `path`'s lock; a file nobody holds is removed."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)
    path.unlink(missing_ok=True)  # its holder died without cleaning up
    return False


class DeviceLoad:
    """A context that counts the cells training on `device` (itself included) every `every_s`
    seconds while it is open; `mean` is the average count (None before the first sample)."""

    def __init__(self, device: str, *, every_s: float = SAMPLE_EVERY_S) -> None:
        self.folder = load_dir() / device_key(device)
        self.every_s = every_s
        self.samples: list[int] = []
        self.name = f"{os.getpid()}-{uuid.uuid4().hex[:8]}"
        self._fd: int | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def count(self) -> int:
        """Locked files in the device's folder (names starting with '.' are being created)."""
        return sum(1 for p in self.folder.iterdir() if not p.name.startswith(".") and _held(p))

    @property
    def mean(self) -> float | None:
        return sum(self.samples) / len(self.samples) if self.samples else None

    def _sample(self) -> None:
        while True:
            try:
                self.samples.append(self.count())
            except OSError:  # the folder was removed under us: this sample is lost, not the run
                pass
            if self._stop.wait(self.every_s):
                return

    def __enter__(self) -> DeviceLoad:
        self.folder.mkdir(parents=True, exist_ok=True)
        hidden = self.folder / f".{self.name}"  # locked before it is visible to a counter
        self._fd = os.open(hidden, os.O_CREAT | os.O_WRONLY, 0o644)
        fcntl.flock(self._fd, fcntl.LOCK_EX)
        os.replace(hidden, self.folder / self.name)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        (self.folder / self.name).unlink(missing_ok=True)
        if self._fd is not None:
            os.close(self._fd)
