"""The article's claims, checked for one config (docs/accounting.md, "Claims from the article"),
and the claims report: each claim's analytic check beside the measured check from the studies
in experiments/ (their results.json) and from the DSA long-context benchmark's runs, with a verdict
and its evidence."""

from __future__ import annotations

import json
from pathlib import Path

from glmlab.accounting.flops import attention_pair_flops, flops_report, indexer_pair_flops
from glmlab.accounting.memory import kv_cache_bytes_per_token
from glmlab.accounting.params import parameter_counts
from glmlab.config import Config, ModelConfig
from glmlab.errors import GlmlabError
from glmlab.experiment.load import LOAD_TOLERANCE


def check_claims(
    cfg: Config | ModelConfig, long_context: int = 131072, convention: str = "dsa"
) -> list[dict]:
    """Rows of (id, claim, figure for this config, what it means). Sparse figures use the
    config's index_topk; the training saving compares DSA with the same model run dense."""
    m = cfg.model if isinstance(cfg, Config) else cfg
    rows = []
    absorbed, expanded = attention_pair_flops(m, "absorbed"), attention_pair_flops(m, "expanded")
    if m.use_dsa:
        idx = indexer_pair_flops(m)
        rows.append({
            "id": "indexer_cost",
            "claim": "the indexer costs about 5% of self-attention",
            "value": f"{idx / absorbed:.1%} absorbed, {idx / expanded:.1%} expanded",
            "note": f"per scored pair: {idx:,} vs {absorbed:,} (absorbed) / {expanded:,} (expanded) FLOPs",
        })  # fmt: skip
        K, s = m.index_topk, long_context
        avg_sparse = K - K * (K - 1) / (2 * s)
        rows.append({
            "id": "sparse_attention",
            "claim": f"{s // 1024}K context with k = {K} cuts computation by up to 98%",
            "value": f"{1 - K / s:.1%} at the last query; {1 - avg_sparse / ((s + 1) / 2):.1%} of pairs",
            "note": "keys attended by the query at the end of the context; causal prefill average",
        })  # fmt: skip
        dense_cfg = ModelConfig(**{**m.__dict__, "use_dsa": False})
        sparse_t = flops_report(m, s, "train", convention).per_token
        dense_t = flops_report(dense_cfg, s, "train", convention).per_token
        rows.append({
            "id": "dsa_training_flops",
            "claim": f"training FLOPs per token at {s // 1024}K, DSA vs dense",
            "value": f"{1 - sparse_t / dense_t:.1%} fewer",
            "note": f"{sparse_t / 1e9:,.1f} vs {dense_t / 1e9:,.1f} GFLOPs/token ({convention} convention)",
        })  # fmt: skip
    if m.use_moe:
        counts = parameter_counts(m)
        routed = counts["by_component"].get("routed_experts", 0)
        rows.append({
            "id": "experts_active",
            "claim": "only a few experts run per token",
            "value": f"{m.num_experts_per_tok / m.n_routed_experts:.1%} of routed experts",
            "note": f"active parameters {counts['active'] / counts['total']:.1%} of total; routed "
                    f"experts are {routed / counts['total']:.1%} of all parameters",
        })  # fmt: skip
    kv = kv_cache_bytes_per_token(m, "bf16")
    cached = (f"latent {kv['latent']:,} + indexer keys {kv['indexer_keys']:,}" if kv["latent"] else
              f"no latent: {m.attention_type} caches K/V heads")  # fmt: skip
    rows.append({
        "id": "latent_cache",
        "claim": "the latent KV cache is a small fraction of per-head keys and values",
        "value": f"{kv['total'] / kv['expanded']:.1%} of an expanded cache",
        "note": f"{kv['total']:,} B/token ({cached}) vs {kv['expanded']:,} B/token expanded, bf16",
    })  # fmt: skip
    D = m.num_nextn_predict_layers
    if D:
        rows.append({
            "id": "mtp_speedup",
            "claim": "MTP speeds up structured text 2-3x",
            "value": f"at most {D + 1} tokens per verification step (depth {D})",
            "note": "tokens per step = 1 + a1 + a1 a2 + ... for acceptance a_j at draft depth j; the "
                    "speed-up is that over the cost of a step with drafts",
        })  # fmt: skip
    return rows


# --------------------------------------------------------------------------------------------
# Measured checks: the studies' results.json (experiments/results/<study>/)


