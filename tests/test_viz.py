"""Seeing inside runs and models (issue 14): run plots drawn from metrics.jsonl, TensorBoard
events read back with tensorboard's own reader, the inspector's routing and DSA maps against
what the model computes, its MTP drafts against speculative decoding, and the commands' errors.
One short real run (a 2-layer glm5-tiny, byte tokenizer, 8 steps) serves every test."""

from __future__ import annotations

import importlib.util
import json
import re
import shlex
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from glmlab import cli
from glmlab.checkpoint import load_model
from glmlab.config import load_config
from glmlab.errors import GlmlabError
from glmlab.generate import Generator
from glmlab.model.moe import MoE
from glmlab.train.loop import Trainer
from glmlab.viz.inspect import inspect, inspect_layers, mtp_drafts
from glmlab.viz.inspect_figures import inspection_figures, mtp_figure
from glmlab.viz.plots import run_figures
from glmlab.viz.runs import load_runs

SMALL = """
extends: glm5-tiny
vocab_size: 257
hidden_size: 32
num_hidden_layers: 4  # the lessons inspect layers 2 and 3
first_k_dense_replace: 1
intermediate_size: 64
moe_intermediate_size: 16
n_routed_experts: 4
num_experts_per_tok: 2
num_attention_heads: 2
q_lora_rank: 16
kv_lora_rank: 16
qk_nope_head_dim: 8
qk_rope_head_dim: 8
v_head_dim: 8
index_topk: 8
index_n_heads: 8
index_head_dim: 16
num_nextn_predict_layers: 2
max_position_embeddings: 1024  # the DSA lesson reads an 868-byte prompt
train:
  tokenizer: byte
  seq_len: 32
  batch_size: 2
  steps: 8
  warmup_steps: 0
  dsa_warmup_steps: 2
  log_interval: 1
  eval_interval: 4
  eval_batches: 1
  checkpoint_interval: 8
  tensorboard: true
"""
PROMPT = "def __init__(self, name, value):\n"  # 34 bytes: longer than index_topk, so DSA selects


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    """A real short training run with TensorBoard on."""
    root = tmp_path_factory.mktemp("viz")
    data = root / "text.txt"
    data.write_text(Path(json.__file__).read_text() * 3)
    (root / "small.yaml").write_text(SMALL)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("GLMLAB_CACHE", str(root / "cache"))
        cfg = load_config(root / "small.yaml", [f"train.data={data}"])
        Trainer(cfg, root / "run", resume=False, device="cpu").run(show_progress=False)
    torch.set_num_threads(threads)
    return root / "run"


def metrics(run: Path) -> tuple[list[dict], list[dict]]:
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return [r for r in records if "loss" in r], [r for r in records if "val_loss" in r]


def line(ax, label: str):
    (found,) = [ln for ln in ax.get_lines() if ln.get_label() == label]
    return found


# ---- glmlab plot --------------------------------------------------------------------------------


