"""The buffers one decoding call works in: a latent cache per layer for `rows` prompts, their
token ids, and (with speculative decoding) the MTP drafter's. Prompts are prefilled one at a
time by the model itself; every later step runs on all rows at once through step.py, each row
at its own position, through a CUDA graph on a GPU.

A session is kept by the Generator and reused by the next call of the same shape: entries are
valid by position, so a new prompt overwrites what it needs and masks the rest.
"""

from __future__ import annotations

import torch

from glmlab.generate.graphs import GraphedStep
from glmlab.generate.joined import JoinedInputs
from glmlab.generate.speculative import MTPDrafter
from glmlab.generate.step import model_step
from glmlab.model import CausalLM
from glmlab.model.gqa import KVCache

# With CUDA graphs, capacities are rounded up to a multiple of this, so that calls with similar
# lengths share a session and its captured graphs.
CAPACITY_STEP = 256


def session_capacity(positions: int, *, graphs: bool) -> int:
    """The capacity a session gets for `positions` positions."""
    return -(-positions // CAPACITY_STEP) * CAPACITY_STEP if graphs else positions


class DecodeSession:
    """Fixed buffers for `rows` prompts of up to `capacity` positions and `depth` MTP drafts; the
    steps run each layer's input products `joined` where given (one set per Generator: joined.py)."""

    def __init__(
        self, model: CausalLM, rows: int, capacity: int, depth: int, *, graphs: bool, compiled: bool = False,
        joined: JoinedInputs | None = None,
    ) -> None:  # fmt: skip
        device = model.lm_head.weight.device
        self.model, self.rows, self.capacity, self.depth = model, rows, capacity, depth
        self.cache = model.new_cache(rows, capacity)
        # the prompts are prefilled one at a time, into the session's cache or a one-row scratch
        self.scratch = self.cache if rows == 1 else model.new_cache(1, capacity)
        self.tokens = torch.zeros(rows, capacity + depth + 1, dtype=torch.long, device=device)
        self.joined = joined
        self.drafter = None
        if depth:
            self.drafter = MTPDrafter(
                model, self.tokens, depth, capacity, graphs=graphs, compiled=compiled, joined=self.joined
            )
        self.graphed = GraphedStep(self._step, compiled=compiled) if graphs else None
        # greedy speculative decoding in one graph: drafts, verification and acceptance
        self.graphed_speculation = (
            GraphedStep(self._speculate, compiled=compiled) if graphs and depth else None
        )

    def _step(self, pos: torch.Tensor, context: int | None = None) -> torch.Tensor:
        """The main model on the tokens at positions pos [rows,S] over `context` slots (all by
        default): logits [rows,S,V]; h^0 to the drafter."""
        ids = self.tokens.gather(1, pos)
        logits, hidden = model_step(
            self.model, ids, pos, self.cache.layers, context or self.capacity, joined=self.joined
        )
        if self.drafter is not None:
            self.drafter.hidden[0][:, pos[0]] = hidden
        return logits

    def _speculate(self, n: torch.Tensor, last: torch.Tensor) -> torch.Tensor:
        """With t_n = last (1-element tensors): draft K tokens greedily, verify them with the main
        model over positions n..n+K, and return [accepted of the K drafts, the K drafts, the main
        model's argmax at n..n+K] as one tensor, so that the host reads one result per step."""
        K = self.depth
        self.tokens[0].index_copy_(0, n, last)
        drafts = self.drafter.draft_greedy(n)
        target = self._step((n + torch.arange(K + 1, device=n.device))[None])[0].argmax(-1)
        accepted = (drafts == target[:K]).long().cumprod(0).sum()
        return torch.cat([accepted.view(1), drafts, target])

    def speculate(self, n: int, last: int) -> list[int]:
        """One greedy speculative step of row 0 replayed from a CUDA graph (sessions with graphs):
        [accepted, drafts (K), the main model's argmax at n..n+K (K + 1)] as Python ints."""
        device = self.tokens.device
        return self.graphed_speculation(
            torch.tensor([n], device=device), torch.tensor([last], device=device)
        ).tolist()

    def prefill(self, row: int, ids: list[int], chunk: int) -> torch.Tensor:
        """Run row `row`'s prompt through the model `chunk` tokens at a time; last logits [V]."""
        prompt = torch.tensor([ids], dtype=torch.long, device=self.tokens.device)
        P = prompt.shape[1]
        self.tokens[row, :P] = prompt[0]
        self.scratch.truncate(0)
        for s in range(0, P, chunk):
            out = self.model(prompt[:, s : s + chunk], cache=self.scratch, logits_to_keep=1)
            if self.drafter is not None:
                self.drafter.hidden[0][:, s : s + out.hidden_states.shape[1]] = out.hidden_states
        if self.scratch is not self.cache:
            for dst, src in zip(self.cache.layers, self.scratch.layers, strict=True):
                if isinstance(dst, KVCache):  # GQA/MHA
                    dst.k[row, :P], dst.v[row, :P] = src.k[0, :P], src.v[0, :P]
                    continue
                dst.latent[row, :P] = src.latent[0, :P]
                if dst.index_keys is not None:
                    dst.index_keys[row, :P] = src.index_keys[0, :P]
        if self.drafter is not None:
            self.drafter.prefill(P, chunk)
        return out.logits[0, -1]

    def step(self, pos: torch.Tensor, furthest: int) -> torch.Tensor:
        """Logits [rows,S,V] for the tokens at pos [rows,S] (already in `tokens`), the largest
        of which is `furthest`: a CUDA graph reads every slot, an eager step only those up to it."""
        if self.graphed is not None:
            return self.graphed(pos)
        return self._step(pos, furthest + 1)
