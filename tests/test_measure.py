"""measure.py: the counting formulas it adds, saved-tensor memory, and a real profile run
against the estimate (docs/accounting.md, "Checking against measurement")."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F
from typer.testing import CliRunner

from glmlab.accounting.traffic import decode_step_bytes
from glmlab.cli import app
from glmlab.config import load_config
from glmlab.errors import GlmlabError
from glmlab.measure import _causal_pairs, copy_bandwidth, flop_counter, matmul_peak, saved_tensor_bytes
from glmlab.model.moe import GROUP_ALIGN
from glmlab.plan import layer_kinds, mtp_layer_kind


def test_causal_pairs():
    assert _causal_pairs(4, 4) == 10
    assert _causal_pairs(1, 4) == 1  # top-left aligned: the first query sees one key
    assert _causal_pairs(6, 4) == 10 + 2 * 4


@pytest.mark.parametrize("causal", [True, False])
def test_cpu_sdpa_is_counted_over_the_pairs_it_runs(causal):
    """torch counts 0 for CPU SDPA; the registered formula counts QK^T and PV over the causal
    pairs forward and five products backward."""
    B, H, S, D = 2, 3, 10, 8
    q, k, v = (torch.randn(B, H, S, D, requires_grad=True) for _ in range(3))
    with flop_counter() as counter:
        o = F.scaled_dot_product_attention(q, k, v, is_causal=causal)
        forward = counter.get_total_flops()
        o.sum().backward()
    pairs = B * H * (S * (S + 1) // 2 if causal else S * S)
    assert forward == pairs * 2 * (D + D)
    assert counter.get_total_flops() - forward == pairs * 2 * (3 * D + 2 * D)


def test_einsum_and_linear_are_counted():
    x, w = torch.randn(4, 5, 6), torch.randn(7, 6)
    with flop_counter() as counter:
        torch.einsum("bsd,btd->bst", x, x)
        F.linear(x, w)
    assert counter.get_total_flops() == 2 * 4 * 5 * 5 * 6 + 2 * 20 * 6 * 7


def test_saved_tensor_bytes_excludes_parameters():
    lin = torch.nn.Linear(8, 16, bias=False)
    x = torch.randn(4, 8, requires_grad=True)
    with saved_tensor_bytes(list(lin.parameters())) as saved:
        y = torch.relu(lin(x))
    assert saved["bytes"] == x.numel() * 4 + y.numel() * 4  # input of the linear, output of relu


def test_copy_bandwidth_is_the_best_copy(monkeypatch):
    """Bytes moved (read and written) over the fastest of the timed copies."""
    import glmlab.measure as measure

    clock = iter([0.0, 1.0, 1.0, 1.25])  # copies of 1 s and 0.25 s
    monkeypatch.setattr(measure, "time", SimpleNamespace(perf_counter=lambda: next(clock)))
    assert copy_bandwidth("cpu", nbytes=4096, repeats=2) == pytest.approx(2 * 4096 / 0.25)
    with pytest.raises(ValueError, match="at least 1"):
        copy_bandwidth("cpu", repeats=0)


def test_matmul_peak_is_the_best_batch(monkeypatch):
    """The peak is the fastest of the timed batches: one slow batch does not lower it."""
    import glmlab.measure as measure

    clock = iter([0.0, 1.0, 1.0, 3.0, 3.0, 3.5])  # batches of 1 s, 2 s, 0.5 s
    monkeypatch.setattr(measure, "time", SimpleNamespace(perf_counter=lambda: next(clock)))
    peak = matmul_peak("cpu", size=16, iters=4, repeats=3)
    assert peak == pytest.approx(2 * 16**3 * 4 / 0.5)
    with pytest.raises(ValueError, match="at least 1"):
        matmul_peak("cpu", size=16, repeats=0)


def test_profile_cli_estimate_matches_measurement():
    runner = CliRunner()
    # seq 40 > index_topk 16: the sparse path, its KL loss and the MTP layer all run
    args = ["profile", "glm5-tiny", "--seq", "40", "--batch", "2", "--steps", "1", "--set", "index_topk=16"]
    res = runner.invoke(app, [*args, "--json"])
    assert res.exit_code == 0, res.output
    out = json.loads(res.output)
    assert out["flops_measured"] > 0 and out["peak_memory_measured_bytes"] > 0
    assert (out["flops_estimated"] + grouped_padding_flops(out)) / out["flops_measured"] == pytest.approx(
        1.0, abs=0.02
    )
    assert out["decode_flops_estimated"] == out["decode_flops_measured"]
    # the timed decoding steps' bytes (glmlab.accounting.traffic, weights in the stored fp32 here;
    # positions 36-39 after a 35-token prefill) at the measured copy rate: a bound they cannot beat
    cfg = load_config("glm5-tiny", ["index_topk=16"])
    steps = [decode_step_bytes(cfg, c, 2, weight_dtype="fp32", cache_dtype="fp32") for c in range(37, 41)]
    bytes_read = sum(b["total"] for b in steps) / 4
    assert out["decode_bytes_estimated"] == bytes_read
    assert out["decode_roofline_s"] == pytest.approx(bytes_read / out["copy_bandwidth_bytes_per_s"])
    assert 0 < out["decode_roofline_s"] < out["decode_step_time_s"]
    # On a GPU this 14 MB model's peak is mostly fixed allocations (the estimate was 0.45 of it on
    # an H200); the GPU's memory check runs at the H200 preset's scale (glm5-1b: estimate 1.004 of
    # the measured 112 GB, experiments/results/h200-session6/).
    if out["device"] == "cpu":
        assert out["peak_memory_estimated_bytes"] / out["peak_memory_measured_bytes"] == pytest.approx(
            1.0, abs=0.25
        )
    assert 0 < out["mfu"] < 1.5
    res = runner.invoke(app, ["profile", "glm5-tiny", "--device", "tpu"])
    assert res.exit_code != 0 and "use auto, cpu, cuda or cuda:N" in str(res.exception)


def grouped_padding_flops(profile: dict) -> int:
    """What the GPU's grouped experts multiply beyond the routed pairs in one training step: each
    MoE call's layout has E*(GROUP_ALIGN-1) rows of padding (`Experts.grouped`), forward and
    backward (3 x 2 products of d x I, gate and up, plus one of I x d). The calculator counts the
    pairs: at glm5-tiny's 80 tokens the padding is 6% of the step, at glm5-1b's 16K tokens 0.3%."""
    if not profile["device"].startswith("cuda"):
        return 0
    m = load_config(profile["config"], ["index_topk=16"]).model
    calls = sum(kind.moe for kind in layer_kinds(m)) + m.num_nextn_predict_layers * mtp_layer_kind(m).moe
    per_row = 3 * 2 * 3 * m.hidden_size * m.moe_intermediate_size
    return calls * m.n_routed_experts * (GROUP_ALIGN - 1) * per_row


def test_profile_decodes_within_the_sequence_length():
    """A preset's default --seq is often its max_position_embeddings (glm5-1b: 4096): the decoding
    steps then run inside the sequence instead of past it; a --seq outside the model is refused."""
    runner = CliRunner()
    at_limit = [
        "--seq",
        "48",
        "--batch",
        "1",
        "--steps",
        "1",
        "--set",
        "max_position_embeddings=48",
        "--set",
        "seq_len=48",
    ]
    res = runner.invoke(app, ["profile", "glm5-tiny", *at_limit, "--json"])
    assert res.exit_code == 0, res.output
    out = json.loads(res.output)
    assert out["decode_flops_estimated"] == out["decode_flops_measured"] > 0
    for seq, message in (("49", "exceeds max_position_embeddings 48"), ("5", "leaves no room to decode")):
        res = runner.invoke(app, ["profile", "glm5-tiny", *at_limit[2:], "--seq", seq])
        assert isinstance(res.exception, GlmlabError) and message in str(res.exception)


def test_a_counter_made_first_counts_the_kernels():
    """The kernels register their formulas on import and a counter copies the registry when made;
    the model imports them at its first GPU forward, after `profile` made its counter. In a fresh
    process (here every kernel module is already imported) a new counter must know them."""
    code = (
        "from glmlab.measure import flop_counter\n"
        "names = {str(op) for op in flop_counter().flop_registry}\n"
        "print(sorted(n for n in names if n.startswith('glmlab.')))\n"
    )
    found = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert "glmlab.flex_masked_flops" in found
    if importlib.util.find_spec("triton") is not None:
        assert "glmlab.index_scores" in found and "glmlab.sparse_mla_fwd" in found, found


def test_grouped_gemm_flops_are_counted():
    """torch._grouped_mm (the GPU's routed experts) is invisible to FlopCounterMode's own table:
    glmlab's formula counts its forward and both gradients, 3 x 2MKN."""
    a = torch.randn(16, 16, dtype=torch.bfloat16, requires_grad=True)
    b = torch.randn(2, 16, 8, dtype=torch.bfloat16, requires_grad=True)
    with flop_counter() as counter:
        out = torch._grouped_mm(a, b, offs=torch.tensor([8, 16], dtype=torch.int32))
        out.backward(torch.randn_like(out))
    assert counter.get_total_flops() == 3 * 2 * 16 * 16 * 8
