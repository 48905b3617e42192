"""`glmlab train ... --nproc-per-node N`: start N ranks of the same command on this machine, as
torchrun would (the same environment variables), and end the run cleanly when one dies.

Each rank is `python -m glmlab train ...` with RANK, LOCAL_RANK, WORLD_SIZE, MASTER_ADDR and
MASTER_PORT set. Rank 0 prints the progress; every rank's stderr goes to a file. When a rank
fails, the launcher stops the others (SIGTERM, then SIGKILL after a grace period) and prints one
line: the rank and the cause its process recorded (`recorded_failure`), or the signal that
killed it. The run folder keeps its last complete checkpoint (saving is atomic). Ctrl-C reaches
every rank from the terminal; they agree to stop at the same step, save, and exit 130.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from glmlab.checkpoint import CHECKPOINTS, latest_checkpoint
from glmlab.errors import GlmlabError

ERROR_FILE = "GLMLAB_RANK_ERROR_FILE"
STOPPED = (128 + signal.SIGINT, 128 + signal.SIGTERM)  # a rank that saved and stopped on a signal
GRACE_S = 10.0


@contextmanager
def recorded_failure() -> Iterator[None]:
    """In a launched rank: write the first line of an error that ends it to the file the
    launcher named, so the launcher can say why the rank died."""
    path = os.environ.get(ERROR_FILE)
    try:
        yield
    except Exception as err:
        if path:
            text = str(err).strip().splitlines()
            cause = (
                text[0]
                if isinstance(err, GlmlabError) and text
                else f"{type(err).__name__}: {' '.join(text)}"
            )
            Path(path).write_text(cause[:500] + "\n")
        raise


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _cause(rank: int, code: int, folder: Path) -> str:
    recorded = folder / f"rank-{rank}.error"
    if recorded.is_file() and recorded.read_text().strip():
        return recorded.read_text().strip()
    if code < 0:
        return f"killed by {signal.Signals(-code).name}"
    lines = [line for line in (folder / f"rank-{rank}.stderr").read_text().splitlines() if line.strip()]
    return f"exit status {code}" + (f" ({lines[-1].strip()[:300]})" if lines else "")


def _stop(procs: list[subprocess.Popen]) -> None:
    for p in procs:
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + GRACE_S
    for p in procs:
        try:
            p.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


def worker_args(argv: list[str], run_dir: Path, resume: bool) -> list[str]:
    """The command line each rank runs: this one without --nproc-per-node, its run folder fixed
    (a new run's default folder name has the time in it, which ranks must not each choose)."""
    out, skip = [], False
    for arg in argv:
        if skip:
            skip = False
        elif arg == "--nproc-per-node":
            skip = True
        elif not arg.startswith("--nproc-per-node="):
            out.append(arg)
    if not resume and not any(a == "--out" or a.startswith("--out=") for a in out):
        out += ["--out", str(run_dir)]
    return out


def launch(args: list[str], nproc: int, run_dir: Path) -> int:
    """Run `glmlab <args>` as `nproc` ranks; returns the exit status for the whole run."""
    port = _free_port()
    threads = max(1, (os.cpu_count() or 1) // nproc)
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)  # the ranks get Ctrl-C themselves
    with tempfile.TemporaryDirectory(prefix="glmlab-ranks-") as tmp:
        folder = Path(tmp)
        procs = []
        for rank in range(nproc):
            env = os.environ | {
                "RANK": str(rank), "LOCAL_RANK": str(rank), "WORLD_SIZE": str(nproc),
                "LOCAL_WORLD_SIZE": str(nproc), "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port),
                ERROR_FILE: str(folder / f"rank-{rank}.error"),
            }  # fmt: skip
            env.setdefault("OMP_NUM_THREADS", str(threads))
            with open(folder / f"rank-{rank}.stderr", "w") as err:
                out = None if rank == 0 else subprocess.DEVNULL
                procs.append(subprocess.Popen([sys.executable, "-m", "glmlab", *args], env=env, stdout=out,
                                              stderr=err, restore_signals=True))  # fmt: skip
        try:
            return _watch(procs, folder, run_dir)
        finally:
            _stop(procs)
            signal.signal(signal.SIGINT, previous)


def _watch(procs: list[subprocess.Popen], folder: Path, run_dir: Path) -> int:
    """Wait for every rank; on the first failure stop the others and print one line. Returns 2
    when the rank failed on bad input (a GlmlabError: exit status 2), else 1."""
    while True:
        codes = [p.poll() for p in procs]
        failed = [(r, c) for r, c in enumerate(codes) if c not in (None, 0, *STOPPED)]
        if failed:
            rank, code = failed[0]
            cause = _cause(rank, code, folder)
            _stop(procs)
            kept = latest_checkpoint(run_dir) if (run_dir / CHECKPOINTS).is_dir() else None
            where = f"last complete checkpoint {kept}" if kept else "no checkpoint was written"
            line = f"rank {rank} of {len(procs)} failed: {cause}; the other ranks were stopped; {where}"
            print(f"error: {line}", file=sys.stderr)
            return 2 if code == 2 else 1
        if all(c is not None for c in codes):
            return max(codes)
        time.sleep(0.2)
