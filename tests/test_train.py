"""The trainer: loss terms, bias balancing, DSA stages, schedule, resume, signals, errors
(issue 3, parts 2-5). A 2-layer model on a small text file keeps every test to seconds."""

from __future__ import annotations

import gc
import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from glmlab.checkpoint import load_model
from glmlab.config import load_config
from glmlab.errors import GlmlabError
from glmlab.model import CausalLMOutput
from glmlab.model.losses import total_loss
from glmlab.train import loop
from glmlab.train.loop import Trainer, update_router_biases
from glmlab.train.schedule import DENSE_WARMUP, SPARSE, lr_at, stage_at

SMALL = """
extends: glm5-tiny
vocab_size: 257
hidden_size: 32
num_hidden_layers: 2
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
max_position_embeddings: 128
train:
  tokenizer: byte
  seq_len: 32
  batch_size: 2
  steps: 8
  warmup_steps: 0
  min_lr_ratio: 1.0
  dsa_warmup_steps: 2
  log_interval: 1
  eval_interval: 4
  eval_batches: 1
  checkpoint_interval: 4
"""


pytestmark = pytest.mark.usefixtures("one_thread")  # conftest: tiny models on one thread


@pytest.fixture
def small(tmp_path, monkeypatch) -> tuple[Path, Path]:
    """(config path, data file) for a model that trains in well under a second per step."""
    monkeypatch.setenv("GLMLAB_CACHE", str(tmp_path / "cache"))
    config = tmp_path / "small.yaml"
    config.write_text(SMALL)
    data = tmp_path / "text.txt"
    data.write_text(Path(json.__file__).read_text() * 3)
    return config, data


def records(run: Path) -> dict[int, dict]:
    """Training records (not validation) of metrics.jsonl by step."""
    lines = (run / "metrics.jsonl").read_text().splitlines()
    return {r["step"]: r for r in map(json.loads, lines) if "loss" in r}


def make_trainer(small, run: Path, overrides=(), resume=False) -> Trainer:
    config, data = small
    cfg = load_config(config, [f"train.data={data}", *overrides])
    return Trainer(cfg, run, resume=resume, device="cpu")


# ---- the loss -----------------------------------------------------------------------------


def test_each_loss_term_enters_with_its_weight():
    cfg = load_config("glm5-tiny", ["mtp_lambda=0.3", "balance_alpha=0.01", "indexer_loss_weight=2.0"])
    t = lambda v: torch.tensor(v)  # noqa: E731
    out = CausalLMOutput(logits=t(0.0), hidden_states=t(0.0), loss=t(2.0), mtp_losses=[t(3.0), t(5.0)],
                         balance_loss=t(1.5), indexer_loss=t(0.25))  # fmt: skip
    main = total_loss(out, cfg.train, dense_warmup=False)
    assert math.isclose(
        float(main.total), 2.0 + 0.3 * (3.0 + 5.0) / 2 + 0.01 * 1.5 + 2.0 * 0.25, rel_tol=1e-6
    )
    parts = {k: float(v) for k, v in main.parts.items()}
    assert parts == {"lm_loss": 2.0, "mtp_loss": 4.0, "balance_loss": 1.5, "indexer_loss": 0.25}
    for field, term in (("mtp_lambda", 4.0), ("balance_alpha", 1.5), ("indexer_loss_weight", 0.25)):
        bumped = load_config("glm5-tiny", ["mtp_lambda=0.3", "balance_alpha=0.01", "indexer_loss_weight=2.0",
                                           f"{field}={getattr(cfg.train, field) + 1}"])  # fmt: skip
        assert math.isclose(
            float(total_loss(out, bumped.train, dense_warmup=False).total) - float(main.total),
            term,
            rel_tol=1e-5,
        )
    assert float(total_loss(out, cfg.train, dense_warmup=True).total) == 0.25  # stage 1: the indexer KL only


# ---- balancing ----------------------------------------------------------------------------


