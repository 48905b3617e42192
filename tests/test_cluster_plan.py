"""`glmlab plan`: hand-computed memory, traffic and bubble on small layouts, errors, the search."""

import json
import math
from dataclasses import replace

import pytest
from typer.testing import CliRunner

from glmlab.accounting.cluster import (
    GPUS,
    SHARDED,
    Layout,
    PlanOptions,
    ep_rows_per_token,
    plan_layout,
    plan_summary,
    search_layouts,
)
from glmlab.accounting.memory import routed_activation_bytes
from glmlab.accounting.params import layer_params, parameter_counts
from glmlab.cli import app
from glmlab.config import load_config
from glmlab.errors import GlmlabError


@pytest.fixture(scope="module")
def tiny():
    return load_config("glm5-tiny")


def _routed(cfg) -> int:
    """Routed-expert parameters of the main layers and the MTP layer of glm5-tiny."""
    m = cfg.model
    per_layer = layer_params(m, True, True)["routed_experts"]
    return per_layer * (m.num_hidden_layers - m.first_k_dense_replace + m.num_mtp_modules)


def test_one_gpu_replicated_states_are_18_bytes_per_parameter(tiny):
    opts = PlanOptions(seq_len=256, global_batch=4, sharding="none", optimizer="adamw")
    plan = plan_layout(tiny, Layout(), opts)
    P = parameter_counts(tiny.model)["total_with_mtp"]
    assert plan.memory["weights"] == 2 * P
    assert plan.memory["gradients"] == 4 * P
    assert plan.memory["optimizer"] == 12 * P
    assert plan.memory["transient"] == 0
    assert plan.bubble == 0 and plan.micro_batches == 4
    assert all(v == 0 for v in plan.comm_bytes.values())


def test_fsdp_and_expert_parallel_split_the_states(tiny):
    """DP2 x EP2: experts halve by EP (one replica each, nothing left to shard), the rest halves by FSDP."""
    P = parameter_counts(tiny.model)["total_with_mtp"]
    routed = _routed(tiny)
    opts = PlanOptions(seq_len=256, global_batch=4, sharding="fsdp", optimizer="muon")
    plan = plan_layout(tiny, Layout(dp=2, ep=2), opts)
    assert plan.memory["weights"] == pytest.approx(4 * ((P - routed) / 2 + routed / 2))
    assert plan.memory["optimizer"] == pytest.approx(4 * P / 2)  # Muon: one fp32 momentum
    # all-to-all: 2 micro-batches x 6 MoE layers (5 main + MTP) x 256 tokens, each sent once to
    # the other rank when it holds one of the token's k=2 of 8 experts (1 - C(4,2)/C(8,2) = 22/28),
    # that row (d=128, bf16) 4 times (dispatch, combine, both backward), plus 2 gates and 2 ids
    # (4 bytes each) forward and their gradient backward; a recomputed layer sends its forward again
    per_row = 4 * 128 * 2 + 2 * 2 * 2 * 4
    assert plan.comm_bytes["ep_all_to_all"] == pytest.approx(2 * 6 * 256 * 22 / 28 * per_row)
    again = plan_layout(tiny, Layout(dp=2, ep=2), replace(opts, recompute="full"))
    assert again.comm_bytes["ep_all_to_all"] == pytest.approx(plan.comm_bytes["ep_all_to_all"] * 3 / 2)
    # the padded dispatch sends every token to the other rank: 28/22 as many rows as exact here
    padded_cfg = replace(tiny, train=replace(tiny.train, ep_dispatch="padded"))
    padded = plan_layout(padded_cfg, Layout(dp=2, ep=2), opts)
    assert padded.comm_bytes["ep_all_to_all"] == pytest.approx(2 * 6 * 256 * per_row)
    # and its experts lay out every received row's k slots, twice the 256 x 2 pairs a rank holds,
    # in each of the 6 MoE layers of the micro-batch in flight
    slots = routed_activation_bytes(tiny.model, 2 * 512, SHARDED, "cuda")
    extra = 6 * (slots - routed_activation_bytes(tiny.model, 512, SHARDED, "cuda"))
    assert padded.memory["activations"] == pytest.approx(plan.memory["activations"] + extra)
    # FSDP: each micro-batch gathers the other half of the non-expert weights twice in bf16
    # and reduce-scatters their fp32 gradients
    assert plan.comm_bytes["fsdp_all_gather"] == pytest.approx(2 * 2 * 2 * (P - routed) / 2)
    assert plan.comm_bytes["fsdp_reduce_scatter"] == pytest.approx(2 * 4 * (P - routed) / 2)


