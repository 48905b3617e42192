"""A decoding layer's input products as one product.

MLA's first query product (q_a_proj, or q_proj without a query latent) and kv_a_proj_with_mqa, and
the indexer's wk and weights_proj, all read the same normed input. At one token a row each is a thin
product bound by reading its weight, and cuBLAS runs each with a split-K tail: on an H200 at GLM-5's
shapes the four took 26.7 us one after another, one product of their weights joined 9.9 us
(experiments/results/h200-session17/, call 1). Decoding (step.py) runs them joined.

The joined weight is a copy (GLM-5: 17.1M parameters a layer, 34 MB in bf16;
`glmlab.accounting.params.joined_input_params`), so that the model keeps its own parameters, names and
sharding. `refresh` copies them again, in place (a captured CUDA graph
keeps reading the same memory), when any changed since: an optimiser step or a load bumps a
tensor's version counter.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from glmlab.model import CausalLM
from glmlab.model.mla import MultiHeadLatentAttention


class JoinedLinear:
    """Linear layers that read one input, as one product whose output splits back (a layer without
    a bias adds zeros where the others have one)."""

    def __init__(self, linears: list[nn.Linear]) -> None:
        self.linears = linears
        self.sizes = [linear.out_features for linear in linears]
        self.biased = any(linear.bias is not None for linear in linears)
        # a normal tensor even when made under inference mode (generation), so that a refresh outside
        # it may still write into it
        with torch.inference_mode(False), torch.no_grad():
            self.weight = torch.cat([linear.weight for linear in linears])
            self.bias = torch.cat(self._biases()) if self.biased else None
        self.versions = self._versions()

    def _biases(self) -> list[torch.Tensor]:
        return [
            layer.weight.new_zeros(layer.out_features) if layer.bias is None else layer.bias
            for layer in self.linears
        ]

    def _versions(self) -> list[int]:
        return [p._version for linear in self.linears for p in linear.parameters()]

    def refresh(self) -> None:
        """Copy the layers' weights again where any changed in place since the last copy."""
        if self._versions() != self.versions:
            with torch.no_grad():
                torch.cat([linear.weight for linear in self.linears], out=self.weight)
                if self.biased:
                    torch.cat(self._biases(), out=self.bias)
            self.versions = self._versions()

    def __call__(self, x: torch.Tensor) -> list[torch.Tensor]:
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