def _study(results_dir: Path, study: str) -> dict[tuple[str, str], dict] | None:
    """The study's rows by (variant, metric); its timing.json (`glmlab experiment --timing`) adds
    a row `tokens_per_s_alone` per variant, with the ratio to its baseline's."""
    path = results_dir / study / "results.json"
    if not path.is_file():
        return None
    rows = {(r["variant"], r["metric"]): r for r in json.loads(path.read_text())}
    timing = results_dir / study / "timing.json"
    timed = json.loads(timing.read_text())["variants"] if timing.is_file() else {}
    # a timing counts when it ran alone (a load within LOAD_TOLERANCE of one cell), and so did its baseline's
    alone = {
        v: t for v, t in timed.items() if "tokens_per_s" in t and (t["device_load"] or 1) <= LOAD_TOLERANCE
    }
    for v, t in alone.items():
        base = alone.get(t["baseline"]) if t["baseline"] != v else None
        if base is not None:
            ratio = t["tokens_per_s"] / base["tokens_per_s"]
            rows[(v, "tokens_per_s_alone")] = {"variant": v, "metric": "tokens_per_s_alone",
                                               "mean": t["tokens_per_s"], "baseline": t["baseline"],
                                               "ratio": ratio}  # fmt: skip
    return rows


def _interval(low: float | None, high: float | None) -> str:
    return f"[{low:.4g}, {high:.4g}]" if low is not None else "one seed, no interval"


def _ci(r: dict) -> str:
    return f"{r['mean']:.4g} {_interval(r['ci95_low'], r['ci95_high'])}"


def _diff(r: dict) -> str:
    verdict = {True: "significant", False: "not significant", None: "no interval"}[r["significant"]]
    interval = _interval(r["diff_ci95_low"], r["diff_ci95_high"])
    return f"{r['diff_mean']:+.4g} vs {r['baseline']} ({interval}, {verdict})"


# A variant timed alone counts as faster than its baseline from this ratio of tokens/s (one timing
# run per variant has no interval; repeated profile steps on an H200 vary by a few percent).
FASTER_ALONE = 1.05


def _measure_sparse(rows: dict) -> tuple[str, str]:
    """Speed from the variants timed alone when the study was timed, else from the cells, whose
    differences count only where both cells trained under a like load (no `load_note`)."""
    alone = [r for (v, m), r in rows.items() if m == "tokens_per_s_alone"]
    speeds = [r for (v, m), r in rows.items() if m == "tokens_per_s" and r.get("diff_mean") is not None]
    flops = {v: r["mean"] for (v, m), r in rows.items() if m == "train_flops_per_token"}
    if alone:
        parts = [f"k={r['variant']}: {r['ratio']:.2f}x the tokens/s of {r['baseline']}, alone on the device"
                 for r in alone]  # fmt: skip
        faster = [r for r in alone if r["ratio"] >= FASTER_ALONE]
        where = ", alone on the device"
    else:
        parts = [f"k={r['variant']}: tokens/s {_diff(r)}" + (f", {r['load_note']}" if r.get("load_note")
                                                               else "") for r in speeds]  # fmt: skip
        faster = [r for r in speeds if r["significant"] and r["diff_mean"] > 0 and not r.get("load_note")]
        where = " in the cells (which shared the device; `glmlab experiment --timing` times each alone)"
    base = next((r["baseline"] for r in alone or speeds), None)
    if base in flops:
        parts += [f"FLOPs/token k={v} {f / flops[base]:.1%} of {base}" for v, f in flops.items() if v != base]
    at = f"at the study's context{where}"
    verdict = (f"sparse attention trained faster {at}" if faster else
               f"no measured time saving {at}: the saving is in counted FLOPs")  # fmt: skip
    return verdict, "; ".join(parts)


def _measure_experts(rows: dict) -> tuple[str, str]:
    share = {v: r["mean"] for (v, m), r in rows.items() if m == "experts_active_share"}
    losses = [r for (v, m), r in rows.items() if m == "val_loss" and r.get("diff_mean") is not None]
    parts = [f"{v}: {s:.1%} of experts active" for v, s in share.items()]
    parts += [f"{r['variant']} val loss {_diff(r)}" for r in losses]
    return "the share follows top-k / experts; loss differences as listed", "; ".join(parts)


def _measure_mtp(rows: dict) -> tuple[str, str]:
    speed = [r for (v, m), r in rows.items() if m in ("spec_speedup_json", "spec_speedup_sql")]
    if not speed:
        return "not measured (no speed-up in the study's results)", ""

    def name(r: dict) -> str:
        return f"{r['variant']} {r['metric'].removeprefix('spec_speedup_')}"

    parts = [f"{name(r)}: {_ci(r)}x" for r in speed]
    above = [r for r in speed if r["ci95_low"] is not None and r["ci95_low"] >= 2]
    if above:  # a variant whose whole interval clears 2x, not just its mean
        best = max(above, key=lambda r: r["ci95_low"])
        verdict = f"reproduced: {name(best)} {_ci(best)}x, its 95% interval at or above 2x"
    else:
        best = max(speed, key=lambda r: r["mean"])
        verdict = (f"not reproduced at this scale: no 95% interval at or above 2x; best mean "
                   f"{best['mean']:.2f}x ({name(best)})")  # fmt: skip
    return verdict, "; ".join(parts)


