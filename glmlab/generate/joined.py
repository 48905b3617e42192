"""A decoding layer's input products as one product.

MLA's first query product (q_a_proj, or q_proj without a query latent) and kv_a_proj_with_mqa, and
the indexer's wk and weights_proj, all read the same normed input. At one token a row each is a thin
product bound by reading its weight, and cuBLAS runs each with a split-K tail: on an H200 at GLM-5's
shapes the four took 26.7 us one after another, one product of their weights joined 9.9 us
(experiments/results/h200-session17/, call 1). Decoding (step.py) runs them joined.

The joined weight is a copy (GLM-5: 17.1M parameters a layer, 34 MB in bf16;
`glmlab.accounting.params.joined_input_params`), so that the model keeps its own parameters, names and
sharding. `refresh` copies them again when any changed since: in place (a captured CUDA graph keeps
reading the same memory) after an optimiser step or a load, which bump a tensor's version counter or
replace its storage; into new memory after the model moved to another dtype or device.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from glmlab.model import CausalLM
from glmlab.model.mla import MultiHeadLatentAttention


class JoinedLinear:
    """Linear layers that read one input, as one product whose output splits back (a layer without
    a bias adds zeros where the others have one). For decoding: no gradient reaches the layers."""

    def __init__(self, linears: list[nn.Linear]) -> None:
        self.linears = linears
        self.sizes = [linear.out_features for linear in linears]
        self.biased = any(linear.bias is not None for linear in linears)
        self.weight = self.bias = None
        self.seen: list[tuple] = []
        self.refresh()

    def _biases(self) -> list[torch.Tensor]:
        return [
            layer.weight.new_zeros(layer.out_features) if layer.bias is None else layer.bias
            for layer in self.linears
        ]

    def _state(self) -> list[tuple]:
        """What tells that a parameter changed: its storage, dtype and device (a replaced or moved
        tensor), and its version counter (changed in place; inference tensors keep none)."""
        return [
            (p.data_ptr(), p.dtype, p.device, p.shape, None if p.is_inference() else p._version)
            for linear in self.linears
            for p in linear.parameters()
        ]

    def refresh(self) -> None:
        """Copy the layers' parameters again where any changed since the last copy: into the same
        memory (what a captured CUDA graph reads) while the dtype and device stay, new memory
        otherwise."""
        state = self._state()
        if state == self.seen:
            return
        first = self.linears[0].weight
        # normal tensors even when made under inference mode (generation), so that a refresh
        # outside it may still write into them
        with torch.inference_mode(False), torch.no_grad():
            if self.weight is None or (self.weight.dtype, self.weight.device) != (first.dtype, first.device):
                rows = sum(self.sizes)
                self.weight = first.new_empty(rows, first.shape[1])
                self.bias = first.new_empty(rows) if self.biased else None
            torch.cat([linear.weight for linear in self.linears], out=self.weight)
            if self.biased:
                torch.cat(self._biases(), out=self.bias)
        self.seen = state

    def __call__(self, x: torch.Tensor) -> list[torch.Tensor]:
        if torch.is_grad_enabled() and any(linear.weight.requires_grad for linear in self.linears):
            raise RuntimeError("JoinedLinear reads copies of the weights: run it without gradients")
        return list(F.linear(x, self.weight, self.bias).split(self.sizes, dim=-1))


def attention_inputs(attn: nn.Module) -> JoinedLinear | None:
    """The joined input products of an MLA attention module (with its indexer's); None for others."""
    if not isinstance(attn, MultiHeadLatentAttention):
        return None
    linears = attn.input_projections()
    if attn.indexer is not None:
        linears += [attn.indexer.wk, attn.indexer.weights_proj]
    return JoinedLinear(linears)


class JoinedInputs:
    """One `JoinedLinear` per decoder layer of a model, and per MTP module's layer (None where the
    attention is not MLA)."""

    def __init__(self, model: CausalLM) -> None:
        self.layers = [attention_inputs(layer.self_attn) for layer in model.model.layers]
        by_module = {id(m): attention_inputs(m.layer.self_attn) for m in model.mtp}
        depths = range(1, model.config.num_nextn_predict_layers + 1)
        self.mtp = [by_module[id(model.mtp_module(d))] for d in depths]  # by depth, shared ones once

    def refresh(self) -> None:
        """`JoinedLinear.refresh` for every layer."""
        for joined in [*self.layers, *self.mtp]:
            if joined is not None:
                joined.refresh()
