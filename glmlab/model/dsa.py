"""DeepSeek Sparse Attention: the lightning indexer, top-k selection, the indexer's KL loss
(docs/architecture.md, "DSA")."""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from glmlab.config import ModelConfig
from glmlab.model.layers import apply_rotary
from glmlab.plan import GATHERED_LATENTS, rows_per_chunk


class TopK(NamedTuple):
    """The keys each query reads: indices [B,S,K] and which of them are real keys [B,S,K]."""

    indices: torch.Tensor
    valid: torch.Tensor


class Indexer(nn.Module):
    """Scores every (query, earlier key) pair cheaply; attention then reads only the top k.

    `I[t,s] = sum_j w[t,j] * ReLU(qI[t,j] . kI[s]) / sqrt(d_I)`, with qI from the query latent
    c_q, one key head kI from the normed input, per-head weights w from the input. The
    layout per head is [rope | nope], the reverse of MLA's.
    """

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.n_heads, self.head_dim = cfg.index_n_heads, cfg.index_head_dim
        self.rope_dim, self.interleave = cfg.qk_rope_head_dim, cfg.indexer_rope_interleave
        q_in = cfg.q_lora_rank or cfg.hidden_size
        self.wq_b = nn.Linear(q_in, self.n_heads * self.head_dim, bias=False)
        self.wk = nn.Linear(cfg.hidden_size, self.head_dim, bias=False)
        self.k_norm = nn.LayerNorm(self.head_dim, eps=1e-6)
        self.weights_proj = nn.Linear(cfg.hidden_size, self.n_heads, bias=False)

    def _rope(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        rot, rest = x.split([self.rope_dim, self.head_dim - self.rope_dim], dim=-1)
        return torch.cat([apply_rotary(rot, cos, sin, self.interleave), rest], dim=-1)

    def keys(
        self, xn: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, *, projected: torch.Tensor | None = None
    ) -> torch.Tensor:
        """xn [B,S,d] -> kI [B,S,d_I] (what the indexer key cache stores); `projected`: wk(xn),
        where the caller ran it."""
        return self._rope(self.k_norm(self.wk(xn) if projected is None else projected), cos, sin)

    def queries(
        self, xn: torch.Tensor, q_latent: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor,
        *, weights: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:  # fmt: skip
        """The indexer's queries qI [B,S,H,d_I] (rotated) and head weights w [B,S,H] (fp32, scaled
        by 1/sqrt(H d_I)): what the Triton kernels read. `weights`: weights_proj(xn), where the
        caller ran it."""
        B, S, _ = xn.shape
        q = self._rope(self.wq_b(q_latent).view(B, S, self.n_heads, self.head_dim), cos, sin)
        w = (self.weights_proj(xn) if weights is None else weights).float()
        w = w * (self.n_heads**-0.5 * self.head_dim**-0.5)
        return q, w

    def scores(
        self,
        xn: torch.Tensor,
        q_latent: torch.Tensor,
        cos: torch.Tensor,
        sin: torch.Tensor,
        keys: torch.Tensor,
        causal: torch.Tensor,
        *,
        chunks: tuple[tuple[int, int, int], ...],
    ) -> torch.Tensor:
        """Index scores [B,S,T] (fp32, or autocast's dtype); -inf where `causal` [S,T] is False.

        The S queries are the last S of the T positions. They are scored in `chunks` of rows
        (`glmlab.plan.score_chunks`), each against the keys up to its last query only: the chunk's
        [B,rows,H,keys] ReLU'd dots stay in cache on a CPU, and the keys above the diagonal
        (about half of them in training) are never scored.
        """
        B, S, _ = xn.shape
        T = keys.shape[1]
        q, w = self.queries(xn, q_latent, cos, sin)
        q = q.float()
        keys_t = keys.float().transpose(1, 2)  # [B,d_I,T]
        index = None  # the first chunk allocates it, in its dtype (autocast's, if on)
        for a, b, end in chunks:
            dots = torch.bmm(q[:, a:b].flatten(1, 2), keys_t[:, :, :end]).relu_()  # [B,chunk*H,end]
            weighted = w[:, a:b].reshape(-1, 1, self.n_heads) @ dots.view(-1, self.n_heads, end)
            scores = weighted.view(B, b - a, end)  # one [1,H] x [H,end] product per query
            if b - a == S:  # one chunk holds every score (decoding, short sequences)
                return scores.masked_fill_(~causal, float("-inf"))
            if index is None:
                index = scores.new_full((B, S, T), float("-inf"))
            index[:, a:b, :end] = scores
        return index.masked_fill_(~causal, float("-inf"))


def select_topk(index: torch.Tensor, k: int) -> TopK:
    """Top-k keys per query from index scores [B,S,T]: indices [B,S,k'] and a validity mask.

    k' = min(k, T). Early queries have fewer than k causal keys; their extra picks point at
    masked keys and are marked invalid, so the set is top min(k, t+1).
    """
    top = index.topk(min(k, index.shape[-1]), dim=-1, sorted=False)  # a set: order is irrelevant
    return TopK(top.indices, torch.isfinite(top.values))


def topk_mask(topk: TopK, T: int) -> torch.Tensor:
    """[B,S,T] bool, True at each query's valid picks: the top-k as the masked paths' mask. An
    invalid pick may repeat a valid one's index (the Triton top-k leaves them pointing at keys in
    range), so the invalid ones go to a spare column that is dropped."""
    B, S, _ = topk.indices.shape
    keep = torch.zeros(B, S, T + 1, dtype=torch.bool, device=topk.indices.device)
    keep.scatter_(-1, topk.indices.masked_fill(~topk.valid, T), True)
    return keep[..., :T]


class _GatheredAttention(torch.autograd.Function):
    """Attention of each query over its own K gathered latents (absorbed MLA under DSA).

    Memory traffic, not multiply-adds, is what this costs on a CPU: queries are processed in
    chunks whose gathered latents ([chunk,K,R]) stay in cache while both products read them,
    the gathered latents are not kept for the backward pass but gathered again, and their
    gradient is one product scattered back with one index_add per chunk.
    """

    @staticmethod
    def chunk_rows(q: torch.Tensor, K: int, R: int) -> int:
        return rows_per_chunk(q.device.type, K * R, GATHERED_LATENTS)

    @staticmethod
    def attend(q, kv, idx, valid, scale: float, r: int, step: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The forward computation, chunk by chunk: output [N,H,r], probabilities [N,H,K]."""
        (N, K), R = idx.shape, kv.shape[1]
        out = q.new_empty(N, q.shape[1], r)
        probs = torch.empty(N, q.shape[1], K, device=q.device, dtype=torch.float32)
        for a in range(0, N, step):
            b = min(a + step, N)
            sel = kv.index_select(0, idx[a:b].reshape(-1)).view(b - a, K, R)
            scores = torch.bmm(q[a:b], sel.transpose(1, 2)).float() * scale
            torch.softmax(scores.masked_fill_(~valid[a:b, None], float("-inf")), -1, out=probs[a:b])
            torch.bmm(probs[a:b].to(q.dtype), sel[..., :r], out=out[a:b])
        return out, probs

    @staticmethod
    def forward(ctx, q, kv, idx, valid, scale: float, r: int):
        step = _GatheredAttention.chunk_rows(q, idx.shape[1], kv.shape[1])
        out, probs = _GatheredAttention.attend(q, kv, idx, valid, scale, r, step)
        ctx.save_for_backward(q, kv, idx, probs)
        ctx.scale, ctx.r, ctx.step = scale, r, step
        ctx.mark_non_differentiable(probs)
        return out, probs

    @staticmethod
    @torch.autocast("cpu", enabled=False)
    @torch.autocast("cuda", enabled=False)
    def backward(ctx, d_out, _d_probs):
        """In q's dtype, also when autograd runs inside an autocast context (its products would
        otherwise come out in bf16 beside fp32 buffers)."""
        q, kv, idx, probs = ctx.saved_tensors
        (N, K), R, r = idx.shape, kv.shape[1], ctx.r
        dq, d_kv = torch.empty_like(q), torch.zeros_like(kv)
        for a in range(0, N, ctx.step):
            b = min(a + ctx.step, N)
            rows = idx[a:b].reshape(-1)
            sel = kv.index_select(0, rows).view(b - a, K, R)
            p, g = probs[a:b].to(q.dtype), d_out[a:b]
            dp = torch.bmm(g, sel[..., :r].transpose(1, 2))
            ds = p * (dp - (dp * p).sum(-1, keepdim=True)) * ctx.scale
            torch.bmm(ds, sel, out=dq[a:b])
            # d sel = ds^T q + p^T [d_out | 0], as one product of stacked factors
            d_sel = torch.bmm(
                torch.cat([ds, p], 1).transpose(1, 2), torch.cat([q[a:b], F.pad(g, (0, R - r))], 1)
            )
            d_kv.index_add_(0, rows, d_sel.view(-1, R))
        return dq, d_kv, None, None, None, None


def gathered_attention(
    q: torch.Tensor, kv: torch.Tensor, idx: torch.Tensor, valid: torch.Tensor, scale: float, r: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Sparse attention over gathered latents (docs/architecture.md, "DSA").

    q [N,H,R] queries in latent space (N = batch x query positions, R = kv_rank + rope);
    kv [M,R] the cached latents [c_kv ; k_pe] of all batches, flattened; idx [N,K] the rows of
    kv each query reads; valid [N,K] marks real keys. Returns the latent output [N,H,r] (the
    weighted sum of the first r = kv_rank columns) and the probabilities [N,H,K] (no gradient).
    """
    # Under autocast q arrives in bf16 while the normed latents are fp32: compute in q's dtype.
    kv = kv.to(q.dtype)
    if torch.is_grad_enabled() and (q.requires_grad or kv.requires_grad):
        return _GatheredAttention.apply(q, kv, idx, valid, scale, r)
    step = _GatheredAttention.chunk_rows(q, idx.shape[1], kv.shape[1])  # decoding: no autograd node
    return _GatheredAttention.attend(q, kv, idx, valid, scale, r, step)


def indexer_kl(key_mass: torch.Tensor, index: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """Mean over queries of KL(p || softmax(I)) over one key set.

    key_mass [B,S,K]: the main attention's probabilities summed over heads (detached here; p is
    it renormalised); index [B,S,K]: the indexer's scores on the same keys; valid [B,S,K] (or
    broadcastable) marks real keys.
    """
    target = key_mass.detach().float()
    target = target / target.sum(-1, keepdim=True).clamp_min(1e-12)
    log_q = F.log_softmax(index.masked_fill(~valid, float("-inf")), dim=-1)
    log_p = target.clamp_min(1e-12).log()
    kl = torch.where(valid & (target > 0), target * (log_p - log_q), torch.zeros_like(target))
    return kl.sum(-1).mean()


def recall_at_k(key_mass: torch.Tensor, index: torch.Tensor, k: int) -> torch.Tensor:
    """Share of dense attention (probabilities summed over heads, [B,S,T]) that falls on the
    indexer's top-k keys."""
    idx, valid = select_topk(index.detach(), k)
    p = key_mass.detach().float()
    p = p / p.sum(-1, keepdim=True).clamp_min(1e-12)
    return (p.gather(-1, idx) * valid).sum(-1).mean()
