"""Optimisers: AdamW, or Muon (Newton-Schulz orthogonalised momentum) on the hidden matrices
with AdamW on embeddings, head, norms, biases and routers (GLM-5 report; docs/architecture.md)."""

from __future__ import annotations

from collections import defaultdict

import torch
from torch import nn

from glmlab.config import TrainConfig

# Quintic Newton-Schulz coefficients that push singular values towards 1 in few steps
# (Keller Jordan's Muon).
NS_COEFFS = (3.4445, -4.7750, 2.0315)


def newton_schulz(g: torch.Tensor, steps: int = 5, *, dtype: torch.dtype | None = None) -> torch.Tensor:
    """Approximately orthogonalise each matrix in the last two dims of `g` (batched over the rest).

    The iterations run in `dtype`: by default bf16 on a GPU, as Keller Jordan's Muon does (in fp32
    they would leave the tensor cores idle: glm5-1b's 2,236 matrices take 62 TFLOP of products per
    optimiser step), fp32 elsewhere."""
    a, b, c = NS_COEFFS
    x = g.to(dtype or (torch.bfloat16 if g.is_cuda else torch.float32))
    wide = x.shape[-2] <= x.shape[-1]
    if not wide:
        x = x.mT
    x = x / (x.norm(dim=(-2, -1), keepdim=True) + 1e-7)
    for _ in range(steps):
        gram = x @ x.mT
        x = a * x + (b * gram + c * gram @ gram) @ x
    return (x if wide else x.mT).to(g.dtype)


class Muon(torch.optim.Optimizer):
    """Momentum (Nesterov), orthogonalised per matrix, scaled by 0.2 * sqrt(max(rows, cols)) so
    its update RMS matches AdamW's and one learning rate serves both (Moonlight's rule).
    Stacked experts [E, rows, cols] are E matrices."""

    def __init__(
        self, params, lr: float, momentum: float = 0.95, weight_decay: float = 0.0, ns_steps: int = 5
    ) -> None:
        super().__init__(params, dict(lr=lr, momentum=momentum, weight_decay=weight_decay, ns_steps=ns_steps))

    @torch.no_grad()
    def step(self, closure=None):
        """Matrices of one shape are updated together, a batch at a time: a few dozen kernels per
        batch instead of per matrix."""
        for group in self.param_groups:
            for batch in _same_shape_batches([p for p in group["params"] if p.grad is not None]):
                grads = [p.grad for p in batch]
                for p in batch:
                    if "momentum_buffer" not in self.state[p]:
                        self.state[p]["momentum_buffer"] = torch.zeros_like(p)
                bufs = [self.state[p]["momentum_buffer"] for p in batch]
                torch._foreach_mul_(bufs, group["momentum"])
                torch._foreach_add_(bufs, grads)
                nesterov = torch._foreach_add(grads, bufs, alpha=group["momentum"])
                update = newton_schulz(torch.stack(nesterov), group["ns_steps"])
                scale = 0.2 * max(batch[0].shape[-2], batch[0].shape[-1]) ** 0.5
                torch._foreach_mul_(batch, 1 - group["lr"] * group["weight_decay"])
                torch._foreach_add_(batch, update.unbind(0), alpha=-group["lr"] * scale)


def _same_shape_batches(params: list[torch.Tensor], max_elements: int = 1 << 26) -> list[list[torch.Tensor]]:
    """Parameters grouped by shape and dtype, each group cut into batches of at most
    `max_elements` (or one parameter), so that the stacked Newton-Schulz iterates stay small."""
    by_shape: dict[tuple, list[torch.Tensor]] = defaultdict(list)
    for p in params:
        by_shape[(p.shape, p.dtype)].append(p)
    batches = []
    for same in by_shape.values():
        per_batch = max(1, max_elements // same[0].numel())
        batches += [same[i : i + per_batch] for i in range(0, len(same), per_batch)]
    return batches


class Combined:
    """Several optimisers stepped together, with one list of param groups and one state dict."""

    def __init__(self, **optimizers: torch.optim.Optimizer) -> None:
        self.optimizers = optimizers

    @property
    def param_groups(self) -> list[dict]:
        # Read through each time: load_state_dict replaces an optimiser's group dicts.
        return [g for opt in self.optimizers.values() for g in opt.param_groups]

    def step(self) -> None:
        for opt in self.optimizers.values():
            opt.step()

    def zero_grad(self, set_to_none: bool = True) -> None:
        for opt in self.optimizers.values():
            opt.zero_grad(set_to_none=set_to_none)

    def state_dict(self) -> dict:
        return {name: opt.state_dict() for name, opt in self.optimizers.items()}

    def load_state_dict(self, state: dict) -> None:
        for name, opt in self.optimizers.items():
            opt.load_state_dict(state[name])


def _is_muon_matrix(name: str, p: nn.Parameter) -> bool:
    """Hidden weight matrices: not the embedding, the LM head or a router."""
    return p.ndim >= 2 and not name.startswith(("model.embed_tokens", "lm_head")) and ".mlp.gate." not in name


def build_optimizer(model: nn.Module, t: TrainConfig) -> Combined:
    """AdamW (decay on matrices only), or Muon on hidden matrices plus AdamW on the rest; AdamW is
    fused on CUDA."""
    named = list(model.named_parameters())
    muon = [p for n, p in named if t.optimizer == "muon" and _is_muon_matrix(n, p)]
    taken = {id(p) for p in muon}
    decay = [p for n, p in named if id(p) not in taken and p.ndim >= 2]
    no_decay = [p for n, p in named if id(p) not in taken and p.ndim < 2]
    # One fused kernel per parameter group on a GPU; multi-tensor (foreach) steps elsewhere.
    cuda = all(p.is_cuda for _, p in named)
    adamw = torch.optim.AdamW(
        [{"params": decay, "weight_decay": t.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=t.lr,
        betas=(t.beta1, t.beta2),
        fused=cuda,
        foreach=not cuda,
    )
    if not muon:
        return Combined(adamw=adamw)
    return Combined(muon=Muon(muon, lr=t.lr, weight_decay=t.weight_decay), adamw=adamw)
