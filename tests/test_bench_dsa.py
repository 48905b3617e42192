"""Smoke test of benchmarks/bench_dsa_long_context.py: its --tiny mode on the CPU."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest
import torch

from glmlab.accounting import flops_report, training_flops_per_token
from glmlab.accounting.memory import training_memory
from glmlab.accounting.traffic import decode_step_bytes

SCRIPT = Path(__file__).resolve().parent.parent / "benchmarks" / "bench_dsa_long_context.py"


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("bench_dsa_long_context", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    yield module
    del sys.modules[spec.name]


def table(text: str, first_column: str) -> list[list[str]]:
    """The markdown table whose header starts with `first_column`: header, then the data rows."""
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(f"| {first_column} |"))
    rows = []
    for line in [lines[start], *lines[start + 2 :]]:
        if not line.startswith("|"):
            break
        rows.append([cell.strip() for cell in line.strip("|").split("|")])
    return rows


def test_tiny_run_prints_the_table_and_the_calculators_ratio(bench, one_thread, capsys, tmp_path):
    out = tmp_path / "dsa.json"
    status = bench.main(["--tiny", "--device", "cpu", "--repeats", "1", "--hf", "--json", str(out),
                         "--modes", ",".join(bench.MODES), "--decode-batch", "2"])  # fmt: skip
    printed = capsys.readouterr().out
    assert status == 0
    header, *rows = table(printed, "context")
    assert header == bench.COLUMNS
    assert [(r[0], r[1]) for r in rows] == [(c, m) for c in ("32", "64") for m in bench.MODES]
    report = json.loads(out.read_text())
    dsa_cfg, dense_cfg = bench.configs(bench.TINY, 2, "auto", 64, [])
    for row, figures in zip(rows, report["rows"], strict=True):
        S, mode = figures["context"], figures["mode"]
        assert row[0] == str(S) and row[1] == mode
        for side in ("dsa", "dense"):  # timed, nothing failed, on the CPU no peak
            assert figures[side]["error"] is None and figures[side]["seconds"] > 0
            assert figures[side]["peak_bytes"] is None and len(figures[side]["times"]) == 1
        assert row[4] == f"{figures['dense']['seconds'] / figures['dsa']['seconds']:.2f}x"
        # the calculator's dense/DSA ratio, computed here from the accounting API: of FLOPs, or of
        # the bytes a decoding step of the run's 2 rows reads
        kind = "forward" if mode == "prefill" else "train"
        if mode == "decode":
            dense, dsa = (decode_step_bytes(c, S + 1, 2)["total"] for c in (dense_cfg, dsa_cfg))
        else:
            dense = flops_report(dense_cfg, S, kind, mtp=False, device="cpu").total
        if mode == "warmup":
            dsa = training_flops_per_token(dsa_cfg, S, mtp=False, device="cpu", dsa_dense=True) * S
        elif mode != "decode":
            dsa = flops_report(dsa_cfg, S, kind, mtp=False, device="cpu").total
        assert figures["predicted"] == pytest.approx(dense / dsa)
        assert row[5] == f"{dense / dsa:.2f}x"
        assert row[6] == "-"  # the targets are for 32K and longer
        # the training rows set the memory estimate beside the measured peak (none on a CPU)
        estimated = figures["dsa_peak_estimate"]
        assert (estimated is not None) == (mode == "train")
        if mode == "train":
            one = training_memory(dsa_cfg, S, 1, "fp32", mtp=False, device="cpu")
            assert estimated > one["peak"] - one["optimizer"]  # plus the dense model's weights
            assert row[7] == f"- (est {estimated / 1e6:.1f} MB)"
    # the dense side's SDPA kernels were profiled and their FLOPs counted
    assert "flash_attention_for_cpu" in rows[0][10]
    sdpa = report["rows"][0]["dense"]["ops"]["aten::_scaled_dot_product_flash_attention_for_cpu"]
    assert sdpa["flops"] > 0 and sdpa["seconds"] > 0
    # transformers on the same weights: the logits agree at the first context
    header, *hf_rows = table(printed, "context | glmlab DSA")
    assert [r[0] for r in hf_rows] == ["32", "64"]
    assert float(hf_rows[0][-1]) < 1e-4


def test_overrides_reach_one_model_each(bench):
    """`--set` overrides the DSA model alone, `--dense-set` the dense one alone (e.g. dsa_impl=gather:
    dense decoding through torch's absorbed attention, the baseline before session 17)."""
    dsa_cfg, dense_cfg = bench.configs(bench.TINY, 2, "auto", 64, ["index_dtype=fp8"], ["dsa_impl=gather"])
    assert (dsa_cfg.model.index_dtype, dsa_cfg.model.dsa_impl) == ("fp8", "auto")
    assert (dense_cfg.model.index_dtype, dense_cfg.model.dsa_impl) == ("bf16", "gather")
    assert dsa_cfg.model.use_dsa and not dense_cfg.model.use_dsa
    args = bench.parse(["--tiny", "--dense-set", "dsa_impl=gather", "--dense-set", "index_topk=4"])
    assert args.dense_set == ["dsa_impl=gather", "index_topk=4"]


def test_bad_contexts_are_a_usage_error(bench, capsys):
    with pytest.raises(SystemExit) as exit_:
        bench.main(["--tiny", "--contexts", "8q"])
    assert exit_.value.code == 2
    assert "'8q' is not a token count" in capsys.readouterr().err


def test_out_of_memory_and_failures_fill_their_cells(bench, capsys):
    def out_of_memory() -> None:
        raise torch.cuda.OutOfMemoryError("CUDA out of memory")

    def broken() -> None:
        raise RuntimeError("expected scalar type Float but found BFloat16")

    cpu = torch.device("cpu")
    oom = bench.attempt(out_of_memory, cpu, 3, profiled=True)
    err = bench.attempt(broken, cpu, 3, profiled=True)
    assert "expected scalar type Float" in capsys.readouterr().err  # the traceback
    row = {"context": 65536, "mode": "train", "predicted": 3.04, "target": 2.0, "dsa_peak_estimate": 5e10,
           "dense_peak_estimate": 4e10}  # fmt: skip
    cells = bench.table_row(row, oom, err)
    assert cells == ["64K", "train", "OOM", "ERR", "-", "3.04x", "2x", "OOM (est 50.0 GB)", "ERR", "OOM",
                     "ERR"]  # fmt: skip


def test_rates_the_profiler_could_not_attribute_show_as_not_available(bench):
    """An operator whose profile was not believable (`run`: device times adding up past the step)
    keeps its FLOPs but shows n/a for its rate, beside the others' rates."""
    measured = bench.Measured(seconds=0.7)
    measured.ops = {
        "glmlab::index_topk": {"flops": 1.4e14, "seconds": None, "tflops": None},
        "glmlab::sparse_mla_fwd": {"flops": 7.5e13, "seconds": 0.23, "tflops": 326.0},
        "aten::mm": {"flops": 1e14, "seconds": 0.13, "tflops": 770.0},
    }
    assert measured.kernels() == "index_topk n/a, sparse_mla_fwd 326"
