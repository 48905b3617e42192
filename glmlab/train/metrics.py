"""What a training run measures: matmul peak and MFU, expert load imbalance, the metrics log."""

from __future__ import annotations

import json
import time
from pathlib import Path

import torch

from glmlab.build import parameter_report
from glmlab.config import Config
from glmlab.model import CausalLM


def measure_matmul_peak(device: torch.device) -> float:
    """FLOP/s of a square matmul on `device` (bf16 on GPU, fp32 on CPU): the MFU denominator.
    Uses its own generator so the training RNG stream is untouched."""
    n, dtype = (8192, torch.bfloat16) if device.type == "cuda" else (1024, torch.float32)
    gen = torch.Generator(device=device).manual_seed(0)
    a = torch.randn(n, n, device=device, dtype=dtype, generator=gen)
    b = torch.randn(n, n, device=device, dtype=dtype, generator=gen)
    best = float("inf")
    for _ in range(5):
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        a @ b
        if device.type == "cuda":
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - start)
    return 2 * n**3 / best


def training_flops_per_token(cfg: Config, model: CausalLM) -> float:
    """6 * active non-embedding parameters plus causal attention over the keys each query reads
    (at most index_topk under DSA), forward and backward: 6 * layers * heads * (qk + v) * keys."""
    m, seq = cfg.model, cfg.train.seq_len
    dense_keys = (seq + 1) / 2
    keys = sum(min(t + 1, m.index_topk) for t in range(seq)) / seq if m.use_dsa else dense_keys
    layers = m.num_hidden_layers + m.num_nextn_predict_layers
    attention = 6 * layers * m.num_attention_heads * (m.qk_head_dim + m.v_head_dim) * keys
    return 6 * parameter_report(model)["active_non_embedding"] + attention


def load_imbalance(counts: torch.Tensor) -> list[float]:
    """Max over mean tokens per expert, one value per router row of `expert_counts`."""
    c = counts.float()
    return (c.max(-1).values / c.mean(-1).clamp_min(1e-9)).tolist()


class MetricsLog:
    """`metrics.jsonl`: one JSON object per line, appended and flushed as it is written."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def truncate_after(self, step: int) -> None:
        """Drop records beyond `step` (written after the checkpoint a resumed run starts from)."""
        if not self.path.is_file():
            return
        lines = self.path.read_text().splitlines()
        kept = [line for line in lines if line and json.loads(line)["step"] <= step]
        self.path.write_text("".join(line + "\n" for line in kept))

    def write(self, record: dict) -> None:
        with open(self.path, "a") as f:
            f.write(json.dumps(record) + "\n")
