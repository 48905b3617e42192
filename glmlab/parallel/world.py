"""The process group of a distributed run, seen from one rank: who it is, its share of a global
batch, and the few collectives the trainer needs (averaged metrics, summed expert loads, one
stop decision, rank 0 first). A process started without torchrun's environment is a world of
one, where every call is a no-op, so the trainer has one code path.

Launched by torchrun or `glmlab train --nproc-per-node N` (glmlab/parallel/launch.py), which set
RANK, LOCAL_RANK, WORLD_SIZE, MASTER_ADDR and MASTER_PORT; NCCL drives GPUs, gloo the CPU.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

import torch
import torch.distributed as dist

from glmlab.errors import GlmlabError

T = TypeVar("T")


@dataclass
class World:
    rank: int = 0
    size: int = 1
    local_rank: int = 0
    mesh: Any = field(default=None, repr=False)  # a 1-D DeviceMesh over every rank (size > 1)

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.size > 1

    # ---- data ---------------------------------------------------------------------------------

    def rows(self, batch: torch.Tensor) -> torch.Tensor:
        """This rank's contiguous share of a global batch [B, ...] (B divisible by the size)."""
        if not self.distributed:
            return batch
        share = batch.shape[0] // self.size
        return batch[self.rank * share : (self.rank + 1) * share]

    # ---- collectives --------------------------------------------------------------------------

    def _device(self) -> torch.device:
        if dist.get_backend() == "nccl":
            return torch.device("cuda", torch.cuda.current_device())
        return torch.device("cpu")

    def sum(self, x: torch.Tensor | None) -> torch.Tensor | None:
        """Elementwise sum over ranks (expert loads: the bias update sees the global batch)."""
        if x is None or not self.distributed:
            return x
        out = x.detach().to(self._device()).clone()
        dist.all_reduce(out)
        return out.to(x.device)

    def average(self, record: dict) -> dict:
        """Every float of a metrics record averaged over ranks (losses of equal-sized shares
        average to the loss of the global batch; values equal on every rank stay as they are)."""
        if not self.distributed:
            return record
        keys = sorted(k for k, v in record.items() if isinstance(v, float))
        values = torch.tensor([record[k] for k in keys], dtype=torch.float64, device=self._device())
        dist.all_reduce(values)
        return record | dict(zip(keys, (values / self.size).tolist(), strict=True))

    def stop_requested(self, stop: Any) -> bool:
        """Whether a StopSignal (`.signum`) asks to stop, agreed by every rank: when one rank has
        received a signal, the others take it too, so all stop, and save, at the same step."""
        if self.distributed:
            value = torch.tensor([stop.signum or 0], device=self._device())
            dist.all_reduce(value, op=dist.ReduceOp.MAX)
            if value.item() and stop.signum is None:
                stop.signum = int(value.item())
        return stop.signum is not None

    def broadcast(self, obj: T) -> T:
        """Rank 0's `obj` on every rank."""
        if not self.distributed:
            return obj
        box = [obj]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def barrier(self) -> None:
        if self.distributed:
            dist.barrier()

    def _main_result(self, fn: Callable[..., T], *args: Any) -> T | None:
        """Rank 0 runs `fn`; its GlmlabError reaches every rank as the same error."""
        error, result = None, None
        if self.is_main:
            try:
                result = fn(*args)
            except GlmlabError as err:
                error = str(err)
        error = self.broadcast(error)
        if error is not None:
            raise GlmlabError(error)
        return result

    def from_main(self, fn: Callable[..., T], *args: Any) -> T:
        """Rank 0's result of `fn` on every rank (deciding a run folder once, not per rank)."""
        if not self.distributed:
            return fn(*args)
        return self.broadcast(self._main_result(fn, *args))

    def main_first(self, fn: Callable[..., T], *args: Any) -> T:
        """Rank 0 runs `fn` (which may write shared files: a tokenizer, a data cache), then the
        others do, reading what it wrote."""
        if not self.distributed:
            return fn(*args)
        result = self._main_result(fn, *args)
        return result if self.is_main else fn(*args)


_WORLD: World | None = None


def current_world(device_type: str = "cpu") -> World:
    """The world of this process, joining the process group on first use when launched with
    WORLD_SIZE > 1 (NCCL for `cuda`, gloo for `cpu`)."""
    global _WORLD
    if _WORLD is not None:
        return _WORLD
    size = int(os.environ.get("WORLD_SIZE", "1"))
    if size <= 1:
        _WORLD = World()
        return _WORLD
    from torch.distributed.device_mesh import init_device_mesh

    rank, local = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    if device_type == "cuda":
        if local >= torch.cuda.device_count():
            raise GlmlabError(f"rank {rank} has local rank {local} but this machine shows "
                              f"{torch.cuda.device_count()} GPU(s): lower --nproc-per-node")  # fmt: skip
        torch.cuda.set_device(local)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device_type == "cuda" else "gloo")
    mesh = init_device_mesh(device_type, (size,), mesh_dim_names=("world",))
    _WORLD = World(rank, size, local, mesh)
    return _WORLD


def check_world(
    size: int,
    batch_size: int,
    n_experts: int,
    expert_parallel: int,
    *,
    local_gpus: int | None = None,
    optimizer: str = "adamw",
    cuda: bool = False,
) -> None:
    """A world size that cannot split this run is a config error, raised before anything starts.
    A single process runs a run of any expert_parallel (resuming it on one rank). `local_gpus`:
    the GPUs of this machine, when all ranks start here (one GPU each). Muon's batched
    orthogonalisation of FSDP-sharded matrices fails on GPUs (two H200s, docs/scaling.md), though
    it runs on the CPU: refused there before launch."""
    if size > 1 and cuda and optimizer == "muon":
        raise GlmlabError(
            "train.optimizer=muon does not run on several GPUs yet (its orthogonalisation of sharded "
            "matrices fails): use --set train.optimizer=adamw, or one GPU"
        )
    if local_gpus is not None and local_gpus < size:
        raise GlmlabError(f"--nproc-per-node {size} asks for one GPU per rank but this machine shows "
                          f"{local_gpus}: lower it, or use --device cpu")  # fmt: skip
    if batch_size % size:
        raise GlmlabError(f"train.batch_size {batch_size} (the global batch) does not split over {size} "
                          f"processes: make it a multiple of {size} or change --nproc-per-node")  # fmt: skip
    if size > 1 and expert_parallel not in (1, size):  # one process holds every expert anyway
        raise GlmlabError(f"train.expert_parallel {expert_parallel} must be 1 or the number of processes "
                          f"({size}): experts are split over every rank")  # fmt: skip
    if n_experts % expert_parallel:
        raise GlmlabError(f"train.expert_parallel {expert_parallel} does not divide the {n_experts} "
                          "routed experts: choose a divisor of n_routed_experts")  # fmt: skip


def shutdown() -> None:
    """Leave the process group (end of a distributed run)."""
    global _WORLD
    if dist.is_initialized():
        dist.destroy_process_group()
    _WORLD = None
