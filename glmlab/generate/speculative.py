"""MTP speculative decoding: drafts from the MTP chain, one verification pass, exact acceptance
(spec 3, "Speculative decoding with MTP").

Positions: MTP depth k at position i combines h^{k-1}_i with Emb(t_{i+k}) and predicts
t_{i+k+1}; h^0 is the main model's final hidden state. Its cache entry at i therefore depends
on the tokens up to t_{i+k}, and is kept after a verification only if those are all accepted.
With n tokens in the main cache and t_n the last emitted token, every depth drafts at
position n-1: depth 1 reads (h^0_{n-1}, t_n) and proposes t_{n+1}, depth k reads
(h^{k-1}_{n-1}, draft t_{n+k-1}) and proposes t_{n+k}. Positions a depth has not seen yet
(the prompt after prefill, the accepted tokens after a verification) are run first, in the
same call.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from glmlab.generate.sampling import SamplingParams, choose, probabilities
from glmlab.model import CausalLM
from glmlab.model.mla import LatentCache
from glmlab.model.model import ModelCache


@dataclass
class SpeculativeStats:
    """Acceptance per draft position (accepted / verified at that position), tokens per step."""

    depth: int
    steps: int = 0
    tokens: int = 0
    verified: list[int] = field(default_factory=list)
    accepted: list[int] = field(default_factory=list)
    note: str | None = None

    def __post_init__(self) -> None:
        self.verified = self.verified or [0] * self.depth
        self.accepted = self.accepted or [0] * self.depth

    def record(self, drafted: int, accepted: int) -> None:
        self.steps += 1
        self.tokens += accepted + 1
        for j in range(min(accepted + 1, drafted)):
            self.verified[j] += 1
            self.accepted[j] += j < accepted

    @property
    def acceptance(self) -> list[float]:
        return [a / v if v else 0.0 for a, v in zip(self.accepted, self.verified, strict=True)]

    @property
    def tokens_per_step(self) -> float:
        return self.tokens / self.steps if self.steps else 0.0

    def to_dict(self) -> dict:
        return {
            "speculative_depth": self.depth,
            "acceptance_per_position": [round(a, 4) for a in self.acceptance],
            "accepted_per_position": self.accepted,
            "verified_per_position": self.verified,
            "mean_tokens_per_step": round(self.tokens_per_step, 4),
            "steps": self.steps,
            "note": self.note,
        }


class MTPDrafter:
    """The MTP chain's state while decoding: one latent cache per draft depth and the hidden
    states h^0..h^{K-1} that feed the next depth, indexed by absolute position. The model must
    have MTP modules (`Generator.check` says so otherwise)."""

    def __init__(self, model: CausalLM, depth: int, capacity: int, chunk: int) -> None:
        cfg = model.config
        stored = cfg.num_nextn_predict_layers
        p = model.lm_head.weight
        self.model, self.depth, self.chunk = model, depth, chunk
        self.module_depth = [min(k, stored) for k in range(1, depth + 1)]
        self.note = None
        if depth > stored and not cfg.mtp_share_modules:
            self.note = (f"--speculative {depth} exceeds the {stored} MTP depth(s) trained: depths "
                         f"{stored + 1}..{depth} reuse the last module")  # fmt: skip
        self.caches = [LatentCache(cfg, 1, capacity, p.device, p.dtype, cfg.use_dsa) for _ in range(depth)]
        self.hidden = torch.zeros(depth, 1, capacity, cfg.hidden_size, device=p.device, dtype=p.dtype)

    def record_hidden(self, start: int, hidden: torch.Tensor) -> None:
        """Store the main model's final hidden states h^0 for positions start.. ."""
        self.hidden[0, :, start : start + hidden.shape[1]] = hidden

    def draft(
        self, tokens: torch.Tensor, n: int, count: int, params: SamplingParams, gen: torch.Generator | None
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Propose t_{n+1..n+count}, writing them into tokens [1, capacity]; returns the
        drafts [count] and, when sampling, their draft distributions [count, V]."""
        drafts, dists = [], []
        for k in range(1, count + 1):
            cache, md = self.caches[k - 1], self.module_depth[k - 1]
            view = ModelCache(layers=[], mtp=[cache] * md)  # mtp_step(md) reads slot md-1
            for s in range(cache.length, n, self.chunk):
                e = min(s + self.chunk, n)
                logits, h = self.model.mtp_step(
                    md, self.hidden[k - 1, :, s:e], tokens[:, s + k : e + k], view
                )
                if k < self.depth:
                    self.hidden[k, :, s:e] = h
            tok, dist = choose(logits[:, -1], params, gen)
            tokens[:, n + k] = tok
            drafts.append(tok)
            dists.append(dist)
        return torch.cat(drafts), None if params.greedy else torch.cat(dists)

    def rollback(self, n: int, drafted: int, accepted: int) -> None:
        """After a verification at n that kept `accepted` drafts: drop every depth's entries
        that read a rejected draft (depth k at position i read t_{i+k})."""
        for k in range(1, drafted + 1):
            self.caches[k - 1].truncate(n + accepted + 1 - k)


def accept(
    logits: torch.Tensor,
    drafts: torch.Tensor,
    draft_probs: torch.Tensor | None,
    params: SamplingParams,
    gen: torch.Generator | None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Verify K drafts against the main model's logits [K+1, V] at positions n..n+K.

    Greedy keeps the longest prefix equal to the main model's argmax. Sampling accepts draft
    x with probability min(1, p(x)/q(x)) and on the first rejection draws from
    normalise(max(0, p - q)), which leaves the output distributed as p. Either way one more
    token follows the accepted ones. Returns (accepted count, next token) as 0-d tensors, so
    the caller synchronises once.
    """
    K = drafts.shape[0]
    if params.greedy:
        target = logits.argmax(-1)
        accepted = (drafts == target[:K]).long().cumprod(0).sum()
        return accepted, target[accepted]
    p = probabilities(logits, params)
    rows = torch.arange(K, device=logits.device)
    ratio_ok = (
        torch.rand(K, device=logits.device, generator=gen) * draft_probs[rows, drafts] < p[rows, drafts]
    )
    accepted = ratio_ok.long().cumprod(0).sum()
    candidates = torch.cat([(p[:K] - draft_probs).clamp_min(0.0), p[K:]])
    row = candidates[accepted]
    row = torch.where(row.sum() > 0, row, p[accepted])  # rounding can empty a residual
    return accepted, torch.multinomial(row, 1, generator=gen).squeeze(0)
