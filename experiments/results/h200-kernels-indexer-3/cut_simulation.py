"""How often the selection's sampled cut misses its candidate list, simulated in torch on the CPU:
the morning's cut (one score in 32, in groups of 8; the r-th largest, r = 1.5*K*m/n, to 16 bits;
a list of 2K) against this session's (a sample of up to CAP = 8192 scores; r = 2.5*K*m/n; a list of
4K). A row whose count falls outside [K, list] runs the select over its whole row, which holds its
launch. Rows of the benchmark's gaussian inputs (q, k standard normal in bf16, w normal times
(H*D)^-0.5), at random positions from 8K to 128K of a 128K context, K = 2048.

    python experiments/results/h200-kernels-indexer-3/cut_simulation.py [SEED] [ROWS]
"""

from __future__ import annotations

import sys

import torch

H, D, K, T = 32, 128, 2048, 131072


def keys(x: torch.Tensor) -> torch.Tensor:
    """The select's int32 keys of fp32 scores (order-preserving; -0.0 as +0.0)."""
    b = x.view(torch.int32)
    k = torch.where(b < 0, b ^ 0x7FFFFFFF, b)
    return torch.where(k == -1, torch.zeros_like(k), k)


def candidates(row: torch.Tensor, target: float, sample: torch.Tensor) -> int:
    """The keys at or above the cut: the rank-th largest sampled key to 16 bits, rank = target*K*m/n."""
    n, m = row.numel(), sample.numel()
    rank = max(1, min(int(-(-target * K * m // n)), m))
    top = (keys(row[sample]) >> 16).sort(descending=True).values[rank - 1].item()
    return int((keys(row) >= top << 16).sum())


def main() -> None:
    seed = int(sys.argv[1]) if len(sys.argv) > 1 else 0
    n_rows = int(sys.argv[2]) if len(sys.argv) > 2 else 300
    torch.set_num_threads(1)
    g = torch.Generator().manual_seed(seed)
    k = torch.randn(T, D, generator=g).bfloat16().float()
    ends = torch.randint(8200, T, (n_rows,), generator=g).tolist()
    q = torch.randn(n_rows, H, D, generator=g).bfloat16().float()
    w = torch.randn(n_rows, H, generator=g) * (H**-0.5 * D**-0.5)
    old, new = [], []
    for i, end in enumerate(ends):
        n = end + 1
        row = (torch.relu(q[i] @ k[:n].T) * w[i][:, None]).sum(0)
        t = torch.arange(n)
        old.append(candidates(row, 1.5, t[t % 256 < 8]))
        every = max(32, -(-n // 8192))
        i8 = torch.arange(8192)
        s = (i8 // 8) * 8 * every + i8 % 8
        new.append(candidates(row, 2.5, s[s < n]))
    for name, counts, cap in (
        ("morning: 1.5K target, list 4096", old, 4096),
        ("now: 2.5K, list 8192", new, 8192),
    ):
        c = torch.tensor(counts).float()
        print(f"{name}: candidates min {c.min():.0f}, median {c.median():.0f}, max {c.max():.0f}; "
              f"< K {(c < K).sum().item()}, > list {(c > cap).sum().item()}, of {n_rows} rows")  # fmt: skip


if __name__ == "__main__":
    main()
