"""Python's cycle collector on a schedule while training, instead of whenever it triggers itself.

Python collects its oldest generation once enough objects have survived the younger ones. With
compiled layers the heap holds millions of long-lived objects (Dynamo's and Inductor's graphs and
caches), and on the H200 machine one such collection took about 1 s in the middle of a 1.3 s step
(experiments/results/h200-session21, call 5); with several ranks every rank waits for the slowest.
While training, the automatic collector is off and the young generations are collected every
`interval` steps: the scan skips the old objects, so it costs milliseconds once the compiled graphs
have been promoted by the first one. The old generation is left to Python's own collector after
the run (torchtitan schedules its collections the same way): a full collection costs as much as
the ones this avoids, and in the test suite, where runs are short and the heap large, full
collections at each run's start and checkpoints nearly doubled its time.
"""

import gc
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass


@dataclass(frozen=True)
class GCSchedule:
    interval: int  # steps between young-generation collections; 0 leaves Python's collector alone

    def after_step(self, step: int) -> None:
        if self.interval and step % self.interval == 0:
            gc.collect(1)


@contextmanager
def scheduled_gc(interval: int) -> Iterator[GCSchedule]:
    """Turn the automatic collector off for the block (unless `interval` is 0) and back on after it."""
    was_enabled = gc.isenabled()
    if interval:
        gc.disable()
    try:
        yield GCSchedule(interval)
    finally:
        if interval and was_enabled:
            gc.enable()
