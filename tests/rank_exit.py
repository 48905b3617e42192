"""How the torchrun test workers (tests/*_worker.py) end: the ranks meet through the rendezvous store
instead of a collective, then exit at once. gloo's teardown at interpreter exit aborted a rank now and
then (exit -6, "terminate called without an active exception") after the worker had printed its
result: fsdp_warmup_worker.py once in CI, expert_parallel_worker.py once in session 14's full run."""

from __future__ import annotations

import os
import sys
import time

import torch.distributed as dist


def exit_together() -> None:
    """Wait for every rank, flush stdout, and leave without running gloo's teardown."""
    store = dist.distributed_c10d._get_default_store()
    store.add("finished", 1)
    while store.add("finished", 0) < dist.get_world_size():
        time.sleep(0.01)
    sys.stdout.flush()
    os._exit(0)