def test_bias_update_moves_towards_balance_outside_autograd(small, tmp_path):
    tr = make_trainer(small, tmp_path / "run", ["train.bias_update_gamma=0.01"])
    routers = tr.model.routers()
    counts = torch.tensor([[30, 0, 5, 5]] * len(routers))
    update_router_biases(tr.model, counts, 0.01)
    for r in routers:
        assert r.e_score_correction_bias.tolist() == pytest.approx([-0.01, 0.01, 0.01, 0.01])
        assert not r.e_score_correction_bias.requires_grad and r.e_score_correction_bias.grad_fn is None
    # In the loop: after a main-stage step each bias moved by gamma against its expert's load.
    tr.step = tr.cfg.train.dsa_warmup_steps
    before = [r.e_score_correction_bias.clone() for r in routers]
    out = tr.train_step()
    for r, b, c in zip(routers, before, out.expert_counts.float(), strict=True):
        expected = b + 0.01 * torch.sign(c.mean() - c)
        assert torch.allclose(r.e_score_correction_bias, expected)
    # gamma 0 turns it off
    off = make_trainer(small, tmp_path / "off", ["train.bias_update_gamma=0"])
    off.step = off.cfg.train.dsa_warmup_steps
    off.train_step()
    assert all((r.e_score_correction_bias == 0).all() for r in off.model.routers())


# ---- DSA stages ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "freeze, compiled",
    [(True, False), (False, False), pytest.param(False, True, marks=pytest.mark.slow)],
    ids=["frozen", "trainable", "trainable-compiled"],
)
def test_dsa_stages_train_the_right_parameters(small, tmp_path, monkeypatch, freeze, compiled):
    """Stage 1 changes only the indexer, whether the rest is frozen (one process) or left trainable
    (under FSDP2, which fixes its reduction dtypes at the first forward: `set_stage`), also with
    compiled layers, whose backward hands the rest zero gradients where eager autograd gives none
    (AdamW's weight decay changed them all before `drop_untrained_gradients`)."""
    if not freeze:
        real = loop.set_stage
        monkeypatch.setattr(loop, "set_stage", lambda model, stage, freeze: real(model, stage, freeze=False))
    sets = ["train.dsa_warmup_steps=1", "train.bias_update_gamma=0.01", f"train.compile={compiled}"]
    if compiled:  # MoE layers only and no MTP: fewer distinct graphs to compile, the same check
        sets += ["first_k_dense_replace=0", "num_nextn_predict_layers=0"]
    tr = make_trainer(small, tmp_path / "run", sets)
    indexer = {id(p) for p in tr.model.indexer_parameters()}
    assert indexer
    snap = lambda: {n: p.detach().clone() for n, p in tr.model.named_parameters()}  # noqa: E731
    before, biases = snap(), [r.e_score_correction_bias.clone() for r in tr.model.routers()]
    assert tr.train_step().stage == DENSE_WARMUP
    assert tr.optimizer.param_groups[0]["lr"] == tr.cfg.train.dsa_warmup_lr
    after = snap()
    for name, p in tr.model.named_parameters():
        changed = not torch.equal(before[name], after[name])
        assert p.requires_grad == (id(p) in indexer or not freeze), name
        assert changed == (id(p) in indexer), name
    assert all(
        torch.equal(b, r.e_score_correction_bias) for b, r in zip(biases, tr.model.routers(), strict=True)
    )
    assert tr.train_step().stage == SPARSE
    final = snap()
    for name, p in tr.model.named_parameters():
        assert p.requires_grad, name
    changed = [n for n in final if not torch.equal(after[n], final[n])]
    assert len(changed) > 0.9 * len(final)  # all weights train (unrouted experts may get no gradient)
    assert any(".indexer." in n for n in changed) and "lm_head.weight" in changed


def test_no_stages_without_dsa(small, tmp_path):
    tr = make_trainer(small, tmp_path / "run", ["use_dsa=false"])
    out = tr.train_step()
    assert out.stage == "main" and "indexer_loss" not in out.losses
    assert all(p.requires_grad for p in tr.model.parameters())


def test_schedule_warmup_cosine_wsd_and_stage_lr():
    cfg = load_config("glm5-tiny", ["steps=120", "dsa_warmup_steps=20", "warmup_steps=10", "lr=1e-3",
                                    "min_lr_ratio=0.1", "dsa_warmup_lr=5e-4"])  # fmt: skip
    assert [stage_at(s, cfg) for s in (0, 19, 20)] == [DENSE_WARMUP, DENSE_WARMUP, SPARSE]
    assert lr_at(0, cfg) == lr_at(19, cfg) == 5e-4
    assert lr_at(20, cfg) == pytest.approx(1e-4) and lr_at(29, cfg) == pytest.approx(1e-3)
    assert lr_at(119, cfg) == pytest.approx(1e-4, rel=0.05)
    lrs = [lr_at(s, cfg) for s in range(30, 120)]
    assert all(a >= b for a, b in zip(lrs, lrs[1:], strict=False))
    wsd = load_config("glm5-tiny", ["steps=100", "use_dsa=false", "warmup_steps=10", "schedule=wsd",
                                    "decay_fraction=0.2", "lr=1e-3", "min_lr_ratio=0"])  # fmt: skip
    assert lr_at(50, wsd) == lr_at(79, wsd) == 1e-3
    assert lr_at(80, wsd) < 1e-3 and lr_at(99, wsd) == pytest.approx(0.0, abs=1e-12)