def test_run_figures_draw_the_logged_values_of_two_runs(run, tmp_path):
    other = tmp_path / "other"
    shutil.copytree(run, other)
    train, val = metrics(run)
    steps = [r["step"] for r in train]
    runs = load_runs([str(run), str(other)])
    figs = run_figures(runs)
    assert set(figs) == {"losses_vs_steps", "losses_vs_tokens", "schedule_and_speed", "expert_load",
                         "indexer_recall"}  # fmt: skip
    axes = {ax.get_title(): ax for ax in figs["losses_vs_steps"].axes}
    assert set(axes) == {"LM loss (nats/token)", "MTP loss", "indexer KL", "balance loss"}
    lm = line(axes["LM loss (nats/token)"], "run")
    assert list(lm.get_xdata()) == steps and list(lm.get_ydata()) == [r["lm_loss"] for r in train]
    v = line(axes["LM loss (nats/token)"], "run val")
    assert list(v.get_xdata()) == [r["step"] for r in val] == [4, 8]
    assert list(v.get_ydata()) == [r["val_loss"] for r in val]
    for depth in (1, 2):  # depth 2: each MTP depth is logged and drawn on its own
        mtp = line(axes["MTP loss"], f"run depth {depth}")
        assert list(mtp.get_ydata()) == [r[f"mtp_loss_{depth}"] for r in train]
    assert line(axes["LM loss (nats/token)"], "other").get_color() != lm.get_color()  # one colour per run
    tokens = {ax.get_title(): ax for ax in figs["losses_vs_tokens"].axes}
    assert list(line(tokens["indexer KL"], "run").get_xdata()) == [s * 2 * 32 for s in steps]
    speed = {ax.get_title(): ax for ax in figs["schedule_and_speed"].axes}
    mfu = line(speed["MFU (%)"], "run")
    assert list(mfu.get_ydata()) == pytest.approx([100 * r["mfu"] for r in train if r["mfu"] is not None])
    assert list(line(speed["learning rate"], "run").get_ydata()) == [r["lr"] for r in train]
    recall = line(figs["indexer_recall"].axes[0], "run")
    assert list(recall.get_ydata()) == [r["indexer_recall"] for r in train]
    heat, final = (ax.images[0] for ax in figs["expert_load"].axes[:2])
    assert np.allclose(heat.get_array(), np.array([r["expert_imbalance_per_layer"] for r in train]).T)
    counts = np.array(train[-1]["expert_load"], dtype=float)  # [routers, E]: layers 1-3 and both MTP depths
    assert counts.shape == (5, 4) and runs[0].routers == ["layer 1", "layer 2", "layer 3", "mtp 1", "mtp 2"]
    assert np.allclose(final.get_array(), counts / counts.mean(-1, keepdims=True))
    import matplotlib.pyplot as plt

    plt.close("all")


def test_plot_command_writes_pngs_and_refuses_a_folder_that_is_not_a_run(run, tmp_path, run_cli):
    code, out, _ = run_cli("plot", str(run), "--out", str(tmp_path / "png"))
    assert code == 0
    names = sorted(p.name for p in (tmp_path / "png").iterdir())
    assert names == ["expert_load.png", "indexer_recall.png", "losses_vs_steps.png", "losses_vs_tokens.png",
                     "schedule_and_speed.png"]  # fmt: skip
    assert all((tmp_path / "png" / n).read_bytes()[:4] == b"\x89PNG" for n in names)
    code, _, err = run_cli("plot", str(tmp_path / "png"))
    assert code == 2 and err.count("\n") == 1 and "is not a run folder" in err


def test_plot_without_matplotlib_is_one_line(run, tmp_path, run_cli, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # `import matplotlib` now raises ImportError
    code, _, err = run_cli("plot", str(run), "--out", str(tmp_path))
    assert code == 2 and err.count("\n") == 1 and "pip install 'glmlab[plot]'" in err


# ---- TensorBoard --------------------------------------------------------------------------------


def test_tensorboard_events_hold_the_logged_values(run):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    train, val = metrics(run)
    events = EventAccumulator(str(run / "tensorboard"), size_guidance={"scalars": 0, "histograms": 0})
    events.Reload()
    for key in ("lm_loss", "mtp_loss_2", "indexer_loss", "tokens_per_s", "lr"):
        got = events.Scalars(f"train/{key}")
        assert [e.step for e in got] == [r["step"] for r in train]
        assert [e.value for e in got] == pytest.approx([r[key] for r in train], rel=1e-6)
    assert [e.value for e in events.Scalars("val/loss")] == pytest.approx([r["val_loss"] for r in val])
    imbalance = events.Scalars("expert_imbalance/layer 1")
    assert [e.value for e in imbalance] == pytest.approx([r["expert_imbalance_per_layer"][0] for r in train])
    loads = events.Histograms("expert_load/mtp 2")
    assert [h.histogram_value.sum for h in loads] == [sum(r["expert_load"][4]) for r in train]
    assert all(h.histogram_value.num == 4 for h in loads)  # one value per expert
    bias = events.Histograms("router_bias/layer 1")[-1].histogram_value
    final = load_model(run).model.routers()[0].e_score_correction_bias
    assert bias.num == 4 and bias.sum == pytest.approx(float(final.sum()), abs=1e-6)
    assert bias.min == pytest.approx(float(final.min())) and bias.max == pytest.approx(float(final.max()))


def test_tensorboard_missing_is_one_line(run, monkeypatch, tmp_path):
    from glmlab.viz.tensorboard import TensorBoardLog

    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)
    with pytest.raises(GlmlabError, match=r"pip install 'glmlab\[tensorboard\]'"):
        TensorBoardLog(tmp_path, load_model(run).model)


