"""Compiling the model per decoder layer with torch.compile, as torchtitan compiles per block.

Each main and MTP decoder layer becomes one compiled region, so its element-wise work (norms,
rotary, softmax, SwiGLU, the residual adds) is fused into a few kernels forward and backward.
On a GPU the routed experts compile with their layer (`Experts.grouped`: every size is fixed
by the shapes); the CPU's loop over experts (`Experts.looped`) stays eager, marked
`torch.compiler.disable`, since it splits tokens by counts known only at run time.
Parameter names and checkpoints are unchanged (`nn.Module.compile` compiles in place). The
first step pays the compilation, far more with an empty inductor cache than with a warm one
(measured times: experiments/README.md, "Timings moved from docstrings"); a new input shape or a
DSA stage change compiles again.
"""

from __future__ import annotations

import torch

from glmlab.model.model import CausalLM

# Every layer runs one code object (DecoderLayer.forward), so each distinct call of it (dense or
# MoE layer, DSA warm-up or sparse stage, with or without labels, the MTP layer's bf16 input and
# its shorter sequence) is a graph of its own under one per-code-object limit. A GLM-5 run needs
# more than dynamo's default 8: past it the rest ran eagerly (`glmlab train glm5-1b` compiled:
# 11.4K tokens/s in the sparse stage, experiments/results/h200-session5/).
RECOMPILE_LIMIT = 64


def compile_layers(model: CausalLM) -> CausalLM:
    """Compile every decoder layer of `model` in place; returns the model."""
    torch._dynamo.config.recompile_limit = max(torch._dynamo.config.recompile_limit, RECOMPILE_LIMIT)
    for layer in [*model.model.layers, *(m.layer for m in model.mtp)]:
        # static shapes: the MTP layer's S - 1 positions would otherwise make the sequence length
        # symbolic, and Inductor cannot tile FlexAttention's block mask over a symbolic length
        # (CantSplit on glm5-1b's first sparse-stage step, experiments/results/h200-session5/)
        layer.compile(dynamic=False)
    return model