def test_muon_orthogonalises_matrices_and_trains(small, tmp_path):
    from glmlab.train.optim import Muon, newton_schulz

    g = torch.randn(3, 16, 24)
    s = torch.linalg.svdvals(newton_schulz(g))
    assert s.min() > 0.5 and s.max() < 1.3  # singular values pushed towards 1
    tr = make_trainer(small, tmp_path / "run", ["train.optimizer=muon", "train.dsa_warmup_steps=0"])
    muon = tr.optimizer.optimizers["muon"]
    assert isinstance(muon, Muon)
    names = {id(p): n for n, p in tr.model.named_parameters()}
    on_muon = {names[id(p)] for g in muon.param_groups for p in g["params"]}
    assert "model.layers.1.mlp.experts.gate_up_proj" in on_muon
    assert not any(n.startswith(("model.embed_tokens", "lm_head")) or ".mlp.gate." in n for n in on_muon)
    losses = [tr.train_step().metrics()["lm_loss"] for _ in range(4)]
    assert losses[-1] < losses[0]


def test_newton_schulz_in_bf16_follows_fp32():
    """A GPU runs the iterations in bf16: the result stays orthogonal-ish and near the fp32 one."""
    from glmlab.train.optim import newton_schulz

    g = torch.randn(4, 64, 96, generator=torch.Generator().manual_seed(2))
    low, exact = newton_schulz(g, dtype=torch.bfloat16), newton_schulz(g, dtype=torch.float32)
    assert low.dtype == g.dtype
    s = torch.linalg.svdvals(low)
    assert s.min() > 0.5 and s.max() < 1.3
    assert (low - exact).norm() / exact.norm() < 0.05


def test_muon_batched_step_equals_the_per_matrix_update():
    """Muon updates same-shaped matrices as a stacked batch: the result is the per-matrix rule
    (Nesterov momentum, Newton-Schulz, Moonlight's scale, decoupled decay) for each of them."""
    from glmlab.train.optim import Muon, newton_schulz

    torch.manual_seed(0)
    shapes = [(16, 24), (16, 24), (24, 16), (3, 8, 12), (16, 24)]
    params = [torch.nn.Parameter(torch.randn(s)) for s in shapes]
    reference = [p.detach().clone() for p in params]
    bufs = [torch.zeros_like(p) for p in reference]
    opt = Muon(params, lr=0.01, momentum=0.9, weight_decay=0.1)
    for _ in range(2):
        grads = [torch.randn(s) for s in shapes]
        for p, g in zip(params, grads, strict=True):
            p.grad = g
        opt.step()
        for i, g in enumerate(grads):
            bufs[i] = 0.9 * bufs[i] + g
            scale = 0.2 * max(shapes[i][-2:]) ** 0.5
            reference[i] = reference[i] * (1 - 0.01 * 0.1) - 0.01 * scale * newton_schulz(g + 0.9 * bufs[i])
    for p, r in zip(params, reference, strict=True):
        assert torch.allclose(p, r, atol=1e-5)


# ---- precision and the step's device reads --------------------------------------------------


def test_bf16_precision_trains_bf16_weights_and_keeps_router_biases_fp32(small, tmp_path, run_cli):
    tr = make_trainer(small, tmp_path / "run", ["train.precision=bf16", "train.dsa_warmup_steps=0"])
    assert {p.dtype for p in tr.model.parameters()} == {torch.bfloat16}
    assert all(r.e_score_correction_bias.dtype == torch.float32 for r in tr.model.routers())
    first = [tr.train_step().metrics() for _ in range(3)]
    assert all(math.isfinite(m["loss"]) for m in first) and first[-1]["lm_loss"] < first[0]["lm_loss"]
    state = tr.optimizer.optimizers["adamw"].state
    assert {s["exp_avg"].dtype for s in state.values()} == {torch.bfloat16}
    code, _, err = run_cli("build", "glm5-tiny", "--set", "train.precision=fp16")
    assert code == 2 and "train.precision" in err and "bf16-mixed" in err