# ---- glmlab inspect -----------------------------------------------------------------------------


class Seen:
    """What the model itself computed in one forward pass, seen through hooks of the test's own."""

    def __init__(self, model) -> None:
        self.topk, self.ffn_in = {}, {}
        self.handles = []
        for i, layer in enumerate(model.model.layers):
            self.handles.append(layer.self_attn.register_forward_hook(self._topk(i)))
            if isinstance(layer.mlp, MoE):
                self.handles.append(layer.mlp.register_forward_pre_hook(self._ffn(i)))

    def _topk(self, i):
        return lambda module, args, out: self.topk.__setitem__(i, out.topk)

    def _ffn(self, i):
        return lambda module, args: self.ffn_in.__setitem__(i, args[0])


def test_inspector_maps_are_the_models_own_choices(run):
    loaded = load_model(run)
    model, ids = loaded.model, loaded.tokenizer.encode(PROMPT)
    seen = Seen(model)
    with torch.inference_mode():
        out = model(torch.tensor([ids]), labels=torch.tensor([ids]))
    layers = inspect_layers(model, ids, [0, 1])
    for item in layers:  # DSA: the keys the inspector marks are the top-k the model attended to
        dsa = item.dsa
        assert dsa.sparse and len(dsa.selected) == len(ids)
        indices, valid = seen.topk[item.layer]
        model_keys = [sorted(k[v].tolist()) for k, v in zip(indices[0], valid[0], strict=True)]
        assert dsa.selected == model_keys
        assert all(len(keys) == min(8, q + 1) for q, keys in enumerate(dsa.selected))
        assert np.allclose(np.array(dsa.attention).sum(-1), 1.0, atol=1e-5)
        assert all(v is None for v in dsa.scores[0][1:])  # no score above the diagonal
        picked = [sum(dsa.attention[q][k] for k in keys) for q, keys in enumerate(dsa.selected)]
        assert dsa.recall == pytest.approx(picked, abs=1e-5)
        assert dsa.recall[:8] == pytest.approx([1.0] * 8, abs=1e-5)  # the first 8 queries keep every key
    assert layers[0].routing is None  # layer 0 is dense
    routing = layers[1].routing  # the routing map: the router's choice on the layer's own input
    with torch.no_grad():
        chosen = model.model.layers[1].mlp.gate(seen.ffn_in[1].reshape(len(ids), -1))
    assert routing.experts == chosen.indices.tolist()
    assert np.allclose(routing.gates, chosen.gates.tolist())
    assert routing.counts() == out.expert_counts[0].tolist()
    assert all(0 < s < 1 for s in routing.shared_share)
    mlp = model.model.layers[1].mlp  # the share of the shared expert against the routed ones alone
    with torch.no_grad():
        x = seen.ffn_in[1].reshape(len(ids), -1)
        outputs = (mlp.experts(x, mlp.gate(x)), mlp.shared_experts(x))
        routed, shared = (y.float().norm(dim=-1) for y in outputs)
    assert routing.shared_share == pytest.approx((shared / (shared + routed)).tolist(), abs=1e-4)
    u = seen.ffn_in[1].reshape(len(ids), -1).float()
    assert routing.common_share == pytest.approx((u.mean(0).norm() ** 2 / u.pow(2).sum(-1).mean()).item())
    dense = routing.dense()
    assert dense.shape == (len(ids), 4) and ((dense > 0).sum(-1) == 2).all()
    figs = inspection_figures(inspect(loaded, PROMPT, layer=1, max_new_tokens=0))
    assert sorted(figs) == ["layer1_dsa", "layer1_routing", "mla_cache"]
    assert np.allclose(figs["layer1_routing"].axes[0].images[0].get_array().filled(0), dense.numpy())
    import matplotlib.pyplot as plt

    plt.close("all")


