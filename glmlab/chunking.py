"""How glmlab cuts the indexer's scoring and the gathered sparse attention into chunks of query
rows (spec 2.2). Torch-free, so that the FLOP and memory estimates (glmlab/accounting) count
the indexer's chunks exactly as the model runs them.

On a CPU a chunk's intermediate values should stay in a core's cache; a GPU wants few, large
launches, or the Python loop over chunks dominates.
"""

from __future__ import annotations

# Intermediate values per chunk, (CPU, other devices):
# the indexer's ReLU'd dots for one sequence (256 KB in fp32 on a CPU; 2 MB at batch 8)
INDEX_DOTS_PER_SEQUENCE = (1 << 16, 1 << 24)
# gathered latents of all sequences (512 KB in fp32 on a CPU; 64 MB in bf16 on a GPU)
GATHERED_LATENTS = (1 << 17, 1 << 25)
# The indexer keeps at least this many query rows per chunk, however long the context.
MIN_INDEX_ROWS = 16


def rows_per_chunk(device_type: str, row_elements: int, budget: tuple[int, int], minimum: int = 1) -> int:
    """Rows per chunk when one row holds `row_elements` intermediate values."""
    cpu, other = budget
    return max(minimum, (cpu if device_type == "cpu" else other) // row_elements)


def score_chunks(n: int, T: int, heads: int, device_type: str) -> list[tuple[int, int, int]]:
    """The indexer's chunks over n queries, the last n of T positions: (first query, end query,
    keys scored). A chunk scores the keys up to its last query's position. The chunks depend on
    neither the batch nor the data."""
    rows = rows_per_chunk(device_type, heads * T, INDEX_DOTS_PER_SEQUENCE, MIN_INDEX_ROWS)
    return [(a, min(a + rows, n), T - n + min(a + rows, n)) for a in range(0, n, rows)]


def scored_pairs(n: int, T: int, heads: int, device_type: str) -> int:
    """(query, key) pairs the indexer scores over n queries and T keys."""
    return sum((b - a) * end for a, b, end in score_chunks(n, T, heads, device_type))