def test_a_new_run_sizes_its_vocab_to_a_tokenizer_already_in_its_folder(small, tmp_path):
    """Two H200 runs started in a folder left by a failed call: its byte tokenizer was reused with
    the config's unsized 16,384-row vocabulary, so training began at LM loss ln(16384). A tokenizer
    already in a new run's folder (left there, or placed by the experiment runner) now sizes the
    vocabulary as one built by the run does; a leftover run config stops the run with one line."""
    run = tmp_path / "run"
    first = make_trainer(small, run, ["train.tokenizer=byte"])
    assert first.cfg.model.vocab_size == 257
    (run / "config.yaml").unlink()  # a tokenizer alone: sized again, the run starts
    again = make_trainer(small, run, ["train.tokenizer=byte"])
    assert again.cfg.model.vocab_size == 257 and again.model.lm_head.weight.shape[0] == 257
    with pytest.raises(GlmlabError, match="already holds a run: continue it with"):
        make_trainer(small, run, ["train.tokenizer=byte"])


def test_step_result_holds_device_tensors_read_in_one_transfer(small, tmp_path):
    tr = make_trainer(small, tmp_path / "run", ["train.grad_accum=2", "train.dsa_warmup_steps=0"])
    result = tr.train_step()
    assert result.step == 1 and all(torch.is_tensor(v) for v in result.losses.values())
    metrics = result.metrics()
    assert set(metrics) >= {"step", "stage", "lr", "loss", "lm_loss", "grad_norm"}
    assert metrics["loss"] == pytest.approx(float(result.losses["loss"])) and tr.position == 4


@pytest.mark.parametrize("interval", [2, 0])
def test_the_collector_runs_on_its_schedule_while_training(small, tmp_path, monkeypatch, interval):
    """train.gc_interval=2: Python's automatic collector is off during the steps, the young
    generations are collected after steps 2 and 4 and nothing else, and the collector is back on
    after the run. 0 leaves the collector on and collects nothing itself."""
    tr = make_trainer(small, tmp_path / "run", ["train.steps=4", "train.dsa_warmup_steps=0",
                                                f"train.gc_interval={interval}"])  # fmt: skip
    collections, enabled_in_steps = [], []
    train_step = tr.train_step
    monkeypatch.setattr(gc, "collect", lambda generation=2: collections.append((tr.step, generation)) or 0)
    monkeypatch.setattr(tr, "train_step", lambda: enabled_in_steps.append(gc.isenabled()) or train_step())
    assert gc.isenabled()
    tr.run(show_progress=False)
    assert gc.isenabled() and enabled_in_steps == [not interval] * 4
    assert collections == ([(2, 1), (4, 1)] if interval else [])


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_training_step_never_waits_for_the_gpu(small, tmp_path):
    """After a warm-up step, a whole training step (forward, backward, clip, AdamW, bias update)
    queues its work without a single host synchronisation."""
    config, data = small
    cfg = load_config(config, [f"train.data={data}", "train.dsa_warmup_steps=0", "train.optimizer=adamw"])
    tr = Trainer(cfg, tmp_path / "run", resume=False, device="cuda")
    tr.train_step()
    torch.cuda.set_sync_debug_mode("error")
    try:
        result = tr.train_step()
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert math.isfinite(result.metrics()["loss"])


# ---- runs, resume, signals ----------------------------------------------------------------