def test_mtp_drafts_match_speculative_decoding(tiny):
    """Teacher-forced drafts count the same acceptances as the speculative decoder itself, with
    MTP layers that pass the token embedding through (so drafts are sometimes accepted)."""
    model = tiny("num_nextn_predict_layers=2", "vocab_size=64")
    d = model.config.hidden_size
    with torch.no_grad():
        for module in model.mtp:
            module.eh_proj.weight.zero_()
            module.eh_proj.weight[:, :d] = torch.eye(d)
    prompt = [5, 9, 2, 33, 17, 8, 41, 3, 12, 60, 7, 21]
    gen = Generator(model)
    plain = gen.generate(prompt, 30)
    spec = gen.generate(prompt, 30, speculative=2).speculative
    mtp = mtp_drafts(model, prompt + plain.ids, len(prompt), 2)
    assert mtp.accepted == spec.accepted and mtp.verified == spec.verified
    assert 0 < sum(mtp.accepted) < sum(mtp.verified)  # both outcomes occur
    emitted = [t for step in mtp.steps for t in step.emitted]
    assert emitted == plain.ids[1 : 1 + len(emitted)]  # steps tile the continuation after its first token
    for step in mtp.steps:
        assert step.drafts[: step.accepted] == step.emitted[: step.accepted]
        if step.accepted < len(step.drafts):  # the last draft shown is the rejected one
            assert step.drafts[-1] != step.emitted[step.accepted]
    bars = mtp_figure(mtp, "tiny").axes[1].patches  # accepted drafts per step, then the rejected ones
    assert [b.get_height() for b in bars[: len(mtp.steps)]] == [s.accepted for s in mtp.steps]
    import matplotlib.pyplot as plt

    plt.close("all")


def test_inspect_layers_reject_a_layer_out_of_range(run):
    loaded = load_model(run)
    with pytest.raises(GlmlabError, match="--layer -1 is out of range: this model has layers 0-3"):
        inspect(loaded, PROMPT, layer=-1)


def test_inspect_command_json_pngs_and_errors(run, tmp_path, run_cli):
    code, out, _ = run_cli("inspect", str(run), "--prompt", PROMPT, "--layer", "1", "--max-new-tokens", "6",
                           "--out", str(tmp_path / "insp"), "--json")  # fmt: skip
    assert code == 0
    data = json.loads(out)
    assert [x["layer"] for x in data["layers"]] == [1]
    assert data["tokens"][0] == "d" and len(data["token_ids"]) == len(PROMPT)
    assert data["layers"][0]["dsa"]["mean_recall"] <= 1.0
    per = data["cache"]["per_token"]  # fp32, 4 layers: latent (16 + 8) x 4 x 4, indexer keys 16 x 4 x 4
    assert (per["latent"], per["indexer_keys"], per["expanded"]) == (384, 256, 4 * 2 * (16 + 8) * 4)
    assert len(data["mtp"]["accepted"]) == 2
    names = sorted(Path(p).name for p in data["pngs"])
    assert names == ["layer1_dsa.png", "layer1_routing.png", "mla_cache.png", "mtp_drafts.png"]
    code, out, _ = run_cli(
        "inspect", str(run), "--prompt", "x = 1", "--layer", "0", "--out", str(tmp_path / "b")
    )
    assert code == 0 and "acceptance depth 1" in out and "MLA cache per token" in out
    code, _, err = run_cli("inspect", str(run), "--prompt", "x", "--layer", "4")
    assert code == 2 and err.count("\n") == 1 and "--layer 4 is out of range" in err