def _measure_cache(rows: dict) -> tuple[str, str]:
    kv = [r for (v, m), r in rows.items() if m == "kv_cache_bytes_per_token"]
    loss = [r for (v, m), r in rows.items() if m == "val_loss" and r.get("diff_mean") is not None]
    parts = [f"{r['variant']}: {r['mean']:,.0f} B/token" for r in kv]
    parts += [f"{r['variant']} val loss {_diff(r)}" for r in loss]
    return "cache sizes from the calculator for each trained variant; loss as listed", "; ".join(parts)


MEASURED = {  # claim id -> (study, what it measures)
    "sparse_attention": ("dsa_topk", _measure_sparse),
    "experts_active": ("moe_granularity", _measure_experts),
    "mtp_speedup": ("mtp_depth", _measure_mtp),
    "latent_cache": ("attention", _measure_cache),
}


# --------------------------------------------------------------------------------------------
# Measured checks from the DSA long-context benchmark: the JSON that
# `benchmarks/bench_dsa_long_context.py --json` writes, kept in experiments/results/dsa_long_context/

BENCH = "dsa_long_context"
# The indexer's scoring and top-k kernels (glmlab/kernels/indexer.py), as the benchmark's profile
# names them; a test checks that each is defined there.
INDEXER_KERNELS = (
    "_scores_fwd_kernel",
    "_quantize_kernel",
    "_cut_kernel",
    "_collect_kernel",
    "_select_kernel",
)
# What makes a benchmark run speak for a config: the attention's shape, the indexer's k and dtype.
ATTENTION_FIELDS = (
    "hidden_size",
    "num_attention_heads",
    "q_lora_rank",
    "kv_lora_rank",
    "qk_nope_head_dim",
    "qk_rope_head_dim",
    "v_head_dim",
    "index_n_heads",
    "index_head_dim",
    "index_topk",
    "index_dtype",
)
# "About 5%": a measured share within twice that counts as agreeing.
INDEXER_SHARE_CLAIMED = 0.05


def _bench_runs(results_dir: Path, m: ModelConfig) -> list[dict]:
    """Per benchmark file and mode, the row at the longest context where both DSA and dense ran,
    from runs of this config's attention shape; each labelled with its context, layers and indexer."""
    out = []
    for path in sorted((results_dir / BENCH).glob("*.json")):
        try:
            data = json.loads(path.read_text())
            if any(data["config"].get(f) != getattr(m, f) for f in ATTENTION_FIELDS):
                continue
            timed = [r for r in data["rows"] if r["dsa"].get("seconds") and r["dense"].get("seconds")]
            for mode in sorted({r["mode"] for r in timed}):
                row = max((r for r in timed if r["mode"] == mode), key=lambda r: r["context"])
                label = (
                    f"{row['context'] // 1024}K {mode}, {data['layers']} layers, "
                    f"{data['config']['index_dtype']} indexer ({path.name})"
                )
                out.append({**row, "label": label})
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as err:
            raise GlmlabError(
                f"{path}: not a run of benchmarks/bench_dsa_long_context.py --json ({type(err).__name__}: "
                f"{err}); remove it or write it again"
            ) from None
    return out


def _dense_attention(row: dict) -> dict | None:
    """The dense run's attention operator (SDPA) from the profile: its FLOPs and seconds (None where
    the profile's times were not believable)."""
    return next(
        (op for name, op in row["dense"].get("ops", {}).items() if "scaled_dot_product" in name), None
    )


def _indexer_kernel(name: str) -> bool:
    """The indexer's Triton kernels, or torch.topk's (the selection below RADIX_FROM_KEYS keys; the
    benchmark's attention slice has no routers, whose top-k would also match)."""
    return name in INDEXER_KERNELS or "topk" in name.lower()


def _versus(row: dict) -> str:
    return f"{row['label']}: DSA {row['dsa']['seconds']:.3f} s vs dense {row['dense']['seconds']:.3f} s"


def _bench_indexer(runs: list[dict]) -> tuple[str, str]:
    parts, shares = [], []
    for r in runs:
        attention, index_op = _dense_attention(r), r["dsa"].get("ops", {}).get("glmlab::index_topk")
        if r["mode"] != "prefill" or attention is None or index_op is None or not r["dsa"].get("top"):
            continue
        if attention["seconds"] is None:  # the profiler misattributed that run's kernels
            continue
        indexer_s = sum(ms for name, ms, _ in r["dsa"]["top"] if _indexer_kernel(name)) / 1e3
        shares.append(indexer_s / attention["seconds"])
        parts.append(
            f"{r['label']}: indexer kernels {indexer_s * 1e3:,.0f} ms = {shares[-1]:.1%} of dense "
            f"attention's {attention['seconds'] * 1e3:,.0f} ms; counted FLOPs "
            f"{index_op['flops'] / attention['flops']:.1%} of its"
        )
    if not shares:
        return "", ""
    span = f"{min(shares):.1%}" + (f"-{max(shares):.1%}" if len(shares) > 1 else "")
    agrees = min(shares) <= 2 * INDEXER_SHARE_CLAIMED
    verdict = (
        f"{'reproduced' if agrees else 'not reproduced'} in time: the indexer takes {span} of dense "
        "FlashAttention's time in the long-context prefill"
    )
    return verdict, "; ".join(parts)