def test_run_folder_and_resume_reproduce_a_straight_run(small, tmp_path, run_cli):
    config, data = small
    base = ["train", str(config), "--data", str(data), "--device", "cpu"]
    code, out, err = run_cli(*base, "--steps", "16", "--out", str(tmp_path / "straight"))
    assert code == 0, err
    code, _, err = run_cli(*base, "--steps", "8", "--out", str(tmp_path / "split"))
    assert code == 0, err
    code, _, err = run_cli("train", str(tmp_path / "split"), "--resume", "--steps", "16", "--device", "cpu")
    assert code == 0, err
    straight, split = records(tmp_path / "straight"), records(tmp_path / "split")
    assert sorted(split) == list(range(1, 17))
    for step in range(1, 17):
        assert split[step]["loss"] == pytest.approx(straight[step]["loss"], abs=1e-5), step
    run = tmp_path / "straight"
    for name in ("config.yaml", "tokenizer", "metrics.jsonl", "checkpoints/latest"):
        assert (run / name).exists(), name
    ckpt = run / "checkpoints" / (run / "checkpoints" / "latest").read_text().strip()
    assert {p.name for p in ckpt.iterdir()} >= {"model.safetensors", "optimizer.pt", "trainer_state.pt"}
    assert len([p for p in (run / "checkpoints").iterdir() if p.is_dir()]) == 1  # only the last is kept
    first = json.loads((run / "metrics.jsonl").read_text().splitlines()[0])
    for key in ("step", "loss", "lm_loss", "mtp_loss", "balance_loss", "indexer_loss", "lr", "grad_norm",
                "tokens_per_s", "mfu", "expert_imbalance", "indexer_recall", "stage"):  # fmt: skip
        assert key in first, key
    assert any("val_bpb" in json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines())
    loaded = load_model(run)
    assert loaded.tokenizer.kind == "byte" and not loaded.model.training and loaded.config.train.steps == 16


def test_interrupt_saves_a_resumable_checkpoint(small, tmp_path, monkeypatch):
    """A signal mid-run (cosine schedule) saves; resuming matches an uninterrupted run."""
    cosine = ["train.warmup_steps=2", "train.min_lr_ratio=0.1", "train.steps=6"]
    straight = make_trainer(small, tmp_path / "a", cosine)
    straight.run(show_progress=False)
    tr = make_trainer(small, tmp_path / "b", cosine)
    real_step = tr.train_step

    def step_then_signal():
        out = real_step()
        if tr.step == 3:
            os.kill(os.getpid(), signal.SIGINT)
        return out

    monkeypatch.setattr(tr, "train_step", step_then_signal)
    result = tr.run(show_progress=False)
    assert result.signum == signal.SIGINT and result.step == 3
    assert (tmp_path / "b" / "checkpoints" / "step-00000003").is_dir()
    resumed = make_trainer(small, tmp_path / "b", cosine, resume=True)
    assert resumed.step == 3 and resumed.position == 3 * 2
    resumed.run(show_progress=False)
    a, b = records(tmp_path / "a"), records(tmp_path / "b")
    assert [round(b[s]["loss"], 5) for s in range(1, 7)] == [round(a[s]["loss"], 5) for s in range(1, 7)]


def test_non_finite_loss_stops_and_keeps_last_checkpoint(small, tmp_path, monkeypatch, run_cli):
    config, data = small
    real = loop.total_loss
    calls = {"n": 0}

    def poisoned(out, train, *, dense_warmup):
        calls["n"] += 1
        losses = real(out, train, dense_warmup=dense_warmup)
        if calls["n"] == 6:
            losses.total = losses.total * float("nan")
        return losses

    monkeypatch.setattr(loop, "total_loss", poisoned)
    run = tmp_path / "run"
    code, _, err = run_cli("train", str(config), "--data", str(data), "--out", str(run), "--device", "cpu")
    assert code == 2 and "nan" in err and "step-00000004" in err
    assert (run / "checkpoints" / "latest").read_text().strip() == "step-00000004"


def test_non_finite_gradient_stops_and_check_gradients_names_the_parameter(
    small, tmp_path, monkeypatch, run_cli
):
    """A NaN gradient under a finite loss (what an overflow in a backward gives) stops the run at
    its step; `train.check_gradients` stops it before the optimiser step and names the parameter."""
    config, data = small
    real = loop.build_model

    def poisoned(*args, **kwargs):  # lm_head's gradient turns NaN at its second backward (step 4)
        model = real(*args, **kwargs)
        calls = []
        model.get_parameter("lm_head.weight").register_hook(
            lambda g: g * float("nan") if calls.append(1) or len(calls) >= 2 else g
        )
        return model

    monkeypatch.setattr(loop, "build_model", poisoned)
    args = ("train", str(config), "--data", str(data), "--device", "cpu")
    code, _, err = run_cli(*args, "--out", str(tmp_path / "a"))
    assert code == 2 and "gradient norm is nan at step 4: the run stopped; no checkpoint" in err
    assert not (tmp_path / "a" / "checkpoints" / "step-00000004").exists()
    code, _, err = run_cli(*args, "--out", str(tmp_path / "b"), "--set", "train.check_gradients=true")
    assert code == 2 and len(err.strip().splitlines()) == 1 and not (tmp_path / "b").exists()
    assert (
        "the gradient is not finite at step 4, in lm_head.weight: the run stopped before the optimiser" in err
    )