def test_inspect_names_a_gqa_cache_by_its_kv_heads():
    """A GQA model has no latent: the summary and the figure show its K/V bytes, not 'latent 0 B'."""
    from types import SimpleNamespace

    from glmlab.accounting.memory import kv_cache_bytes_per_token
    from glmlab.viz.inspect_figures import cache_figure
    from glmlab.viz.inspect_report import cache_line

    for extra, words in (([], "MLA cache per token"), (GQA, "K/V cache per token")):
        per = kv_cache_bytes_per_token(load_config("glm5-tiny", extra), "bf16")
        cache = {"dtype": "bf16", "per_token": per, "prompt_latent_bytes": 10 * per["total"],
                 "prompt_expanded_bytes": 10 * per["expanded"]}  # fmt: skip
        line = cache_line(SimpleNamespace(cache=cache))
        assert line.startswith(words) and ("latent 0 B" not in line)
        assert f"{per['total']:,} B" in line
        if importlib.util.find_spec("matplotlib"):
            title = cache_figure(cache, "m").axes[0].get_title()
            assert ("MLA cache" in title) == (not extra) and ("K/V cache" in title) == bool(extra)


GQA = ["use_dsa=false", "attention_type=gqa", "num_key_value_heads=2", "head_dim=48"]


# ---- docs/lessons -------------------------------------------------------------------------------

LESSONS = Path(__file__).resolve().parent.parent / "docs" / "lessons"
FENCE = re.compile(r"```(\w+)\n(.*?)```", re.S)


def lesson_blocks(path: Path) -> list[tuple[str, str]]:
    return [(kind, body) for kind, body in FENCE.findall(path.read_text())]


@pytest.mark.slow
@pytest.mark.parametrize("lesson", sorted(p.name for p in LESSONS.glob("*.md")))
def test_every_lesson_command_runs_and_draws_what_the_lesson_shows(
    lesson, run, tmp_path, run_cli, monkeypatch
):
    """Runs each `glmlab` line of the lesson's bash blocks in a folder where runs/tiny-default is
    this file's short run (a smaller model than the quickstart's) and docs/ is the repository's;
    `glmlab train glm5-tiny` trains that smaller model for 4 steps. Each image the lesson shows
    must come out of its commands under the same file name, and each `text` block (output of a
    command on a preset, which does not depend on a trained run) must appear in that output."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "runs").mkdir()
    (tmp_path / "runs" / "tiny-default").symlink_to(run)
    (tmp_path / "docs").symlink_to(LESSONS.parent)
    (tmp_path / "small.yaml").write_text(SMALL)
    (tmp_path / "text.txt").write_text(Path(json.__file__).read_text() * 3)
    monkeypatch.setenv("GLMLAB_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(cli.console, "width", 250)  # tables as wide as the lesson shows them
    blocks = lesson_blocks(LESSONS / lesson)
    commands = [line for kind, body in blocks if kind == "bash" for line in body.splitlines()]
    assert commands and all(c.startswith("glmlab ") for c in commands)
    outputs = {}
    for command in commands:
        args = shlex.split(command)[1:]
        if args[:2] == ["train", "glm5-tiny"]:
            args = ["train", "small.yaml", *args[2:], "--data", "text.txt", "--steps", "4"]
        code, out, err = run_cli(*args)
        assert code == 0, f"{command}: {err}"
        outputs[command] = " ".join((out + err).split())
    for (kind, body), (next_kind, shown) in zip(blocks, blocks[1:], strict=False):
        if kind == "bash" and next_kind == "text":
            said = outputs[body.splitlines()[-1]]
            for row in shown.splitlines():
                assert " ".join(row.split()) in said, row
    drawn = {p.name for base in (tmp_path, run) for p in base.rglob("*.png")}
    shown = re.findall(r"!\[[^\]]*\]\(img/[^)]*?([^/)]+\.png)\)", (LESSONS / lesson).read_text())
    assert shown and set(shown) <= drawn
    for name in re.findall(r"\]\((img/[^)]+\.png)\)", (LESSONS / lesson).read_text()):
        assert (LESSONS / name).is_file(), name
