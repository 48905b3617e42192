"""Turning logits into tokens: greedy, temperature, top-k, top-p, seeded draws."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from glmlab.errors import GlmlabError


@dataclass
class SamplingParams:
    """temperature 0 is greedy; top_k 0 and top_p 1.0 switch those filters off; a seed
    makes the draws repeatable."""

    temperature: float = 0.0
    top_k: int = 0
    top_p: float = 1.0
    seed: int | None = None

    def __post_init__(self) -> None:
        if self.temperature < 0:
            raise GlmlabError(f"--temperature must be >= 0, got {self.temperature} (0 is greedy)")
        if self.top_k < 0:
            raise GlmlabError(f"--top-k must be >= 0, got {self.top_k} (0 keeps every token)")
        if not 0.0 < self.top_p <= 1.0:
            raise GlmlabError(f"--top-p must be in (0, 1], got {self.top_p} (1 keeps every token)")

    @property
    def greedy(self) -> bool:
        return self.temperature == 0.0

    def generator(self, device: torch.device) -> torch.Generator | None:
        """A seeded generator on `device`, or None (torch's global RNG) without a seed."""
        if self.seed is None:
            return None
        return torch.Generator(device=device).manual_seed(self.seed)


def probabilities(logits: torch.Tensor, params: SamplingParams) -> torch.Tensor:
    """logits [..., V] -> the distribution a sampler draws from (fp32): softmax(logits / T)
    restricted to the top-k tokens, then to the smallest set whose mass reaches top-p."""
    scaled = logits.float() / params.temperature
    if params.top_k and params.top_k < scaled.shape[-1]:
        kth = scaled.topk(params.top_k, dim=-1).values[..., -1:]
        scaled = scaled.masked_fill(scaled < kth, float("-inf"))
    probs = scaled.softmax(-1)
    if params.top_p < 1.0:
        sorted_p, order = probs.sort(dim=-1, descending=True)
        mass_before = sorted_p.cumsum(-1) - sorted_p
        drop_sorted = mass_before >= params.top_p  # the first token always stays
        drop = torch.zeros_like(drop_sorted).scatter_(-1, order, drop_sorted)
        probs = probs.masked_fill(drop, 0.0)
        probs = probs / probs.sum(-1, keepdim=True)
    return probs


def draw(probs: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    """One token per row of probs [N, V] -> [N]."""
    return torch.multinomial(probs, 1, generator=generator).squeeze(-1)


def choose(
    logits: torch.Tensor, params: SamplingParams, generator: torch.Generator | None
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Tokens [N] for logits [N, V], and the distribution they were drawn from (None when greedy)."""
    if params.greedy:
        return logits.argmax(-1), None
    probs = probabilities(logits, params)
    return draw(probs, generator), probs
