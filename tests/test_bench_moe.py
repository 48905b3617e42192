"""Smoke test of benchmarks/bench_moe_dispatch.py: glm5-tiny's layer on the CPU (gloo, looped experts)."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parent.parent / "benchmarks" / "bench_moe_dispatch.py"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_tiny_run_times_every_form_and_prints_the_ratios():
    env = os.environ | {"MASTER_PORT": str(free_port()), "OMP_NUM_THREADS": "1"}
    args = [sys.executable, str(SCRIPT), "--preset", "glm5-tiny", "--tokens", "32", "--repeats", "2"]
    done = subprocess.run(args, capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    out = done.stdout
    # one rank of two receives every token of both ranks, its experts half of them
    assert "32 tokens a rank" in out and "EP=2 rank: 64 rows" in out
    forms = ["one GPU, all experts", "EP=2, one rank's experts", "EP=2, same, padded",
             "one GPU, routed + shared", "EP=1, whole dispatch + shared", "EP=1, same, padded"]  # fmt: skip
    for form in forms:
        # on CUDA each row also gives its peak memory
        assert re.search(rf"^{re.escape(form)}\s+\d+\.\d+ ms( +\d+\.\d MiB peak)?$", out, re.M), form
    assert re.search(r"EP=2 rank / one GPU: \d+\.\d\d \(padded \d+\.\d\d\)", out)
    assert re.search(r"EP=1 whole dispatch / one GPU: \d+\.\d\d \(padded \d+\.\d\d\)", out)