def test_out_of_memory_is_one_line_and_leaves_no_new_run(small, tmp_path, monkeypatch, run_cli):
    config, data = small

    def exhausted(self, show_progress=True):
        self.step = 3
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 512.00 MiB.")

    monkeypatch.setattr(loop.Trainer, "run", exhausted)
    run = tmp_path / "run"
    code, _, err = run_cli("train", str(config), "--data", str(data), "--out", str(run), "--device", "cpu")
    assert code == 2 and len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert "out of memory on cpu after step 3: lower train.batch_size" in err
    assert "sparse_keep_probs_gib" not in err  # the torch paths keep no probabilities
    assert not run.exists()
    # where the Triton sparse attention keeps its probabilities for backward, the message says so
    code, _, err = run_cli("train", str(config), "--data", str(data), "--out", str(run), "--device", "cpu",
                           "--set", "dsa_impl=triton")  # fmt: skip
    assert code == 2 and "set sparse_keep_probs_gib=0" in err and len(err.strip().splitlines()) == 1


def test_out_of_memory_building_or_resuming_keeps_what_was_there(small, tmp_path, monkeypatch, run_cli):
    """Out of memory while the model is built says so; in a resumed run the checkpoints stay."""
    config, data = small
    run = tmp_path / "run"
    args = ("train", str(config), "--data", str(data), "--out", str(run), "--device", "cpu")
    assert run_cli(*args)[0] == 0  # 8 steps, checkpoints at 4 and 8
    kept = sorted(p.name for p in (run / "checkpoints").iterdir())

    def exhausted(*args, **kwargs):
        raise torch.OutOfMemoryError("CUDA out of memory.")

    monkeypatch.setattr(loop, "build_model", exhausted)
    code, _, err = run_cli("train", str(run), "--resume", "--steps", "12", "--device", "cpu")
    assert code == 2 and "out of memory on cpu while building the model" in err
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == kept
    code, _, err = run_cli(*args[:4], "--out", str(tmp_path / "new"), "--device", "cpu")
    assert code == 2 and "while building the model" in err and not (tmp_path / "new").exists()


def test_gradients_too_large_for_their_norm_are_named_as_such(small, tmp_path):
    """Finite gradients whose squares overflow: the norm is infinite though no gradient is."""
    trainer = make_trainer(small, tmp_path / "run")
    for p in trainer.model.parameters():
        p.grad = None
    trainer.model.get_parameter("lm_head.weight").grad = torch.full_like(trainer.model.lm_head.weight, 1e30)
    message = loop.nonfinite_gradients(trainer.model, 7)
    assert message.startswith(
        "the gradient is not finite at step 7, in no gradient of this rank's parameters (the norm overflowed"
    )


@pytest.mark.parametrize(
    "case",
    [
        "missing_data",
        "empty_data",
        "too_long",
        "unwritable",
        "existing_run",
        "corrupt",
        "mismatch",
    ],
)
def test_errors_are_one_line_exit_2(case, small, tmp_path, run_cli):
    config, data = small
    base = ["train", str(config), "--device", "cpu", "--steps", "4"]
    run = tmp_path / "run"
    if case in ("existing_run", "corrupt", "mismatch"):
        assert run_cli(*base, "--data", str(data), "--out", str(run))[0] == 0
    args = {
        "missing_data": [*base, "--data", str(tmp_path / "nope.txt"), "--out", str(run)],
        "empty_data": [*base, "--data", str(tmp_path / "empty.txt"), "--out", str(run)],
        "too_long": [*base, "--data", str(data), "--set", "train.seq_len=4096", "--out", str(run)],
        "unwritable": [*base, "--data", str(data), "--out", str(data / "sub")],
        "existing_run": [*base, "--data", str(data), "--out", str(run)],
        "corrupt": ["train", str(run), "--resume", "--steps", "8", "--device", "cpu"],
        "mismatch": [*base, "--data", str(data), "--steps", "8", "--out", str(run), "--resume"],
    }[case]
    (tmp_path / "empty.txt").write_text("")
    if case == "corrupt":
        ckpt = run / "checkpoints" / "step-00000004" / "model.safetensors"
        ckpt.write_bytes(ckpt.read_bytes()[:100])
    if case == "mismatch":
        (run / "config.yaml").write_text(
            (run / "config.yaml").read_text().replace("hidden_size: 32", "hidden_size: 64")
        )
        args = ["train", str(run), "--resume", "--steps", "8", "--device", "cpu"]
    code, _, err = run_cli(*args)
    assert code == 2, err
    assert err.startswith("error:") and len(err.strip().splitlines()) == 1 and "Traceback" not in err
    hint = {"existing_run": "--resume", "corrupt": "corrupt", "mismatch": "another model",
            "too_long": "seq_len", "unwritable": "output folder"}.get(case)  # fmt: skip
    if hint:
        assert hint in err


