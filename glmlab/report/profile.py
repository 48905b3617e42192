"""`glmlab profile`: estimate beside measurement for one `glmlab.measure.profile` result."""

from __future__ import annotations

from rich.console import Console
from rich.table import Table

from glmlab.report.units import count, nbytes


def _rate(flops_per_s: float) -> str:
    return f"{flops_per_s / 1e12:.3f} TFLOP/s" if flops_per_s >= 1e12 else f"{flops_per_s / 1e9:.1f} GFLOP/s"


def print_profile(result: dict, console: Console) -> None:
    table = Table(
        title=f"{result['config']} on {result['device']}: seq {result['seq_len']}, batch {result['batch']}"
    )
    for col in ("quantity", "estimated (glmlab)", "measured", "est / meas"):
        table.add_column(col, justify="left" if col == "quantity" else "right")
    decode_ratio = result["decode_flops_estimated"] / max(result["decode_flops_measured"], 1)
    rows = [
        ("training step FLOPs", count(result["flops_estimated"]), count(result["flops_measured"]),
         f"{result['flops_ratio']:.3f}"),
        ("peak memory", nbytes(result["peak_memory_estimated_bytes"]),
         nbytes(result["peak_memory_measured_bytes"]), f"{result['peak_memory_ratio']:.3f}"),
        ("decode step FLOPs", count(result["decode_flops_estimated"]), count(result["decode_flops_measured"]),
         f"{decode_ratio:.3f}"),
    ]  # fmt: skip
    for row in rows:
        table.add_row(*row)
    console.print(table)
    console.print(
        f"step {result['step_time_s'] * 1000:.0f} ms, {result['tokens_per_s']:,.0f} tokens/s, "
        f"{_rate(result['achieved_flops_per_s'])}; matmul peak {_rate(result['matmul_peak_flops_per_s'])} "
        f"-> MFU {result['mfu']:.1%}"
    )
    roofline, took = result["decode_roofline_s"], result["decode_step_time_s"]
    rate, read = result["copy_bandwidth_bytes_per_s"] / 1e9, nbytes(result["decode_bytes_estimated"])
    console.print(
        f"decoding: {took * 1000:.1f} ms/step, {result['decode_tokens_per_s']:,.1f} tokens/s; it reads about "
        f"{read}, {roofline * 1000:.2f} ms at the measured copy rate of {rate:,.0f} GB/s: "
        f"{roofline / took:.0%} of that bound"
    )
