"""Devices for every command: parsing `--device` (auto, cpu, cuda, cuda:N), the autocast context of
a precision, waiting for queued work, and the memory a device has free. torch is imported only
when a device is resolved, so checking a `--device` value costs nothing."""

from __future__ import annotations

import os
import re
from contextlib import AbstractContextManager, nullcontext
from typing import TYPE_CHECKING

from glmlab.errors import GlmlabError

if TYPE_CHECKING:
    import torch

DEVICE_HELP = "auto (CUDA when present), cpu, cuda or cuda:N."
PRECISIONS = ("bf16-mixed", "bf16", "fp32")
_PATTERN = re.compile(r"auto|cpu|cuda(:\d+)?")


def parse_device(name: str) -> str:
    """Check the spelling of a `--device` value without importing torch; returns it lower-cased."""
    text = str(name).strip().lower()
    if not _PATTERN.fullmatch(text):
        raise GlmlabError(f"--device {name!r} is not a device: use auto, cpu, cuda or cuda:N")
    return text


def resolve_device(name: str) -> torch.device:
    """`auto` picks CUDA when a GPU is visible, else the CPU; a GPU that is absent is an error."""
    import torch

    text = parse_device(name)
    if text == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if text == "cpu":
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise GlmlabError(f"--device {text}: no CUDA device is available here; use --device cpu")
    device = torch.device(text)
    count = torch.cuda.device_count()
    if device.index is not None and device.index >= count:
        raise GlmlabError(
            f"--device {text}: this machine has {count} CUDA device(s): use cuda:0 to cuda:{count - 1}"
        )
    return device


def device_type(name: str) -> str:
    """'cpu' or 'cuda' for a `--device` value; torch is imported only to resolve `auto`."""
    text = parse_device(name)
    return resolve_device(text).type if text == "auto" else text.split(":")[0]


def autocast(device: torch.device, precision: str = "bf16-mixed") -> AbstractContextManager:
    """The context a forward pass runs in: bf16 autocast for `bf16-mixed` on a GPU (fp32 weights,
    bf16 matrix products); nothing for `fp32`, for `bf16` (the weights themselves are bf16) and on
    the CPU, where bf16 autocast is slower than fp32."""
    if precision not in PRECISIONS:
        raise GlmlabError(f"precision {precision!r} is unknown: use one of {', '.join(PRECISIONS)}")
    if precision != "bf16-mixed" or device.type != "cuda":
        return nullcontext()
    import torch

    return torch.autocast(device.type, dtype=torch.bfloat16)


def bf16_parameters(model: torch.nn.Module) -> None:
    """`train.precision: bf16`: parameters (so gradients and optimiser states) in bf16. Buffers keep
    their dtype: the router biases take steps of 1e-3 that bf16 would round away."""
    import torch

    for p in model.parameters():
        p.data = p.data.to(torch.bfloat16)


def synchronize(device: torch.device) -> None:
    """Wait for the work queued on `device` (a no-op on the CPU), so that timings are real."""
    if device.type == "cuda":
        import torch

        torch.cuda.synchronize(device)


def multiprocessors(device: torch.device) -> int:
    """Streaming multiprocessors of a CUDA device, for kernels that size persistent grids by them;
    2 elsewhere (Triton's interpreter on the CPU)."""
    if device.type == "cuda":
        import torch

        return torch.cuda.get_device_properties(device).multi_processor_count
    return 2


def available_memory(device: torch.device) -> int:
    """Bytes free for a new allocation: the GPU's free memory, or the host's MemAvailable (the
    memory Linux can hand out without swapping; free pages elsewhere)."""
    if device.type == "cuda":
        import torch

        return torch.cuda.mem_get_info(device)[0]
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
