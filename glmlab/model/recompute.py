"""Activation recomputation per decoder layer (`train.recompute: full`), as torchtitan applies it.

A wrapped layer keeps only its inputs for backward; its forward runs again inside backward to
rebuild what the gradients need (torch.utils.checkpoint, non-reentrant). Memory for activations
drops from every layer's intermediates to the layers' inputs plus one layer's intermediates, for
the price of a second forward per layer (about a third more compute; MFU keeps counting the
model's FLOPs, not the recomputed ones). Without gradients (evaluation, decoding) the layer runs
as usual. Applied from outside the model, like compilation and sharding: parameter names,
checkpoints and the layer's code are unchanged. The recomputed forward makes the same choices as
the first (the router, the indexer's top-k: both deterministic for equal inputs), and its
auxiliary outputs (expert counts, losses) are discarded, so nothing is counted twice.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch.utils.checkpoint import checkpoint

from glmlab.model.model import CausalLM


def _recomputed(forward: Callable[..., Any]) -> Callable[..., Any]:
    def run(*args: Any, **kwargs: Any) -> Any:
        if not torch.is_grad_enabled():
            return forward(*args, **kwargs)
        return checkpoint(forward, *args, use_reentrant=False, **kwargs)

    return run


def apply_recompute(model: CausalLM, mode: str) -> CausalLM:
    """Wrap every main and MTP decoder layer of `model` for `mode` ("none" or "full"); returns it."""
    if mode == "full":
        for layer in [*model.model.layers, *(m.layer for m in model.mtp)]:
            layer.forward = _recomputed(layer.forward)
    return model
