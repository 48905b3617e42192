"""MTP speculative decoding: drafts from the MTP chain, one verification pass, exact acceptance
(docs/architecture.md, "Multi-token prediction").

Positions: MTP depth k at position i combines h^{k-1}_i with Emb(t_{i+k}) and predicts
t_{i+k+1}; h^0 is the main model's final hidden state. With t_n the last emitted token (not yet
in the main cache), every depth drafts at position n-1: depth 1 reads (h^0_{n-1}, t_n) and
proposes t_{n+1}, depth k reads (h^{k-1}_{n-1}, draft t_{n+k-1}) and proposes t_{n+k}.

Which cache entries a verification spoils: depth k's entry at i read t_{i+k}, so after a
verification at n that accepted a of K drafts (the next step's n' = n + a + 1), exactly the
entries with i + k >= n' read a rejected draft, i.e. i >= n' - k >= n' - K. A draft therefore
(re)computes every depth over the window of the K + 1 positions before n', which holds every
spoiled entry and, when all K drafts were accepted, the one position (n) no window has covered
yet. Nothing is rolled back; a window that would start before position 0 repeats position 0,
so any prompt length works.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial

import torch

from glmlab.generate.graphs import GraphedStep
from glmlab.generate.joined import JoinedInputs
from glmlab.generate.sampling import SamplingParams, choose, probabilities
from glmlab.generate.step import mtp_step
from glmlab.model import CausalLM
from glmlab.model.model import layer_cache


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
    """The MTP chain's state while decoding one row: a latent cache per draft depth (entries
    valid by position, glmlab/generate/step.py) and the hidden states h^0..h^{K-1} by position.
    The main model's steps write h^0 into `hidden[0]`; `tokens` [1, L] is the row's token buffer,
    shared with the main model's steps. The model must have MTP modules (`Generator.check`)."""

    def __init__(
        self, model: CausalLM, tokens: torch.Tensor, depth: int, capacity: int, *, graphs: bool,
        compiled: bool = False, joined: JoinedInputs | None = None,
    ) -> None:  # fmt: skip
        cfg = model.config
        stored = cfg.num_nextn_predict_layers
        p = model.lm_head.weight
        self.model, self.tokens, self.depth, self.joined = model, tokens, depth, joined
        self.module_depth = [min(k, stored) for k in range(1, depth + 1)]
        self.note = None
        if depth > stored and not cfg.mtp_share_modules:
            self.note = (f"--speculative {depth} exceeds the {stored} MTP depth(s) trained: depths "
                         f"{stored + 1}..{depth} reuse the last module")  # fmt: skip
        self.caches = [
            layer_cache(cfg, 1, capacity, p.device, p.dtype, index_keys=cfg.use_dsa) for _ in range(depth)
        ]
        self.hidden = torch.zeros(depth, 1, capacity, cfg.hidden_size, device=p.device, dtype=p.dtype)
        self.window = depth + 1
        self.graphed = (
            [GraphedStep(partial(self._depth_step, k), compiled=compiled) for k in range(1, depth + 1)]
            if graphs
            else None
        )

    def _depth_step(self, k: int, pos: torch.Tensor, context: int | None = None) -> torch.Tensor:
        """Depth k over positions pos [1,S] and `context` slots (all by default): writes its
        cache entries and h^k; returns the logits at the last position [1,V]."""
        next_ids = self.tokens.gather(1, pos + k)
        cache, context = self.caches[k - 1], context or self.caches[k - 1].capacity
        hidden = self.hidden[k - 1][:, pos[0]]
        depth = self.module_depth[k - 1]
        logits, h = mtp_step(self.model, depth, hidden, next_ids, pos, cache, context, joined=self.joined)
        if k < self.depth:
            self.hidden[k][:, pos[0]] = h
        return logits

    def prefill(self, prompt_len: int, chunk: int) -> None:
        """Every depth's entries before the first draft's window (the prompt's first P - K - 1
        positions), `chunk` positions at a time."""
        end = prompt_len - self.window
        for k in range(1, self.depth + 1):
            for s in range(0, max(end, 0), chunk):
                e = min(s + chunk, end)
                self._depth_step(k, torch.arange(s, e, device=self.tokens.device)[None], e)

    def _chain(
        self, n: torch.Tensor, logits_at: Callable, pick: Callable
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The K depths in turn from position n (a 1-element tensor): depth k's logits
        (`logits_at(k, pos)`) give its draft (`pick(logits)` -> token, distribution or None), which
        is written into the token buffer for depth k + 1. Returns the drafts [K] and distributions."""
        pos = (n + torch.arange(-self.window, 0, device=n.device)).clamp_min(0)[None]
        drafts, dists = [], []
        for k in range(1, self.depth + 1):
            tok, dist = pick(logits_at(k, pos))
            self.tokens[0].index_copy_(0, n + k, tok)
            drafts.append(tok)
            dists.append(dist)
        return torch.cat(drafts), None if dists[0] is None else torch.cat(dists)

    def draft(
        self, n: int, params: SamplingParams, gen: torch.Generator | None
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Propose t_{n+1..n+K}, writing them into the token buffer; returns the drafts [K] and,
        when sampling, their draft distributions [K, V]. Each depth replays its own graph, or runs
        eagerly over the slots up to n."""

        def logits_at(k: int, pos: torch.Tensor) -> torch.Tensor:
            return self.graphed[k - 1](pos) if self.graphed else self._depth_step(k, pos, n)

        at = torch.tensor([n], device=self.tokens.device)
        drafts, dists = self._chain(at, logits_at, lambda logits: choose(logits, params, gen))
        return drafts, None if params.greedy else dists

    def draft_greedy(self, n: torch.Tensor) -> torch.Tensor:
        """Greedy drafts t_{n+1..n+K} [K] for a position n given as a 1-element tensor, written into
        the token buffer. Tensor operations over every cache slot only, so that a whole speculative
        step can be captured in one CUDA graph (DecodeSession.speculate)."""
        return self._chain(n, self._depth_step, lambda logits: (logits.argmax(-1), None))[0]


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
