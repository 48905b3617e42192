"""Short human-readable numbers for tables: counts (3.48M) and bytes (273.6 MB)."""

from __future__ import annotations


def count(n: float) -> str:
    """1234567 -> '1.23M' (T, B, M, K; plain below a thousand)."""
    for unit, size in (("T", 1e12), ("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if abs(n) >= size:
            return f"{n / size:.2f}{unit}"
    return str(int(n))


def nbytes(n: float) -> str:
    """273600000 -> '273.60 MB' (decimal units)."""
    for unit, size in (("TB", 1e12), ("GB", 1e9), ("MB", 1e6), ("KB", 1e3)):
        if abs(n) >= size:
            return f"{n / size:.2f} {unit}"
    return f"{int(n)} B"
