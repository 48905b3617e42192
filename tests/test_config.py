"""Config loading, extends/overrides, and every validation error (issue 2, deliverable 2)."""

from __future__ import annotations

import json

import pytest

from glmlab.config import load_config, preset_names
from glmlab.errors import GlmlabError


def test_presets_all_load():
    names = preset_names()
    assert {"glm5", "glm5.2", "deepseek-v3", "deepseek-v3.2", "glm5-tiny", "glm5-small"} <= set(names)
    for name in names:
        assert load_config(name).name == name


def test_extends_and_overrides(tmp_path):
    path = tmp_path / "mine.yaml"
    path.write_text("extends: glm5-tiny\nindex_topk: 32\ntrain:\n  lr: 1.0e-3\n")
    cfg = load_config(str(path), ["n_routed_experts=16", "train.batch_size=4", "steps=7", "lr=2e-3"])
    assert cfg.model.index_topk == 32
    assert cfg.model.n_routed_experts == 16
    assert cfg.model.hidden_size == load_config("glm5-tiny").model.hidden_size  # inherited
    assert cfg.train.batch_size == 4 and cfg.train.steps == 7
    assert cfg.train.lr == pytest.approx(2e-3)  # --set wins over the file, "2e-3" parsed as float
    assert cfg.train.seq_len == 256  # train section merged, not replaced


def test_indexshare_pattern_matches_spec():
    types = load_config("glm5.2").model.resolved_indexer_types
    full = [i for i, t in enumerate(types) if t == "full"]
    assert full[:5] == [0, 1, 2, 6, 10] and full[-1] == 74 and len(types) == 78
    assert load_config("glm5").model.resolved_indexer_types == ["full"] * 78


def test_fs_pattern_string_is_accepted():
    cfg = load_config("glm5-tiny", ["indexer_types=FSFSSF"])
    assert cfg.model.resolved_indexer_types == ["full", "shared", "full", "shared", "shared", "full"]


BAD = [
    (["index_topkk=3"], "index_topk"),  # unknown field: suggests the closest name
    (["hidden_size=abc"], "hidden_size"),  # wrong type
    (["norm_topk_prob=3"], "norm_topk_prob"),
    (["hidden_size=0"], "hidden_size"),  # non-positive size
    (["num_attention_heads=-4"], "num_attention_heads"),
    (["num_experts_per_tok=9"], "num_experts_per_tok"),  # > n_routed_experts (8)
    (["n_group=3"], "n_group"),  # 8 experts not divisible by 3
    (["n_group=2", "topk_group=4"], "topk_group"),
    (["qk_rope_head_dim=15"], "qk_rope_head_dim"),  # odd
    (["qk_rope_head_dim=64"], "qk_rope_head_dim"),  # too large for index_head_dim 32
    (["index_topk=0"], "index_topk"),
    (["num_nextn_predict_layers=-1"], "num_nextn_predict_layers"),
    (["first_k_dense_replace=-1"], "first_k_dense_replace"),
    (["indexer_types=[full, shared]"], "indexer_types"),  # wrong length (4 layers)
    (["indexer_types=FSXS"], "indexer_types"),
    (["train.lr=0"], "train.lr"),
    (["train.seq_len=4096"], "train.seq_len"),  # longer than max_position_embeddings
    (["train.bogus=1"], "train.bogus"),
    (["train.ep_dispatch=all"], "train.ep_dispatch"),
    (["train.gc_interval=-1"], "train.gc_interval"),
    (["embedding_init_std=0"], "embedding_init_std"),
    (["embedding_init_std=1.0", "tie_word_embeddings=true"], "embedding_init_std"),
]


@pytest.mark.parametrize("overrides,field", BAD)
def test_invalid_values_exit_2_with_one_line(overrides, field, run_cli):
    args = ["build", "glm5-tiny"]
    for item in overrides:
        args += ["--set", item]
    code, out, err = run_cli(*args)
    assert code == 2
    lines = [line for line in err.strip().splitlines() if line.strip()]
    assert len(lines) == 1, err
    assert field.split(".")[-1] in lines[0]
    assert "Traceback" not in err and out == ""


def test_unknown_field_suggests_closest(run_cli):
    _, _, err = run_cli("build", "glm5-tiny", "--set", "index_topkk=3")
    assert "did you mean 'index_topk'" in err


@pytest.mark.parametrize(
    "content,needle",
    [
        ("", "empty"),
        ("hidden_size: [1, 2\n", "YAML syntax error"),
        ("- just\n- a list\n", "mapping"),
        ("extends: no-such-preset\n", "unknown preset"),
        ("extends: missing.yaml\n", "not found"),
    ],
)
def test_bad_files_exit_2(tmp_path, run_cli, content, needle):
    path = tmp_path / "bad.yaml"
    path.write_text(content)
    code, _, err = run_cli("build", str(path))
    assert code == 2 and needle in err and len(err.strip().splitlines()) == 1


def test_missing_file_and_extends_cycle(tmp_path, run_cli):
    code, _, err = run_cli("build", str(tmp_path / "nope.yaml"))
    assert code == 2 and "not found" in err
    (tmp_path / "a.yaml").write_text("extends: b.yaml\n")
    (tmp_path / "b.yaml").write_text("extends: a.yaml\n")
    with pytest.raises(GlmlabError, match="cycle"):
        load_config(str(tmp_path / "a.yaml"))


def test_build_json_reproduces_published_counts(run_cli):
    code, out, _ = run_cli("build", "presets/glm5.yaml", "--json")
    params = json.loads(out)["params"]
    assert code == 0
    assert params["total"] == 743_911_218_432
    assert params["total_with_mtp"] == 753_864_139_008
    assert abs(params["active_non_embedding"] - 39.88e9) < 0.01e9
    code, out, _ = run_cli("build", "deepseek-v3", "--json")
    assert json.loads(out)["params"]["total"] == 671_026_419_200


def test_build_tree_and_presets_table(run_cli):
    code, out, _ = run_cli("build", "glm5-tiny")
    assert code == 0 and "routed experts" in out and "MTP" in out
    code, out, _ = run_cli("presets")
    assert code == 0 and "glm5-tiny" in out and "deepseek-v3.2" in out
