"""Sparse MLA attention in plain torch: the reference twin of glmlab/kernels/sparse_mla.py.

Written for clarity, not speed: it gathers every query's selected latent rows at once
([N,K,R] in memory) and lets autograd differentiate it. See `docs/architecture.md`
(DeepSeek Sparse Attention) for where this sits in the model.
"""

from __future__ import annotations

import torch


def sparse_mla_ref(
    q: torch.Tensor, kv: torch.Tensor, idx: torch.Tensor, valid: torch.Tensor, *, scale: float, r: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Attention of each query's H heads over its own K selected latent rows (absorbed MLA).

    q [N,H,R] queries in latent space; kv [M,R] latent rows [c_kv ; k_pe]; idx [N,K] the rows
    each query reads; valid [N,K] marks real keys. Scores are q . kv[idx] * scale over all R
    columns, values the first r columns of the same rows. Returns out [N,H,r] in q's dtype and
    key_mass [N,K] fp32 (probabilities summed over heads, no gradient). Computes in fp32.
    """
    selected = kv.to(q.dtype)[idx].float()  # [N,K,R]
    scores = torch.einsum("nhc,nkc->nhk", q.float(), selected) * scale
    probs = scores.masked_fill(~valid[:, None, :], float("-inf")).softmax(-1)  # [N,H,K]
    out = torch.einsum("nhk,nkc->nhc", probs, selected[..., :r])
    return out.to(q.dtype), probs.detach().sum(1)