def test_pipeline_bubble_and_sends(tiny):
    opts = PlanOptions(seq_len=256, global_batch=8, micro_batch=1, sharding="zero1")
    plan = plan_layout(tiny, Layout(pp=2), opts)
    assert plan.micro_batches == 8
    assert plan.bubble == pytest.approx(1 / 9)
    assert plan.comm_bytes["pp_send"] == 8 * 2 * 256 * 128 * 2  # activations forward, gradients back
    assert plan.times["with_bubble"] == pytest.approx(plan.times["compute"] * 9 / 8)


def test_context_parallel_ring_passes_each_attention_types_kv():
    """Ring attention passes K and V round the CP ranks: for MLA the expanded per-head K/V
    (4 heads x (qk 48 + v 32) values in glm5-tiny), for GQA only its K/V heads (2 x 2 x 48)."""
    opts = PlanOptions(seq_len=256, global_batch=1, micro_batch=1, sharding="zero1")
    gqa = ["use_dsa=false", "attention_type=gqa", "num_key_value_heads=2", "head_dim=48"]
    per_value = {}
    for name, extra in (("mla", []), ("gqa", gqa)):
        cfg = load_config("glm5-tiny", extra)
        m = cfg.model
        plan = plan_layout(cfg, Layout(dp=1, cp=2), opts)
        # one micro-batch, every layer, 3 passes (forward K/V, backward K/V and their gradients)
        per_value[name] = plan.comm_bytes["cp_ring"] / (m.num_hidden_layers * 3 * (2 - 1) * 256 / 2 * 2)
    assert per_value == {"mla": 4 * (48 + 32), "gqa": 2 * 2 * 48}


def test_step_time_is_compute_at_the_efficiency_on_one_gpu(tiny):
    from glmlab.accounting.flops import flops_report

    opts = PlanOptions(seq_len=256, global_batch=4, gpu=GPUS["h100"], efficiency=0.5)
    plan = plan_layout(tiny, Layout(), opts)
    flops = flops_report(tiny, 256, "train", "glmlab", True, device="cuda").per_token * 4 * 256
    assert plan.times["step"] == pytest.approx(flops / (989e12 * 0.5))
    assert plan.mfu == pytest.approx(0.5)


@pytest.mark.parametrize(
    ("layout", "message"),
    [(Layout(dp=3, ep=3), "does not divide the 8 routed experts"), (Layout(tp=3), "attention heads"),
     (Layout(dp=3), "not a multiple of DP"), (Layout(pp=7), "exceeds the 6 layers")],
)  # fmt: skip
def test_impossible_layouts_are_one_line_errors(tiny, layout, message):
    with pytest.raises(GlmlabError, match=message):
        plan_layout(tiny, layout, PlanOptions(seq_len=256, global_batch=4))


def test_search_lists_fitting_layouts_fastest_first(tiny):
    opts = PlanOptions(seq_len=256, global_batch=4)
    plans = search_layouts(tiny, 2, opts, {})
    steps = [p.times["step"] for p in plans]
    assert steps == sorted(steps) and all(p.fits for p in plans)
    assert {str(p.layout) for p in plans} >= {
        "TP1 PP1 CP1 DP2 EP1",
        "TP1 PP1 CP1 DP2 EP2",
        "TP1 PP2 CP1 DP1 EP1",
    }
    pinned = search_layouts(tiny, 2, opts, {"ep": 2})
    assert pinned and all(p.layout.ep == 2 for p in pinned)