@pytest.mark.slow
def test_sigint_subprocess_exits_130_and_resumes(small, tmp_path):
    config, data = small
    run = tmp_path / "run"
    cmd = [sys.executable, "-m", "glmlab.cli", "train", str(config), "--data", str(data), "--steps", "100000",
           "--out", str(run), "--device", "cpu"]  # fmt: skip
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while time.time() < deadline and not (run / "metrics.jsonl").is_file():
        time.sleep(0.5)
    time.sleep(2)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert "SIGINT received: saved checkpoint" in out
    step = int((run / "checkpoints" / "latest").read_text().strip().split("-")[1])
    again = [sys.executable, "-m", "glmlab.cli", "train", str(run), "--resume", "--steps", str(step + 2)]
    resumed = subprocess.run([*again, "--device", "cpu"], capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    assert sorted(records(run))[-1] == step + 2


def test_load_model_from_checkpoint_and_hf_folder(small, tmp_path):
    from glmlab.hf import save_pretrained

    tr = make_trainer(small, tmp_path / "run", ["train.steps=1"])
    tr.run(show_progress=False)
    ckpt = tmp_path / "run" / "checkpoints" / "step-00000001"
    x = torch.randint(0, 257, (1, 16))
    with torch.no_grad():
        expected = tr.model.eval()(x).logits
    by_ckpt = load_model(ckpt)
    assert by_ckpt.path == ckpt and by_ckpt.tokenizer.decode(by_ckpt.tokenizer.encode("ok")) == "ok"
    with torch.no_grad():
        assert torch.allclose(by_ckpt.model(x).logits, expected, atol=1e-6)
    hf = save_pretrained(by_ckpt.model, tmp_path / "hf")
    assert load_model(hf).tokenizer is None
    bpe_dir = tmp_path / "bpe"
    from glmlab.data.tokenizer import train_bpe

    train_bpe([Path(json.__file__).read_text()], 300).save(bpe_dir)
    (hf / "tokenizer.json").write_bytes((bpe_dir / "tokenizer.json").read_bytes())
    loaded = load_model(hf)
    assert loaded.tokenizer.vocab_size == 300 and not loaded.model.training
    with torch.no_grad():
        assert torch.allclose(loaded.model(x).logits, expected, atol=1e-5)


def test_rank_imbalance_sums_each_ranks_block_of_experts():
    """Experts split contiguously over ranks: the busiest rank's routed pairs over the mean."""
    from glmlab.train.metrics import rank_imbalance

    counts = torch.tensor([[4, 0, 2, 2], [6, 2, 1, 1], [0, 0, 0, 9]])
    assert rank_imbalance(counts, 2) == pytest.approx([1.0, 1.6, 2.0])
    assert rank_imbalance(counts, 4)[2] == pytest.approx(4.0)


def test_indexer_recall_runs_only_where_a_plan_reports_it(tiny):
    """The recall forward (a dense warm-up pass) runs on the torch paths; where no layer's plan can
    report recall (the Triton kernels keep no dense probabilities) it returns None without running."""
    import contextlib

    from glmlab.train.loop import indexer_recall

    x = torch.randint(0, 128, (2, 40), generator=torch.Generator().manual_seed(0))
    assert 0 < indexer_recall(tiny(), x, contextlib.nullcontext) <= 1
    triton = tiny("dsa_impl=triton")
    triton.forward = lambda *args, **kwargs: pytest.fail("the model ran")
    assert indexer_recall(triton, x, contextlib.nullcontext) is None


def test_summary_table_prints_bytes_with_units():
    from rich.console import Console

    from glmlab.report.train import print_summary

    console = Console(record=True, width=80)
    print_summary("run", {"peak_memory_bytes": 67.4e9, "tokens_per_s": 1234.5}, console)
    text = console.export_text()
    assert "67.40 GB" in text and "1234" in text
