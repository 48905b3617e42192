"""The command line as a new user meets it (issue 11 items 2-12, issue 10 items 4-5): one way to
resume, careless input answered with one line, --device the same everywhere, figures that agree
between commands, and a CLI that is only a map from commands to the library."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import glmlab
from glmlab.accounting import training_flops_per_token
from glmlab.checkpoint import load_model
from glmlab.config import load_config
from glmlab.device import autocast, device_type, parse_device, resolve_device
from glmlab.errors import GlmlabError
from glmlab.measure import device_peak
from glmlab.report.train import collapse_warning, step_lines
from glmlab.train.loop import Trainer
from glmlab.train.schedule import lr_at

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
  steps: 4
  warmup_steps: 1
  min_lr_ratio: 0.1
  dsa_warmup_steps: 1
  log_interval: 1
  eval_interval: 0
  eval_batches: 1
  checkpoint_interval: 0
"""

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture
def small(tmp_path, monkeypatch) -> tuple[Path, Path]:
    """(config path, data file): a model that trains a step in well under a second."""
    monkeypatch.setenv("GLMLAB_CACHE", str(tmp_path / "cache"))
    config = tmp_path / "small.yaml"
    config.write_text(SMALL)
    data = tmp_path / "text.txt"
    data.write_text(Path(json.__file__).read_text() * 2)
    return config, data


def one_line_error(result: tuple[int, str, str], *needles: str) -> str:
    code, _, err = result
    assert code == 2, err
    assert err.startswith("error:") and len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
    for needle in needles:
        assert needle in err, (needle, err)
    return err


def train_records(run: Path) -> dict[int, dict]:
    lines = (run / "metrics.jsonl").read_text().splitlines()
    return {r["step"]: r for r in map(json.loads, lines) if "loss" in r}


# ---- the thin skin and its imports ----------------------------------------------------------------


def _imports(path: Path, package: str) -> set[str]:
    """glmlab modules a file imports anywhere (module level or inside functions), except under
    `if TYPE_CHECKING:`, which never runs."""
    root = path.parent.parent if path.name == "__init__.py" else path.parent
    tree = ast.parse(path.read_text())
    guards = [
        b for b in ast.walk(tree) if isinstance(b, ast.If) and ast.unparse(b.test).endswith("TYPE_CHECKING")
    ]
    typing_only = {id(n) for block in guards for n in ast.walk(block)}
    found = set()
    for node in ast.walk(tree):
        if id(node) in typing_only:
            continue
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith(package)}
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith(package):
            found.add(node.module)
            base = root.parent.joinpath(*node.module.split("."))
            found |= {f"{node.module}.{a.name}" for a in node.names if (base / f"{a.name}.py").is_file()}
    return found