def _sparse_part(r: dict) -> str:
    part = f"{_versus(r)} ({r['ratio']:.2f}x)"
    attention, ops = _dense_attention(r), r["dsa"].get("ops", {})
    if attention is not None and "glmlab::sparse_mla_fwd" in ops:
        sparse = ops["glmlab::sparse_mla_fwd"]["flops"]
        indexer = ops.get("glmlab::index_topk", {}).get("flops", 0)
        part += (
            f", sparse attention's counted FLOPs {sparse / attention['flops']:.1%} of dense attention's, "
            f"{(sparse + indexer) / attention['flops']:.1%} with the indexer"
        )
    return part


def _bench_sparse(runs: list[dict]) -> tuple[str, str]:
    rows = [r for r in runs if r["mode"] == "prefill"]
    if not rows:
        return "", ""
    r = max(rows, key=lambda r: r["context"])  # the longest context, not the best ratio
    verdict = f"at {r['context'] // 1024}K a prefill ran {r['ratio']:.2f}x faster than dense ({r['label']})"
    return verdict, "; ".join(map(_sparse_part, rows))


def _bench_training(runs: list[dict]) -> tuple[str, str]:
    rows = [r for r in runs if r["mode"] == "train"]
    if not rows:
        return "", ""
    parts = [f"{_versus(r)} a training step ({r['ratio']:.2f}x faster; the calculator's FLOP ratio "
             f"{r['predicted']:.2f}x)" for r in rows]  # fmt: skip
    r = max(rows, key=lambda r: r["context"])
    share = r["ratio"] / r["predicted"]
    verdict = (f"at {r['context'] // 1024}K a training step ran {r['ratio']:.2f}x faster than dense, "
               f"{share:.0%} of the {r['predicted']:.2f}x its counted FLOPs allow")  # fmt: skip
    return verdict, "; ".join(parts)


BENCHED = {  # claim id -> what the long-context benchmark measures of it
    "indexer_cost": _bench_indexer,
    "sparse_attention": _bench_sparse,
    "dsa_training_flops": _bench_training,
}


def claims_report(cfg: Config | ModelConfig, results_dir: str | Path = "experiments/results") -> list[dict]:
    """Each claim of `check_claims` with its measured check: the study that tests it, a verdict
    and the evidence (means, 95% intervals, paired differences), or why there is none."""
    m = cfg.model if isinstance(cfg, Config) else cfg
    runs = _bench_runs(Path(results_dir), m)
    out = []
    for row in check_claims(m):
        sources, verdicts, measured = [], [], []
        if row["id"] in MEASURED:
            study, measure = MEASURED[row["id"]]
            rows = _study(Path(results_dir), study)
            sources.append(study)
            if rows is None:
                verdicts.append(f"not measured yet: glmlab experiment experiments/{study}.yaml")
            else:
                verdict, evidence = measure(rows)
                verdicts.append(verdict)
                measured.append(evidence)
        if row["id"] in BENCHED:
            verdict, evidence = BENCHED[row["id"]](runs)
            if evidence:
                sources.append(BENCH)
                verdicts.append(verdict)
                measured.append(evidence)
        out.append(
            {
                **row,
                "study": ", ".join(sources) or None,
                "measured": " | ".join(filter(None, measured)),
                "verdict": "; ".join(verdicts) or "analytic only: no study measures it",
            }
        )
    return out


def claims_markdown(rows: list[dict], name: str, results_dir: str | Path) -> str:
    """The report as markdown: one section per claim."""
    lines = [f"# The article's claims, checked for {name}", "",
             f"Analytic checks from the calculator; measured checks from "
             f"`{results_dir}/<study>/results.json` and from the DSA long-context benchmark's runs in "
             f"`{results_dir}/{BENCH}/` (`glmlab claims` regenerates this file).", ""]  # fmt: skip
    for r in rows:
        lines += [f"## {r['claim']}", "", f"- Analytic: {r['value']} ({r['note']}).",
                  f"- Measured ({r['study'] or 'no study'}): {r['measured'] or '-'}.",
                  f"- Verdict: {r['verdict']}.", ""]  # fmt: skip
    return "\n".join(lines)
