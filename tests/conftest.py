"""Shared fixtures: small random models built from the glm5-tiny preset."""

from __future__ import annotations

import pytest
import torch

from glmlab.build import build_model
from glmlab.config import load_config
from glmlab.model import CausalLM

SMALL = ["vocab_size=128", "hidden_size=64", "num_hidden_layers=3", "index_topk=8", "initializer_range=0.1"]


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
