"""Shared fixtures: small random models built from the glm5-tiny preset."""

from __future__ import annotations

import os
import sys

import pytest
import torch

# Triton kernels run on the CPU through Triton's interpreter; it must be chosen before triton is imported.
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")
    import torch._inductor.config  # imports triton: after the interpreter is chosen

    # Inductor's CPU kernels as plain loops, not vectorized: the compiled tests, which on CI start
    # from an empty cache and wait mostly on the C++ compiler, take half the time (167 s against
    # 342 s for the three of them on a 2-core machine); what they check is the model's graphs
    torch._inductor.config.cpp.vec_isa_ok = False

from glmlab import cli
from glmlab.build import build_model
from glmlab.config import load_config
from glmlab.model import CausalLM

SMALL = ["vocab_size=128", "hidden_size=64", "num_hidden_layers=3", "index_topk=8", "initializer_range=0.1"]


@pytest.fixture(autouse=True)
def interpreter_fixes(monkeypatch):
    """Two bugs of Triton 3.6's interpreter, patched for every test: a runtime loop bound is a
    1-element array, which numpy >= 2.4 refuses to turn into an int; and tl.dot multiplies
    bf16 operands as their raw uint16 bits. On a GPU nothing is patched."""
    if os.environ.get("TRITON_INTERPRET") != "1":
        return
    import triton.language as tl
    from triton.runtime import interpreter

    patch_tensor, dot = interpreter._patch_lang_tensor, interpreter.InterpreterBuilder.create_dot

    def patch_lang_tensor(tensor, scope):
        patch_tensor(tensor, scope)
        scope.set_attr(tensor, "__index__", lambda self: int(self.handle.data.item()))

    def create_dot(self, a, b, d, *args):
        widen = lambda x: self.cast_impl(x, tl.float32) if x.dtype.scalar == tl.bfloat16 else x
        return dot(self, widen(a), widen(b), d, *args)

    monkeypatch.setattr(interpreter, "_patch_lang_tensor", patch_lang_tensor)
    monkeypatch.setattr(interpreter.InterpreterBuilder, "create_dot", create_dot)


@pytest.fixture
def one_thread():
    """Tiny models run faster on one thread than on threads fighting over shared cores."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def tiny(one_thread):
    """Factory: `tiny("field=value", ...)` -> a seeded random glm5-tiny variant (eval mode) small
    enough for tests; index_topk 8 so that sequences of a few dozen tokens really select."""

    def make(*overrides: str, seed: int = 0) -> CausalLM:
        torch.manual_seed(seed)
        return build_model(load_config("glm5-tiny", [*SMALL, *overrides])).eval()

    return make


@pytest.fixture
def run_cli(capsys, monkeypatch):
    """`run_cli(*args)` runs `glmlab ARGS` in-process through the real entry point (so user
    errors exit 2 with one line) and returns (status, stdout, stderr)."""

    def run(*args: str) -> tuple[int, str, str]:
        monkeypatch.setattr(sys, "argv", ["glmlab", *args])
        try:
            cli.main()
            code = 0
        except SystemExit as exit_:
            code = exit_.code if isinstance(exit_.code, int) else 1
        out = capsys.readouterr()
        return code, out.out, out.err

    return run