def test_glm5_does_not_fit_one_gpu_but_fits_a_cluster():
    cfg = load_config("glm5")
    one = plan_summary(cfg, 1, PlanOptions(seq_len=4096, global_batch=8), {})
    assert not one["plans"][0]["fits"]
    opts = PlanOptions(seq_len=4096, global_batch=1024, gpu=GPUS["h100"], optimizer="muon")
    found = plan_summary(cfg, 256, opts, {"pp": 16}, search=True, top=3)
    assert found["plans"] and all(p["fits"] and p["layout"]["pp"] == 16 for p in found["plans"])


def test_ep_imbalance_makes_expert_parallel_layouts_wait_for_the_busiest_rank(tiny):
    """`ep_imbalance` adds (imbalance - 1) x each GPU's routed-expert FLOPs to an EP layout's compute
    time (the calculator's routed_experts component); layouts without EP do not change."""
    from dataclasses import replace

    from glmlab.accounting import flops_report

    even = PlanOptions(seq_len=256, global_batch=256, micro_batch=8)  # compute-bound: FSDP's traffic hides
    skewed = replace(even, ep_imbalance=1.5)
    ep, dp = Layout(dp=2, ep=2), Layout(dp=2)
    a, b = plan_layout(tiny, ep, even), plan_layout(tiny, ep, skewed)
    report = flops_report(tiny, 256, "train", "glmlab", True, device="cuda")
    routed_per_gpu = report.by_component()["routed_experts"] / report.tokens * 256 * 256 / 2
    wait = 0.5 * routed_per_gpu / (even.gpu.peak * even.efficiency)
    assert b.times["compute"] - a.times["compute"] == pytest.approx(wait) and wait > 0
    assert b.times["step"] - a.times["step"] == pytest.approx(wait) and b.mfu < a.mfu
    assert plan_layout(tiny, dp, skewed).times == plan_layout(tiny, dp, even).times
    with pytest.raises(GlmlabError, match="ep-imbalance"):
        plan_layout(tiny, ep, replace(even, ep_imbalance=0.9))


def test_cli_plan_takes_recompute_from_the_config_unless_given():
    runner = CliRunner()

    def activations(*args: str) -> float:  # the masked path pinned: its explicit probabilities are per layer
        pinned = ["--set", "dsa_impl=mask"]
        out = runner.invoke(app, ["plan", "glm5-tiny", "--gpus", "1", "--json", *pinned, *args])
        assert out.exit_code == 0, out.output
        return json.loads(out.output)["plans"][0]["memory"]["activations"]

    kept = activations()
    recomputed = activations("--set", "train.recompute=full")
    assert recomputed < 0.6 * kept  # glm5-tiny: the head's logits stay, the layers keep their inputs
    assert activations("--set", "train.recompute=full", "--recompute", "none") == kept


def test_cli_plan_json_and_errors():
    runner = CliRunner()
    out = runner.invoke(app, ["plan", "glm5-tiny", "--gpus", "2", "--ep", "2", "--json"])
    assert out.exit_code == 0, out.output
    summary = json.loads(out.output)
    assert summary["plans"][0]["layout"] == {"tp": 1, "pp": 1, "cp": 1, "dp": 2, "ep": 2, "gpus": 2, "edp": 1}
    bad = runner.invoke(app, ["plan", "glm5-tiny", "--gpus", "4", "--dp", "3"])
    assert bad.exit_code != 0 and "does not match --gpus 4" in str(bad.exception)


def test_rows_each_dispatch_sends():
    """Padded: a token to every other rank. Exact: to each rank holding one of its k experts; at EP=2
    of 64 experts with k = 8 all but C(32,8) / C(64,8) = 0.24% of tokens have one on the other rank,
    at GLM-5's EP=64 of 256 a token reaches 7.56 of the 63 other ranks."""
    assert ep_rows_per_token(64, 8, 2, padded=True) == 1.0
    assert ep_rows_per_token(256, 8, 64, padded=True) == 63
    assert ep_rows_per_token(64, 8, 2) == pytest.approx(1 - math.comb(32, 8) / math.comb(64, 8))
    assert ep_rows_per_token(256, 8, 64) == pytest.approx(7.5558, abs=1e-4)
    assert ep_rows_per_token(64, 8, 1) == ep_rows_per_token(64, 8, 1, padded=True) == 0