def test_no_import_cycle_in_glmlab():
    """Issue 10 item 4: measure -> train.loop -> train.metrics -> measure was a cycle. Every import
    counts, also those inside functions; a package's __init__ stands for the package."""
    src = Path(glmlab.__file__).parent
    graph = {}
    for path in src.rglob("*.py"):
        parts = path.relative_to(src.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        graph[name] = _imports(path, "glmlab") - {name}
    state: dict[str, int] = {}

    def visit(node: str, trail: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(graph.get(node, ())):
            if nxt.startswith(node + "."):
                continue  # a package importing its own submodules is not a cycle
            if state.get(nxt) == 1:
                cycle = trail[trail.index(nxt) :] + [nxt] if nxt in trail else [node, nxt]
                raise AssertionError("import cycle: " + " -> ".join(cycle))
            if nxt not in state:
                visit(nxt, [*trail, nxt])
        state[node] = 2

    for name in sorted(graph):
        if name not in state:
            visit(name, [name])
    assert "glmlab.train.loop" not in graph["glmlab.generate.generator"]
    assert not any(m.startswith("glmlab.train") for m in graph["glmlab.measure"])


def test_cli_has_no_renderers():
    """Issue 10 item 5: rich tables and trees are built in glmlab/report/, not in cli.py."""
    text = (Path(glmlab.__file__).parent / "cli.py").read_text()
    for needle in ("rich.table", "rich.tree", "Table(", "Tree("):
        assert needle not in text


def test_version_and_presets_without_torch():
    code = (
        "import sys; from glmlab import cli; sys.argv = ['glmlab', 'presets']\n"
        "try:\n    cli.main()\nexcept SystemExit:\n    pass\n"
        "print('torch imported' if 'torch' in sys.modules else 'no torch')"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "no torch" in out.stdout
    small = next(line for line in out.stdout.splitlines() if line.strip().startswith("glm5-small"))
    assert "380.10M" in small and "412.90M" in small  # total, and with the MTP module
    cmd = [sys.executable, "-m", "glmlab.cli", "--version"]
    version = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert version.returncode == 0 and version.stdout.startswith("glmlab ")


# ---- devices -----------------------------------------------------------------------------------------


def test_device_values_are_the_same_everywhere(run_cli):
    for text in ("auto", "cpu", "cuda", "cuda:1", "CPU"):
        assert parse_device(text) == text.lower()
    for bad in ("tpu", "cuda:", "cuda:x", "gpu", ""):
        with pytest.raises(GlmlabError, match="use auto, cpu, cuda or cuda:N"):
            parse_device(bad)
    assert resolve_device("cpu") == torch.device("cpu") and device_type("cuda:3") == "cuda"
    cpu = torch.device("cpu")
    assert type(autocast(cpu, "bf16-mixed")) is type(autocast(cpu, "fp32"))  # no autocast on the CPU
    with pytest.raises(GlmlabError, match="precision"):
        autocast(cpu, "fp16")
    if not torch.cuda.is_available():
        with pytest.raises(GlmlabError, match="no CUDA device"):
            resolve_device("cuda:0")
    for command in (["train", "glm5-tiny"], ["generate", "runs/x", "--prompt", "a"], ["profile", "glm5-tiny"],
                    ["flops", "glm5-tiny"], ["quickstart"]):  # fmt: skip
        one_line_error(run_cli(*command, "--device", "tpu"), "use auto, cpu, cuda or cuda:N")


# ---- careless input ------------------------------------------------------------------------------


def test_plot_type_is_checked_first_and_the_hint_keeps_its_extra(run_cli, monkeypatch):
    one_line_error(run_cli("flops", "glm5", "--plot", "out.txt"), "'.txt'", ".png")
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # as if matplotlib were not installed
    one_line_error(run_cli("flops", "glm5", "--plot", "out.png"), "pip install 'glmlab[plot]'")


def test_profile_refuses_what_does_not_fit_and_bad_sizes(run_cli):
    err = one_line_error(run_cli("profile", "glm5", "--device", "cpu"), "needs about", "glmlab flops glm5")
    assert "TB" not in err  # in GB, with thousands separators
    one_line_error(run_cli("profile", "glm5-tiny", "--seq", "0", "--device", "cpu"), "--seq >= 2", "got 0")
    one_line_error(run_cli("profile", "glm5-tiny", "--batch", "0", "--device", "cpu"), "--batch >= 1")


def test_failed_attempts_leave_no_run_folder(small, tmp_path, run_cli):
    config, data = small
    blob = tmp_path / "blob.bin"
    blob.write_bytes(bytes(range(1, 256)) * 64)  # binary, without a NUL byte
    run = tmp_path / "runs" / "r"  # runs/ does not exist yet either
    base = ["train", str(config), "--out", str(run), "--device", "cpu"]
    one_line_error(run_cli(*base, "--data", str(data), "--steps", "0"), "--steps must be at least 1")
    one_line_error(run_cli(*base, "--data", str(data), "--set", "train.steps=0"), "at least 1 step")
    one_line_error(run_cli(*base, "--data", str(blob)), "not UTF-8 text")
    one_line_error(run_cli(*base, "--data", str(data), "--set", "train.seq_len=100000"), "seq_len")
    (tmp_path / "tiny.txt").write_text("too short\n")  # fails after the run folder was made
    one_line_error(run_cli(*base, "--data", str(tmp_path / "tiny.txt")), "fewer than one sequence")
    assert not run.parent.exists()
    empty = tmp_path / "empty"
    empty.mkdir()
    one_line_error(run_cli(*base[:2], "--out", str(empty), "--data", str(blob), "--device", "cpu"), "binary")
    assert empty.is_dir() and not any(empty.iterdir())  # a folder the user made stays, emptied


# ---- resume: one way, one schedule ---------------------------------------------------------------------


def test_resume_has_one_spelling_and_every_other_names_it(small, tmp_path, run_cli):
    config, data = small
    run = tmp_path / "notes"
    assert run_cli("train", str(config), "--data", str(data), "--out", str(run), "--device", "cpu")[0] == 0
    hint = f"glmlab train {run} --resume"
    one_line_error(run_cli("train", str(run), "--steps", "6"), f"{hint} --steps 6")  # forgot --resume
    one_line_error(run_cli("train", str(config), "--out", str(run), "--resume"), hint)
    one_line_error(run_cli("train", str(config), "--data", str(data), "--out", str(run)), hint)
    one_line_error(run_cli("train", str(run), "--resume", "--data", str(data)), hint)
    one_line_error(run_cli("train", "glm5-tiny", "--resume"), "glmlab train RUN_DIR --resume")
    one_line_error(run_cli("train", str(tmp_path)), "a folder but not a run")
    code, out, err = run_cli("train", str(run), "--resume", "--steps", "6", "--device", "cpu")
    assert code == 0, err
    assert sorted(train_records(run)) == list(range(1, 7))


def test_resume_help_and_readme_agree(run_cli):
    """Issue 11 item 12: `--resume`'s help names the same command the README gives."""
    code, out, _ = run_cli("train", "--help")
    readme = (Path(glmlab.__file__).parent.parent / "README.md").read_text()
    spelling = "glmlab train RUN_DIR --resume [--steps N]"
    assert code == 0 and spelling in " ".join(out.replace("│", " ").split()) and spelling in readme


def test_extending_a_run_keeps_its_schedule(small, tmp_path, run_cli):
    """Issue 11 item 8: steps past the original total run at the schedule's final LR; an
    interrupted run resumed to its own total keeps the same schedule as a straight one."""
    config, data = small
    run = tmp_path / "r"
    assert run_cli("train", str(config), "--data", str(data), "--out", str(run), "--device", "cpu")[0] == 0
    code, out, err = run_cli("train", str(run), "--resume", "--steps", "7", "--device", "cpu")
    assert code == 0, err
    assert "keeps its 4-step schedule" in " ".join(out.split())
    cfg = load_config(config)
    lrs = {step: r["lr"] for step, r in train_records(run).items()}
    assert [lrs[s] for s in range(1, 5)] == pytest.approx([lr_at(s, cfg) for s in range(4)])
    final = cfg.train.lr * cfg.train.min_lr_ratio
    assert [lrs[s] for s in (5, 6, 7)] == pytest.approx([final] * 3)
    assert lr_at(6, cfg, horizon=7) != pytest.approx(final)  # a 7-step schedule would differ


# ---- what a run prints and records ---------------------------------------------------------------------


def test_train_and_profile_share_one_mfu(small, tmp_path):
    """Issue 11 item 10: MFU = tokens/s x the calculator's training FLOPs per token (glmlab
    convention) / a matmul peak timed once per process; the dense warm-up's count is its own."""
    config, data = small
    cfg = load_config(config, [f"train.data={data}"])
    warm = Trainer(load_config(config, [f"train.data={data}", "train.steps=1"]), tmp_path / "w", resume=False,
                   device="cpu").run(show_progress=False)  # fmt: skip
    assert "final_indexer_kl" in warm.summary and "final_loss" not in warm.summary  # ended in the warm-up
    # the run's peak memory, here the process's resident high-water mark since the run began
    assert warm.summary["peak_memory_bytes"] > 1e6 and "resident" in warm.summary["peak_memory_kind"]
    # the whole run's rate (compiling and evaluation included) and the last window's, which `mfu` is of
    logged = train_records(tmp_path / "w")
    last = logged[max(logged)]
    assert warm.summary["last_tokens_per_s"] == last["tokens_per_s"] and warm.summary["mfu"] == last["mfu"]
    Trainer(cfg, tmp_path / "r", resume=False, device="cpu").run(show_progress=False)
    records = train_records(tmp_path / "r")
    peak = device_peak(torch.device("cpu"))
    warm_per_token = training_flops_per_token(cfg, cfg.train.seq_len, device="cpu", dsa_dense=True)
    assert records[1]["stage"] == "dense-warmup"
    assert records[1]["mfu"] == pytest.approx(records[1]["tokens_per_s"] * warm_per_token / peak, rel=1e-9)
    per_token = training_flops_per_token(cfg, cfg.train.seq_len, device="cpu")
    assert warm_per_token < per_token
    for step in (2, 4):
        r = records[step]
        assert r["mfu"] == pytest.approx(r["tokens_per_s"] * per_token / peak, rel=1e-9)


def test_step_lines_fit_80_columns_and_name_what_is_optimised():
    wide = {"step": 999999, "stage": "sparse", "loss": 12.3456, "lm_loss": 11.2345, "mtp_loss": 11.9876,
            "indexer_loss": 0.1234, "balance_loss": 0.5, "lr": 1.234e-3, "grad_norm": 1234.5678,
            "tokens_per_s": 9_876_543.0, "mfu": 0.987, "expert_imbalance": 12.34,
            "indexer_recall": 0.999}  # fmt: skip
    for warm in (False, True):
        lines = step_lines({**wide, "stage": "dense-warmup" if warm else "sparse"}, dense_warmup=warm)
        assert all(len(line) <= 80 for line in lines), [len(line) for line in lines]
    warm = step_lines({**wide, "loss": 0.0004, "indexer_loss": 0.0004, "mfu": None}, dense_warmup=True)
    assert "indexer KL 0.0004" in warm[0] and "loss" not in warm[0] and "mfu" not in warm[1]


def test_collapse_warning_names_the_load_against_its_ceiling():
    assert collapse_warning({"expert_imbalance": 7.1}, ceiling=8) == []  # below 90% of E/k
    assert collapse_warning({"lm_loss": 1.0}, ceiling=8) == []  # a model without MoE
    lines = collapse_warning({"expert_imbalance": 127.9}, ceiling=128)
    assert "load 127.90 of at most 128" in lines[0] and "Routing collapse" in lines[-1]
    assert "embedding_init_std=1.0" in lines[1] and all(len(line) <= 80 for line in lines)


# ---- checkpoints ---------------------------------------------------------------------------------------


def test_a_flipped_bit_in_a_checkpoint_is_caught(small, tmp_path, run_cli):
    config, data = small
    run = tmp_path / "r"
    assert run_cli("train", str(config), "--data", str(data), "--out", str(run), "--device", "cpu")[0] == 0
    ckpt = run / "checkpoints" / "step-00000004"
    sums = json.loads((ckpt / "checksums.json").read_text())["sha256"]
    assert {"model.safetensors", "optimizer.pt", "trainer_state.pt", "config.yaml"} <= set(sums)
    load_model(run)  # intact: loads
    weights = ckpt / "model.safetensors"
    raw = bytearray(weights.read_bytes())
    raw[-5] ^= 0x10  # one bit in the last tensor's data: safetensors alone would load it
    weights.write_bytes(bytes(raw))
    with pytest.raises(GlmlabError, match="corrupt"):
        load_model(run)
    one_line_error(run_cli("generate", str(run), "--prompt", "x", "--device", "cpu"), "SHA-256")
    one_line_error(run_cli("train", str(run), "--resume", "--steps", "5", "--device", "cpu"), "SHA-256")
