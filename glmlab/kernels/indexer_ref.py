"""Plain torch twins of glmlab/kernels/indexer.py: DSA's lightning indexer scores, top-k selection,
scores at selected keys and the dense warm-up KL, written for clarity rather than speed (they hold
[B,S,H,T] tensors). See docs/architecture.md, section "DSA: the lightning indexer and top-k".

Shapes are batch-first; the S queries are the last S of T positions: query s sits at position
T-S+s and sees the keys t <= T-S+s.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def visible(S: int, T: int, device: torch.device | str = "cpu") -> torch.Tensor:
    """[S,T] bool: query s (at position T-S+s) sees key t."""
    pos = torch.arange(T - S, T, device=device)
    return torch.arange(T, device=device)[None, :] <= pos[:, None]


def index_scores(q: torch.Tensor, w: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    """I[b,s,t] = sum_h w[b,s,h] * relu(q[b,s,h] . k[b,t]) in fp32, -inf where t is not visible.

    q [B,S,H,D], w [B,S,H], k [B,T,D] -> [B,S,T].
    """
    dots = torch.einsum("bshd,btd->bsht", q.float(), k.float()).relu()
    scores = torch.einsum("bsh,bsht->bst", w.float(), dots)
    return scores.masked_fill(~visible(q.shape[1], k.shape[1], q.device), float("-inf"))


def quantize_rows(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """x [..., D] as fp8 e4m3 rows and their fp32 scales [...]: x ~ x8 * scale[..., None], each row
    scaled so that its largest |x| is 448 (e4m3's largest finite value); all-zero rows get scale 1."""
    amax = x.detach().abs().amax(-1).float()
    # a tensor divisor: CUDA turns a division by a Python number into a product with its rounded
    # reciprocal, 1 ulp off the quotient the kernel computes (measured on the H200: the scales differed)
    scale = torch.where(amax > 0, amax / amax.new_tensor(448.0), 1.0)
    return (x.detach().float() / scale[..., None]).to(torch.float8_e4m3fn), scale


def index_scores_fp8(q: torch.Tensor, w: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    """`index_scores` of q and k rounded to fp8 e4m3 row by row (`quantize_rows`: q per (query, head),
    k per key), and scaled back."""

    def rounded(x: torch.Tensor) -> torch.Tensor:
        x8, scale = quantize_rows(x)
        return x8.float() * scale[..., None]

    return index_scores(rounded(q), w, rounded(k))


def index_topk(
    q: torch.Tensor, w: torch.Tensor, k: torch.Tensor, *, topk: int, last: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """The K = min(topk, T) best visible keys of each query: indices [B,S,K] int64, valid [B,S,K] bool.

    Ties go to the lower key index (a stable sort); the valid picks come first, and rows that see
    fewer than K keys mark the rest invalid. `last` [B,S] hides the keys past last[b,s] as well.
    """
    scores = index_scores(q, w, k)
    if last is not None:
        hidden = torch.arange(k.shape[1], device=k.device) > last[..., None]
        scores = scores.masked_fill(hidden, float("-inf"))
    K = min(topk, k.shape[1])
    order = torch.sort(scores, dim=-1, descending=True, stable=True).indices[..., :K]
    return order, torch.isfinite(scores.gather(-1, order))


def index_scores_at(q: torch.Tensor, w: torch.Tensor, k: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """Scores [B,S,K] fp32 at the keys idx [B,S,K] (no causal mask: the caller masks invalid picks)."""
    B, S, K = idx.shape
    picked = k.float().gather(1, idx.reshape(B, S * K, 1).expand(-1, -1, k.shape[-1])).view(B, S, K, -1)
    dots = torch.einsum("bshd,bskd->bshk", q.float(), picked).relu()
    return torch.einsum("bsh,bshk->bsk", w.float(), dots)


def attention_target(q_lat: torch.Tensor, kv: torch.Tensor, *, scale: float) -> torch.Tensor:
    """The main attention's probabilities summed over heads and renormalised, [B,S,T] fp32.

    Absorbed MLA: scores = q_lat [B,S,H,R] . kv [B,T,R] * scale, causal softmax per head.
    """
    S, T = q_lat.shape[1], kv.shape[1]
    scores = torch.einsum("bshr,btr->bsht", q_lat.float(), kv.float()) * scale
    scores = scores.masked_fill(~visible(S, T, q_lat.device)[:, None], float("-inf"))
    p = scores.softmax(-1).sum(2)
    return p / p.sum(-1, keepdim=True)


def dense_index_kl(
    q: torch.Tensor, w: torch.Tensor, k: torch.Tensor, q_lat: torch.Tensor, kv: torch.Tensor, *, scale: float
) -> torch.Tensor:
    """DSA stage 1's loss: mean over queries of KL(p || softmax(I)) over all visible keys.

    p is `attention_target(q_lat, kv, scale=scale)` (detached); I is `index_scores(q, w, k)`.
    """
    p = attention_target(q_lat.detach(), kv.detach(), scale=scale)
    log_q = F.log_softmax(index_scores(q, w, k), dim=-1)
    kl = torch.where(p > 0, p * (p.clamp_min(1e-30).log() - log_q), torch.zeros_like(p))
    return kl.sum(-1).mean()
