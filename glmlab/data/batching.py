"""Packing documents into fixed-length sequences and a resumable batch order.

Documents are joined with EOS into one token stream and cut into sequences of `seq_len`
tokens. The order is a fresh seeded permutation per epoch, so the batch at any position is a
pure function of (seed, position): the position (sequences consumed) is all a checkpoint needs.
"""

from __future__ import annotations

import numpy as np
import torch

from glmlab.errors import GlmlabError


def pack(token_lists: list[list[int]], eos_id: int, vocab_size: int) -> np.ndarray:
    """Documents -> one stream `doc0 EOS doc1 EOS ...` (uint16 when the vocabulary allows)."""
    dtype = np.uint16 if vocab_size <= 2**16 else np.int32
    total = sum(len(t) + 1 for t in token_lists)
    out = np.empty(total, dtype=dtype)
    at = 0
    for ids in token_lists:
        out[at : at + len(ids)] = ids
        out[at + len(ids)] = eos_id
        at += len(ids) + 1
    return out


class Batches:
    """Training batches [batch, seq_len] from a packed stream, addressed by position."""

    def __init__(self, tokens: np.ndarray, seq_len: int, batch_size: int, seed: int) -> None:
        if seed < 0:
            raise GlmlabError(f"train.seed must be a non-negative integer, got {seed}: use --seed 0 or above")
        self.tokens, self.seq_len, self.batch_size, self.seed = tokens, seq_len, batch_size, seed
        self.n_seq = len(tokens) // seq_len
        if self.n_seq < 1:
            raise GlmlabError(
                f"the training data has {len(tokens)} tokens, fewer than one sequence of seq_len "
                f"{seq_len}: give more text or lower train.seq_len"
            )
        self._epoch, self._perm = -1, np.empty(0, dtype=np.int64)

    def _order(self, epoch: int) -> np.ndarray:
        if epoch != self._epoch:
            self._epoch = epoch
            self._perm = np.random.default_rng([self.seed, epoch]).permutation(self.n_seq)
        return self._perm

    def sequence(self, k: int) -> np.ndarray:
        """The k-th sequence drawn (k counts across epochs)."""
        epoch, i = divmod(k, self.n_seq)
        start = int(self._order(epoch)[i]) * self.seq_len
        return self.tokens[start : start + self.seq_len]

    def batch(self, position: int) -> torch.Tensor:
        """The batch starting at sequence `position`; the next batch starts at position + batch_size."""
        rows = [self.sequence(position + j).astype(np.int64) for j in range(self.batch_size)]
        return torch.from_numpy(np.stack(rows))


def validation_batches(
    tokens: np.ndarray, seq_len: int, batch_size: int, n_batches: int
) -> list[torch.Tensor]:
    """Fixed validation batches: the first sequences of the validation stream, in order."""
    n_seq = min(len(tokens) // seq_len, batch_size * n_batches)
    if n_seq < 1:
        raise GlmlabError(
            f"the validation split has {len(tokens)} tokens, fewer than one sequence of seq_len "
            f"{seq_len}: raise train.val_fraction, give more text or lower seq_len"
        )
    seqs = torch.from_numpy(tokens[: n_seq * seq_len].astype(np.int64)).view(n_seq, seq_len)
    return list(seqs.split(batch_size))
