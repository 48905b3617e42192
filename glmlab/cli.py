"""The `glmlab` command: a thin typer layer over the library. Errors in the user's input
print one line and exit with status 2."""

from __future__ import annotations

import json
import sys
from typing import Optional

import typer
from rich import box
from rich.console import Console
from rich.table import Table
from rich.tree import Tree

from glmlab.errors import GlmlabError

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    help="glmlab: build, train, generate with and account for GLM-5-style models.",
)
console = Console()

CONFIG_ARG = typer.Argument(..., help="A preset name (glm5-tiny) or a YAML file.")
SET_OPT = typer.Option(None, "--set", help="Override a field: --set index_topk=64 (repeatable).")


def _fmt(n: float) -> str:
    for unit, size in (("T", 1e12), ("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if abs(n) >= size:
            return f"{n / size:.2f}{unit}"
    return str(int(n))


@app.command()
def presets() -> None:
    """List the presets with their headline numbers."""
    from glmlab.build import build_model, parameter_report
    from glmlab.config import load_config, preset_names

    table = Table(title="glmlab presets", box=box.SIMPLE)
    for col in ("preset", "layers", "experts", "DSA k", "MTP D", "total", "active"):
        table.add_column(col, justify="left" if col == "preset" else "right", no_wrap=True)
    for name in preset_names():
        cfg = load_config(name)
        m = cfg.model
        report = parameter_report(build_model(cfg, "meta"))
        experts = f"{m.num_experts_per_tok}/{m.n_routed_experts}" if m.use_moe else "dense"
        table.add_row(
            name, str(m.num_hidden_layers), experts,
            str(m.index_topk) if m.use_dsa else "-", str(m.num_nextn_predict_layers),
            _fmt(report["total"]), _fmt(report["active"]),
        )  # fmt: skip
    console.print(table)


@app.command()
def build(
    config: str = CONFIG_ARG,
    set_: Optional[list[str]] = SET_OPT,  # noqa: UP045 (typer needs Optional here)
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object instead of tables."),
) -> None:
    """Validate a config, build the model on the meta device, and count its parameters."""
    from glmlab.build import build_model, layer_summary, parameter_report
    from glmlab.config import load_config

    cfg = load_config(config, set_)
    model = build_model(cfg, "meta")
    report = parameter_report(model)
    layers = layer_summary(model)
    if as_json:
        out = {"name": cfg.name, "config": cfg.to_dict(), "params": report, "layers": layers}
        print(json.dumps(out, indent=2))
        return
    m = cfg.model
    tree = Tree(f"[bold]{cfg.name}[/] ({m.model_type}): {_fmt(report['total'])} total, "
                f"{_fmt(report['active'])} active per token")  # fmt: skip
    tree.add(f"embedding  {m.vocab_size} x {m.hidden_size} = {_fmt(report['by_component']['embedding'])}")
    for row in layers:
        first, last = row["layers"][0], row["layers"][-1]
        span = f"layer {first}" if first == last else f"layers {first}-{last}"
        node = tree.add(
            f"{span} ({len(row['layers'])} x {_fmt(row['params'])}): {row['attention']}, {row['kind']} FFN"
        )
        if row["kind"] == "MoE":
            node.add(f"{m.n_routed_experts} routed experts (top-{m.num_experts_per_tok}) of width "
                     f"{m.moe_intermediate_size}, {m.n_shared_experts} shared")  # fmt: skip
    tree.add(
        f"final norm, lm_head {m.hidden_size} x {m.vocab_size} = {_fmt(report['by_component']['lm_head'])}"
    )
    if m.num_mtp_modules:
        how = "shared across depths" if m.mtp_share_modules else "one per depth"
        tree.add(f"MTP: {m.num_mtp_modules} module(s), depth {m.num_nextn_predict_layers} ({how}) "
                 f"= {_fmt(report['mtp'])}")  # fmt: skip
    console.print(tree)
    table = Table(title="parameters by component")
    for col in ("component", "total", "active / token", "MTP"):
        table.add_column(col, justify="left" if col == "component" else "right")
    mtp_parts = report["mtp_by_component"]
    for comp in [*report["by_component"], *(c for c in mtp_parts if c not in report["by_component"])]:
        n, active = report["by_component"].get(comp, 0), report["active_by_component"].get(comp, 0)
        table.add_row(comp, f"{n:,}", f"{active:,}", f"{mtp_parts.get(comp, 0):,}")
    table.add_row("[bold]total", f"[bold]{report['total']:,}", f"[bold]{report['active']:,}",
                  f"[bold]{report['mtp']:,}")  # fmt: skip
    console.print(table)
    console.print(
        f"total {report['total']:,} | with MTP {report['total_with_mtp']:,} | "
        f"active {report['active']:,} | active without embedding and head {report['active_non_embedding']:,}"
    )


@app.command()
def train(
    config: str = typer.Argument(..., help="A preset, a YAML file, or (with --resume) a run folder."),
    set_: Optional[list[str]] = SET_OPT,  # noqa: UP045
    data: Optional[str] = typer.Option(None, "--data", help="stdlib, synthetic, or a file/folder/glob."),  # noqa: UP045
    steps: Optional[int] = typer.Option(None, "--steps", help="Total optimiser steps of the run."),  # noqa: UP045
    out: Optional[str] = typer.Option(None, "--out", help="Run folder (default runs/<name>-<time>)."),  # noqa: UP045
    resume: bool = typer.Option(False, "--resume", help="Continue the run in --out from its checkpoint."),
    device: str = typer.Option("auto", "--device", help="auto, cpu or cuda."),
    seed: Optional[int] = typer.Option(None, "--seed", help="Overrides train.seed."),  # noqa: UP045
) -> None:
    """Train a model on the built-in corpus or your own text; Ctrl-C saves a resumable checkpoint
    (exit 130; SIGTERM exits 143)."""
    from glmlab.train import resolve_run
    from glmlab.train import train as run_training

    cfg, run_dir = resolve_run(config, set_, out, resume, data, steps, seed)
    console.print(f"run folder [bold]{run_dir}[/] ({'resuming' if resume else 'new run'})")
    result = run_training(cfg, run_dir, resume, device, console)
    print_summary(cfg.name, result.summary)
    if result.signum is not None:
        raise typer.Exit(128 + result.signum)


STOP_OPT = typer.Option(None, "--stop", help="Stop when this text appears; \\n is a newline (repeatable).")


@app.command()
def generate(
    source: str = typer.Argument(..., help="A run folder, a checkpoint, or a HF folder with a tokenizer."),
    prompt: Optional[str] = typer.Option(None, "--prompt", help="The text to continue."),  # noqa: UP045
    prompts_file: Optional[str] = typer.Option(None, "--prompts-file", help="One prompt a line."),  # noqa: UP045
    max_new_tokens: int = typer.Option(128, "--max-new-tokens", help="Most tokens to add."),
    temperature: float = typer.Option(0.0, "--temperature", help="0 is greedy."),
    top_k: int = typer.Option(0, "--top-k", help="Sample among the k likeliest tokens (0: all)."),
    top_p: float = typer.Option(1.0, "--top-p", help="Sample among the likeliest tokens of this mass."),
    seed: Optional[int] = typer.Option(None, "--seed", help="Make sampling repeatable."),  # noqa: UP045
    stop: Optional[list[str]] = STOP_OPT,  # noqa: UP045
    speculative: int = typer.Option(0, "--speculative", help="Draft K tokens a step with MTP."),
    no_cache: bool = typer.Option(False, "--no-cache", help="Recompute everything each step (reference)."),
    prefill_chunk: int = typer.Option(512, "--prefill-chunk", help="Prompt tokens per prefill pass."),
    as_json: bool = typer.Option(False, "--json", help="One JSON object per prompt, no streaming."),
    device: str = typer.Option("auto", "--device", help="auto, cpu or cuda."),
) -> None:
    """Continue a prompt: latent-cache decoding, sampling, MTP speculative decoding."""
    from pathlib import Path

    from glmlab.generate import Generator, SamplingParams

    if (prompt is None) == (prompts_file is None):
        raise GlmlabError("give exactly one of --prompt TEXT or --prompts-file FILE")
    if prompts_file is not None:
        if not Path(prompts_file).is_file():
            raise GlmlabError(f"--prompts-file {prompts_file} does not exist: give a text file")
        prompts = [line for line in Path(prompts_file).read_text().splitlines() if line.strip()]
    else:
        prompts = [prompt]
    sampling = SamplingParams(temperature, top_k, top_p, seed)
    gen = Generator.from_source(source, device)
    err = Console(stderr=True)
    stops = [s.replace("\\n", "\n").replace("\\t", "\t") for s in stop or ()]
    for text in prompts:
        gen.check(len(gen.encode(text)), max_new_tokens, speculative, not no_cache)
        stream = None if as_json else (lambda s: print(s, end="", flush=True))
        if stream is not None:
            print(text, end="", flush=True)
        result = gen.generate(text, max_new_tokens, sampling, speculative, not no_cache, stops,
                              prefill_chunk, stream)  # fmt: skip
        if as_json:
            print(json.dumps(result.to_dict()))
            continue
        print(flush=True)
        line = (f"{result.new_tokens} tokens ({result.finish_reason}), {result.tokens_per_second:.1f} "
                f"tokens/s, prefill {result.prefill_seconds * 1000:.0f} ms")  # fmt: skip
        if result.speculative is not None:
            spec = result.speculative
            rates = ", ".join(f"{r:.0%}" for r in spec.acceptance)
            line += f"; MTP K={spec.depth}: acceptance [{rates}], {spec.tokens_per_step:.2f} tokens/step"
            if spec.note:
                line += f" ({spec.note})"
        err.print(f"[dim]{line}[/]", highlight=False)


@app.command()
def flops(
    config: str = CONFIG_ARG,
    seq: str = typer.Option("4096", "--seq", help="Context length(s): 4096, or a sweep 4k,32k,128k."),
    batch: int = typer.Option(1, "--batch", help="Sequences per step (FLOPs and memory per step)."),
    convention: str = typer.Option("glmlab", "--convention", help="megatron, dsa or glmlab."),
    no_mtp: bool = typer.Option(False, "--no-mtp", help="Leave the MTP modules out."),
    attention: Optional[str] = typer.Option(None, "--attention", help="dsa only: expanded or absorbed."),  # noqa: UP045
    dtype: str = typer.Option("bf16", "--dtype", help="Inference weights and KV cache: bf16, fp8, fp32."),
    device: str = typer.Option(
        "cpu", "--device", help="cpu or cuda: whose execution the glmlab convention counts."
    ),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object instead of tables."),
    plot: Optional[str] = typer.Option(None, "--plot", help="Write a PNG of FLOPs/token vs context."),  # noqa: UP045
    set_: Optional[list[str]] = SET_OPT,  # noqa: UP045
) -> None:
    """Analytic FLOPs, parameters and memory of a config (no model is built)."""
    from glmlab.accounting.report import flops_summary, parse_lengths
    from glmlab.config import load_config

    cfg = load_config(config, set_)
    if batch < 1:
        raise GlmlabError(f"--batch must be at least 1, got {batch}")
    if device not in ("cpu", "cuda"):
        raise GlmlabError(f"--device must be cpu or cuda, got '{device}'")
    seqs = parse_lengths(seq)
    summary = flops_summary(cfg, seqs, batch, convention, not no_mtp, dtype, attention, device)
    if plot:
        from glmlab.accounting.plot import plot_flops_vs_context

        path = plot_flops_vs_context(cfg, plot, convention, not no_mtp, max(seqs), device)
        Console(stderr=True).print(f"wrote {path}")
    if as_json:
        print(json.dumps(summary, indent=2))
        return
    _print_flops(summary)


def _print_flops(s: dict) -> None:
    mtp = "with MTP" if s["mtp"] else "no MTP"
    console.print(
        f"[bold]{s['name']}[/]: {s['convention']} convention ({mtp}; attention {s['attention_form']}; "
        f"{s['device']}): "
        f"{s['convention_description']}"
    )
    sweep = s["sweep"]
    table = Table(title="GFLOPs per token, training step (forward + backward) by component")
    table.add_column("component")
    for entry in sweep:
        table.add_column(f"s={entry['seq_len']:,}", justify="right")
        table.add_column("share", justify="right")
    comps = list(dict.fromkeys(c for e in sweep for c in e["breakdown"]))
    for comp in comps:
        cells = []
        for e in sweep:
            v = e["breakdown"].get(comp, 0.0)
            cells += [f"{v / 1e9:,.3f}", f"{v / e['training_flops_per_token']:.1%}"]
        table.add_row(comp, *cells)
    for key, label in (
        ("training_flops_per_token", "training"),
        ("forward_flops_per_token", "forward"),
        ("prefill_flops_per_token", "prefill"),
        ("decode_flops_per_token", "decode at s-1"),
    ):
        table.add_row(f"[bold]{label}", *[c for e in sweep for c in (f"[bold]{e[key] / 1e9:,.3f}", "")])
    console.print(table)  # fmt: skip
    first = sweep[0]
    layers = Table(title=f"by layer at s={first['seq_len']:,} (training GFLOPs per token)")
    for col in ("layers", "kind", "each", "total"):
        layers.add_column(col, justify="left" if col in ("layers", "kind") else "right")
    groups: list[list] = []
    for row in first["by_layer"]:
        if (
            groups
            and groups[-1][1] == row["kind"]
            and abs(groups[-1][2] - row["flops"]) < 1e-9 * row["flops"] + 1
        ):
            groups[-1][0].append(row["layer"])
        else:
            groups.append([[row["layer"]], row["kind"], row["flops"]])
    for names, kind, each in groups:
        span = names[0] if len(names) == 1 else f"{names[0]}-{names[-1]}"
        layers.add_row(span, kind, f"{each / 1e9:,.3f}", f"{each * len(names) / 1e9:,.3f}")
    console.print(layers)
    mem = Table(title=f"training memory at s={first['seq_len']:,}, batch {first['batch']}")
    for col in ("", "weights", "gradients", "optimizer", "activations", "total"):
        mem.add_column(col, justify="left" if not col else "right")
    for label, key in (("fp32 AdamW", "memory_fp32"), ("bf16 mixed, fp32 master", "memory_bf16_mixed")):
        m = first[key]
        mem.add_row(
            label, *[_bytes(m[k]) for k in ("weights", "gradients", "optimizer", "activations", "total")]
        )
    console.print(mem)
    kv, inf = s["kv_cache_dtype"], first["memory_inference"]
    console.print(
        f"KV cache per token ({kv['dtype']}): latent {kv['latent']:,} B + indexer keys "
        f"{kv['indexer_keys']:,} B = {kv['total']:,} B (expanded K/V would be {kv['expanded']:,} B; "
        f"MTP adds {kv['mtp']:,} B)\n"
        f"inference at s={first['seq_len']:,}, batch {first['batch']}: weights {_bytes(inf['weights'])} + "
        f"cache {_bytes(inf['kv_cache'])} = {_bytes(inf['total'])}"
    )
    p = s["params"]
    console.print(
        f"parameters: {p['total']:,} total, {p['active']:,} active, {p['total_with_mtp']:,} with MTP"
    )
    if s["claims"]:
        claims = Table(title="the article's claims, for this config")
        for col in ("claim", "here", "how"):
            claims.add_column(col)
        for row in s["claims"]:
            claims.add_row(row["claim"], row["value"], row["note"])
        console.print(claims)


def _bytes(n: float) -> str:
    for unit, size in (("TB", 1e12), ("GB", 1e9), ("MB", 1e6), ("KB", 1e3)):
        if abs(n) >= size:
            return f"{n / size:.2f} {unit}"
    return f"{int(n)} B"


@app.command()
def profile(
    config: str = CONFIG_ARG,
    seq: Optional[int] = typer.Option(None, "--seq", help="Tokens per sequence (train.seq_len)."),  # noqa: UP045
    batch: Optional[int] = typer.Option(None, "--batch", help="Sequences per step (train.batch_size)."),  # noqa: UP045
    steps: int = typer.Option(2, "--steps", help="Timed training steps (after one counted step)."),
    device: str = typer.Option("cpu", "--device", help="cpu or cuda."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object instead of a table."),
    set_: Optional[list[str]] = SET_OPT,  # noqa: UP045
) -> None:
    """Run real training and decoding steps; compare measured FLOPs, memory and time with the estimate."""
    from glmlab.config import load_config
    from glmlab.measure import profile as run_profile

    if device not in ("cpu", "cuda") and not device.startswith("cuda:"):
        raise GlmlabError(f"--device must be cpu or cuda, got '{device}'")
    result = run_profile(load_config(config, set_), seq, batch, steps, device)
    if as_json:
        print(json.dumps(result, indent=2))
        return
    print_profile(result)


@app.command()
def quickstart(
    steps: Optional[int] = typer.Option(None, "--steps", help="Training steps (default: glm5-tiny's)."),  # noqa: UP045
    out: Optional[str] = typer.Option(None, "--out", help="Run folder (default runs/quickstart-<time>)."),  # noqa: UP045
    device: str = typer.Option("auto", "--device", help="auto, cpu or cuda."),
    prompt: str = typer.Option("def __init__(self", "--prompt", help="Text to continue after training."),
) -> None:
    """The tour in one command: train glm5-tiny on the built-in corpus, generate from it (plain and
    MTP-speculative), and compare the FLOP and memory estimates with a measured training step."""
    import time as _time

    from glmlab.generate import Generator
    from glmlab.measure import profile as run_profile
    from glmlab.train import resolve_run
    from glmlab.train import train as run_training

    out = out or f"runs/quickstart-{_time.strftime('%Y%m%d-%H%M%S')}"
    cfg, run_dir = resolve_run("glm5-tiny", None, out, False, None, steps, None)
    console.rule("1. train glm5-tiny on the Python standard library")
    console.print(f"run folder [bold]{run_dir}[/]")
    result = run_training(cfg, run_dir, False, device, console)
    print_summary(cfg.name, result.summary)
    if result.signum is not None:
        raise typer.Exit(128 + result.signum)

    console.rule("2. generate (greedy), then again with MTP drafts")
    gen = Generator.from_source(str(run_dir), device)
    print(prompt, end="", flush=True)
    plain = gen.generate(prompt, 64, on_text=lambda s: print(s, end="", flush=True))
    print(flush=True)
    spec = gen.generate(prompt, 64, speculative=2)
    rates = ", ".join(f"{r:.0%}" for r in spec.speculative.acceptance)
    console.print(
        f"plain: {plain.tokens_per_second:.1f} tokens/s | MTP K=2: {spec.tokens_per_second:.1f} tokens/s, "
        f"acceptance [{rates}], {spec.speculative.tokens_per_step:.2f} tokens/step, "
        f"same text: {spec.text == plain.text}",
        highlight=False,
    )
    if spec.tokens_per_second < plain.tokens_per_second:
        console.print("[dim]drafts pay off once most are accepted: this short run's are not "
                      "(README, Benchmarks: a 3,000-step glm5-tiny decodes 1.3-1.4x faster)[/]")  # fmt: skip

    console.rule("3. estimate vs measured: one training step and one decoding step")
    print_profile(run_profile(cfg, None, None, 1, "cuda" if gen.device.type == "cuda" else "cpu"))
    console.print(f"next: glmlab generate {run_dir} --prompt 'import ' | glmlab flops glm5 --seq 4k,128k")


def print_summary(name: str, summary: dict) -> None:
    """The final table of a training run."""
    table = Table(title=f"{name}: summary")
    table.add_column("metric")
    table.add_column("value", justify="right")
    for key, value in summary.items():
        table.add_row(key, f"{value:.4g}" if isinstance(value, float) else str(value))
    console.print(table)


def print_profile(result: dict) -> None:
    """Estimate beside measurement for one `glmlab.measure.profile` result."""
    table = Table(
        title=f"{result['config']} on {result['device']}: seq {result['seq_len']}, batch {result['batch']}"
    )
    for col in ("quantity", "estimated (glmlab)", "measured", "est / meas"):
        table.add_column(col, justify="left" if col == "quantity" else "right")
    table.add_row(
        "training step FLOPs",
        _fmt(result["flops_estimated"]),
        _fmt(result["flops_measured"]),
        f"{result['flops_ratio']:.3f}",
    )
    table.add_row(
        "peak memory",
        _bytes(result["peak_memory_estimated_bytes"]),
        _bytes(result["peak_memory_measured_bytes"]),
        f"{result['peak_memory_ratio']:.3f}",
    )
    table.add_row(
        "decode step FLOPs",
        _fmt(result["decode_flops_estimated"]),
        _fmt(result["decode_flops_measured"]),
        f"{result['decode_flops_estimated'] / max(result['decode_flops_measured'], 1):.3f}",
    )
    console.print(table)  # fmt: skip
    line = (
        f"step {result['step_time_s'] * 1000:.0f} ms, {result['tokens_per_s']:,.0f} tokens/s, "
        f"{result['achieved_flops_per_s'] / 1e12:.3f} TFLOP/s; matmul peak "
        f"{result['matmul_peak_flops_per_s'] / 1e12:.3f} TFLOP/s -> MFU {result['mfu_vs_measured_peak']:.1%}"
    )
    if "mfu_vs_table_peak" in result:
        line += f" (vs 989 TFLOP/s table peak: {result['mfu_vs_table_peak']:.1%})"
    console.print(line)
    console.print(f"decoding: {result['decode_step_time_s'] * 1000:.1f} ms/step, "
                  f"{result['decode_tokens_per_s']:,.1f} tokens/s")  # fmt: skip


def main() -> None:
    """Entry point: run the app, turning GlmlabError into one line and exit status 2."""
    try:
        app()
    except GlmlabError as err:
        Console(stderr=True).print(f"[red]error:[/] {err}", highlight=False, soft_wrap=True)
        sys.exit(2)


if __name__ == "__main__":
    main()
