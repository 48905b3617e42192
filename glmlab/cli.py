"""The `glmlab` command: a thin map from commands to library functions and their renderers
(glmlab/report/). Errors in the user's input print one line and exit with status 2."""

from __future__ import annotations

import json
import sys
from typing import Optional

import typer
from rich.console import Console
from rich.markup import escape

from glmlab.device import DEVICE_HELP, parse_device
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
JSON_OPT = typer.Option(False, "--json", help="Print one JSON object instead of tables.")
DEVICE_OPT = typer.Option("auto", "--device", help=DEVICE_HELP)


def _version(value: bool) -> None:
    if value:
        from importlib.metadata import version

        print(f"glmlab {version('glmlab')}")
        raise typer.Exit()


@app.callback()
def _options(
    version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="Print the version."
    ),
) -> None:
    """glmlab: build, train, generate with and account for GLM-5-style models."""


@app.command()
def presets() -> None:
    """List the presets with their parameter counts (analytic: no model is built)."""
    from glmlab.report.build import preset_rows, print_presets

    print_presets(preset_rows(), console)


@app.command()
def build(
    config: str = CONFIG_ARG,
    set_: Optional[list[str]] = SET_OPT,  # noqa: UP045 (typer needs Optional here)
    as_json: bool = JSON_OPT,
) -> None:
    """Validate a config, build the model on the meta device, and count its parameters."""
    from glmlab.build import build_model, layer_summary, parameter_report
    from glmlab.config import load_config
    from glmlab.report.build import print_build

    cfg = load_config(config, set_)
    model = build_model(cfg, "meta")
    report, layers = parameter_report(model), layer_summary(model)
    if as_json:
        print(
            json.dumps(
                {"name": cfg.name, "config": cfg.to_dict(), "params": report, "layers": layers}, indent=2
            )
        )
        return
    print_build(cfg, report, layers, console)


@app.command()
def train(
    config: str = typer.Argument(..., help="A preset or YAML file (a new run), or a run folder (--resume)."),
    set_: Optional[list[str]] = SET_OPT,  # noqa: UP045
    data: Optional[str] = typer.Option(None, "--data", help="stdlib, synthetic, or a file/folder/glob."),  # noqa: UP045
    steps: Optional[int] = typer.Option(None, "--steps", help="Total optimiser steps of the run."),  # noqa: UP045
    out: Optional[str] = typer.Option(None, "--out", help="Run folder (default runs/<name>-<time>)."),  # noqa: UP045
    resume: bool = typer.Option(
        False,
        "--resume",
        help="Continue the run folder given first: glmlab train RUN_DIR --resume [--steps N].",
    ),
    device: str = DEVICE_OPT,
    seed: Optional[int] = typer.Option(None, "--seed", help="Overrides train.seed."),  # noqa: UP045
    tensorboard: bool = typer.Option(False, "--tensorboard", help="Also log to <run>/tensorboard."),
    nproc: int = typer.Option(1, "--nproc-per-node", help="Ranks on this machine, one per GPU (FSDP2)."),
) -> None:
    """Train a model on the built-in corpus or your own text; Ctrl-C saves a resumable checkpoint
    (exit 130; SIGTERM exits 143). `--nproc-per-node N` (or torchrun) trains on N ranks."""
    from dataclasses import replace
    from functools import partial

    import torch

    from glmlab.device import device_type
    from glmlab.parallel.launch import launch, recorded_failure, worker_args
    from glmlab.parallel.world import check_world, current_world
    from glmlab.report.train import print_summary
    from glmlab.train import resolve_run
    from glmlab.train import train as run_training

    parse_device(device)
    resolve = partial(resolve_run, config, set_, out=out, resume=resume, data=data, steps=steps, seed=seed)
    if nproc > 1:  # checked here, then started as nproc ranks of this same command
        cfg, run_dir = resolve()
        gpus = torch.cuda.device_count() if device_type(device) == "cuda" else None
        check_world(nproc, cfg.train.batch_size, cfg.model.n_routed_experts, cfg.train.expert_parallel,
                    local_gpus=gpus, optimizer=cfg.train.optimizer, cuda=gpus is not None)  # fmt: skip
        raise typer.Exit(launch(worker_args(sys.argv[1:], run_dir, resume), nproc, run_dir))
    world = current_world(device_type(device))  # a world of one unless torchrun or a launcher started us
    with recorded_failure():
        cfg, run_dir = world.from_main(resolve)
        check_world(world.size, cfg.train.batch_size, cfg.model.n_routed_experts, cfg.train.expert_parallel,
                    optimizer=cfg.train.optimizer, cuda=device_type(device) == "cuda")  # fmt: skip
        if tensorboard:  # a logging switch, so a resumed run may turn it on too
            cfg = replace(cfg, train=replace(cfg.train, tensorboard=True))
        out_console = console if world.is_main else Console(quiet=True)
        out_console.print(f"run folder [bold]{run_dir}[/] ({'resuming' if resume else 'new run'})")
        result = run_training(cfg, run_dir, resume, device, out_console, show_progress=world.is_main)
    print_summary(cfg.name, result.summary, out_console)
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
    batch_size: int = typer.Option(8, "--batch-size", help="--prompts-file: prompts decoded together."),
    compile_steps: bool = typer.Option(
        False, "--compile", help="CUDA, bf16: torch.compile each decoding step (fewer kernels; slow start)."
    ),
    device: str = DEVICE_OPT,
) -> None:
    """Continue a prompt: latent-cache decoding, sampling, MTP speculative decoding."""
    from pathlib import Path

    from glmlab.generate import Generator, SamplingParams
    from glmlab.report.generate import stats_line

    parse_device(device)
    if (prompt is None) == (prompts_file is None):
        raise GlmlabError("give exactly one of --prompt TEXT or --prompts-file FILE")
    if prompts_file is not None:
        if not Path(prompts_file).is_file():
            raise GlmlabError(f"--prompts-file {prompts_file} does not exist: give a text file")
        prompts = [line for line in Path(prompts_file).read_text().splitlines() if line.strip()]
    else:
        prompts = [prompt]
    sampling = SamplingParams(temperature, top_k, top_p, seed)
    gen = Generator.from_source(source, device, compiled=compile_steps)
    err = Console(stderr=True)
    stops = [s.replace("\\n", "\n").replace("\\t", "\t") for s in stop or ()]
    for text in prompts:  # every prompt is checked before any is decoded
        gen.check(len(gen.encode(text)), max_new_tokens, speculative, not no_cache)
    if prompts_file is not None:  # decoded in batches, printed as each batch ends
        for result in gen.generate_batch(prompts, max_new_tokens=max_new_tokens, sampling=sampling,
                                         speculative=speculative, use_cache=not no_cache, stop=stops,
                                         prefill_chunk=prefill_chunk, batch_size=batch_size):  # fmt: skip
            if as_json:
                print(json.dumps(result.to_dict()))
            else:
                print(result.prompt + result.text, flush=True)
                err.print(f"[dim]{escape(stats_line(result))}[/]", highlight=False)
        return
    for text in prompts:
        stream = None if as_json else (lambda s: print(s, end="", flush=True))
        if stream is not None:
            print(text, end="", flush=True)
        result = gen.generate(text, max_new_tokens, sampling, speculative, not no_cache, stops,
                              prefill_chunk, stream)  # fmt: skip
        if as_json:
            print(json.dumps(result.to_dict()))
            continue
        print(flush=True)
        err.print(f"[dim]{escape(stats_line(result))}[/]", highlight=False)


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
        "cpu", "--device", help=f"Whose execution the glmlab convention counts: {DEVICE_HELP}"
    ),
    as_json: bool = JSON_OPT,
    plot: Optional[str] = typer.Option(None, "--plot", help="Write a .png/.pdf/.svg of FLOPs vs context."),  # noqa: UP045
    set_: Optional[list[str]] = SET_OPT,  # noqa: UP045
) -> None:
    """Analytic FLOPs, parameters and memory of a config (no model is built)."""
    from glmlab.accounting.report import flops_summary, parse_lengths
    from glmlab.config import load_config
    from glmlab.device import device_type
    from glmlab.report.flops import print_flops

    cfg = load_config(config, set_)
    if batch < 1:
        raise GlmlabError(f"--batch must be at least 1, got {batch}")
    kind = device_type(device)
    seqs = parse_lengths(seq)
    if plot:
        from glmlab.accounting.plot import check_plot_target

        check_plot_target(plot)
    summary = flops_summary(cfg, seqs, batch, convention, not no_mtp, dtype, attention, kind)
    if plot:
        from glmlab.accounting.plot import plot_flops_vs_context

        path = plot_flops_vs_context(cfg, plot, convention, not no_mtp, max(seqs), kind)
        Console(stderr=True).print(f"wrote {path}")
    if as_json:
        print(json.dumps(summary, indent=2))
        return
    print_flops(summary, console)


@app.command()
def profile(
    config: str = CONFIG_ARG,
    seq: Optional[int] = typer.Option(None, "--seq", help="Tokens per sequence (train.seq_len)."),  # noqa: UP045
    batch: Optional[int] = typer.Option(None, "--batch", help="Sequences per step (train.batch_size)."),  # noqa: UP045
    steps: int = typer.Option(2, "--steps", help="Timed training steps (after one counted step)."),
    device: str = DEVICE_OPT,
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object instead of a table."),
    set_: Optional[list[str]] = SET_OPT,  # noqa: UP045
) -> None:
    """Run real training and decoding steps; compare measured FLOPs, memory and time with the estimate."""
    from glmlab.config import load_config
    from glmlab.measure import profile as run_profile
    from glmlab.report.profile import print_profile

    parse_device(device)
    result = run_profile(load_config(config, set_), seq, batch, steps, device)
    if as_json:
        print(json.dumps(result, indent=2))
        return
    print_profile(result, console)


DEGREE = {k: typer.Option(None, f"--{k}", help=f"{k.upper()} degree ({h}).") for k, h in (
    ("tp", "tensor parallel"), ("pp", "pipeline stages"), ("cp", "context parallel"),
    ("dp", "data parallel; default GPUs / (TP x PP x CP)"), ("ep", "expert parallel"))}  # fmt: skip


@app.command()
def plan(
    config: str = CONFIG_ARG,
    gpus: int = typer.Option(..., "--gpus", help="GPUs in all."),
    tp: Optional[int] = DEGREE["tp"],  # noqa: UP045
    pp: Optional[int] = DEGREE["pp"],  # noqa: UP045
    cp: Optional[int] = DEGREE["cp"],  # noqa: UP045
    dp: Optional[int] = DEGREE["dp"],  # noqa: UP045
    ep: Optional[int] = DEGREE["ep"],  # noqa: UP045
    gpu: str = typer.Option("h200", "--gpu", help="h100, h200, h800, a100 or b200."),
    seq: Optional[int] = typer.Option(None, "--seq", help="Tokens per sequence (train.seq_len)."),  # noqa: UP045
    batch: Optional[int] = typer.Option(None, "--batch", help="Sequences per step (train.batch_size)."),  # noqa: UP045
    micro_batch: int = typer.Option(1, "--micro-batch", help="Sequences per forward pass."),
    recompute: Optional[str] = typer.Option(  # noqa: UP045
        None, "--recompute", help="none or full (keep only layer inputs); default train.recompute."
    ),
    sharding: str = typer.Option("fsdp", "--sharding", help="fsdp, zero1 or none."),
    efficiency: float = typer.Option(0.8, "--efficiency", help="Share of peak the matmuls reach."),
    ep_imbalance: float = typer.Option(
        1.0, "--ep-imbalance", help="Busiest EP rank's routed tokens over the mean (1: uniform routing)."
    ),
    search: bool = typer.Option(False, "--search", help="List the layouts that fit, fastest first."),
    top: int = typer.Option(10, "--top", help="Layouts --search lists."),
    as_json: bool = JSON_OPT,
    set_: Optional[list[str]] = SET_OPT,  # noqa: UP045
) -> None:
    """Lay a config out on many GPUs (analytic): memory per GPU, communication, bubble, step time, MFU."""
    from glmlab.accounting.cluster import PlanOptions, gpu_named, plan_summary
    from glmlab.config import load_config
    from glmlab.report.plan import print_plan

    cfg = load_config(config, set_)
    t = cfg.train
    opts = PlanOptions(seq or t.seq_len, batch or t.batch_size * t.grad_accum, micro_batch,
                       recompute or t.recompute, sharding, gpu_named(gpu), efficiency,
                       t.optimizer, ep_imbalance=ep_imbalance)  # fmt: skip
    degrees = {"tp": tp, "pp": pp, "cp": cp, "dp": dp, "ep": ep}
    summary = plan_summary(cfg, gpus, opts, degrees, search=search, top=top)
    if as_json:
        print(json.dumps(summary, indent=2))
        return
    print_plan(summary, console)


RUNS_ARG = typer.Argument(..., help="One or more run folders (several share each chart).")


@app.command()
def plot(
    runs: list[str] = RUNS_ARG,
    out: Optional[str] = typer.Option(None, "--out", help="Folder for the PNGs (default RUN/plots)."),  # noqa: UP045
) -> None:
    """PNGs of runs' metrics: losses against steps and tokens, LR, speed, expert load, indexer recall."""
    from glmlab.viz.plots import plot_runs

    for path in plot_runs(runs, out):
        console.print(f"wrote {path}", highlight=False)


@app.command()
def inspect(
    source: str = typer.Argument(..., help="A run folder, a checkpoint, or a HF folder with a tokenizer."),
    prompt: Optional[str] = typer.Option(None, "--prompt", help="The text to look at."),  # noqa: UP045
    prompt_file: Optional[str] = typer.Option(None, "--prompt-file", help="Read the prompt from a file."),  # noqa: UP045
    layer: Optional[int] = typer.Option(None, "--layer", help="One layer (default: every layer)."),  # noqa: UP045
    max_new_tokens: int = typer.Option(24, "--max-new-tokens", help="Greedy tokens to draft along."),
    out: Optional[str] = typer.Option(None, "--out", help="Folder for the PNGs (default SOURCE/inspect)."),  # noqa: UP045
    as_json: bool = typer.Option(False, "--json", help="Print the numbers as one JSON object."),
    device: str = DEVICE_OPT,
) -> None:
    """One prompt through a model: routing, DSA selection against dense attention, the MLA cache and
    MTP drafts, as PNGs and a summary."""
    from pathlib import Path

    from glmlab.checkpoint import load_model
    from glmlab.device import resolve_device
    from glmlab.viz.inspect import inspect as run_inspect
    from glmlab.viz.inspect_figures import save_inspection
    from glmlab.viz.inspect_report import print_inspection

    if (prompt is None) == (prompt_file is None):
        raise GlmlabError("give exactly one of --prompt TEXT or --prompt-file FILE")
    if prompt_file is not None:
        if not Path(prompt_file).is_file():
            raise GlmlabError(f"--prompt-file {prompt_file} does not exist: give a text file")
        prompt = Path(prompt_file).read_text()
    loaded = load_model(source, resolve_device(device))
    result = run_inspect(loaded, prompt, layer=layer, max_new_tokens=max_new_tokens)
    paths = save_inspection(result, out if out is not None else Path(source) / "inspect")
    if as_json:
        print(json.dumps({**result.to_dict(), "pngs": [str(p) for p in paths]}))
        return
    print_inspection(result, loaded.tokenizer, console)
    console.print(f"wrote {len(paths)} PNGs to {paths[0].parent}", highlight=False)


@app.command()
def export(
    source: str = typer.Argument(..., help="A run folder or a checkpoint (one file or sharded)."),
    folder: str = typer.Argument(..., help="The new folder to write."),
    to: str = typer.Option("hf", "--to", help="Format: hf (config.json, model.safetensors, tokenizer)."),
) -> None:
    """Gather a checkpoint, written by any number of ranks, into a Hugging Face folder."""
    from glmlab.parallel.checkpoint import export_hf

    if to != "hf":
        raise GlmlabError(f"--to {to} is not a format: use --to hf")
    console.print(f"wrote {export_hf(source, folder)}")


@app.command()
def quickstart(
    steps: Optional[int] = typer.Option(None, "--steps", help="Training steps (default: glm5-tiny's)."),  # noqa: UP045
    out: Optional[str] = typer.Option(None, "--out", help="Run folder (default runs/quickstart-<time>)."),  # noqa: UP045
    device: str = DEVICE_OPT,
    prompt: str = typer.Option("def __init__(self", "--prompt", help="Text to continue after training."),
) -> None:
    """The tour in one command: train glm5-tiny on the built-in corpus, generate from it (plain and
    MTP-speculative), and compare the FLOP and memory estimates with a measured training step."""
    import time

    from glmlab.generate import Generator
    from glmlab.measure import profile as run_profile
    from glmlab.report.generate import stats_line
    from glmlab.report.profile import print_profile
    from glmlab.report.train import print_summary
    from glmlab.train import resolve_run
    from glmlab.train import train as run_training

    parse_device(device)
    out = out or f"runs/quickstart-{time.strftime('%Y%m%d-%H%M%S')}"
    cfg, run_dir = resolve_run("glm5-tiny", out=out, steps=steps)
    console.rule("1. train glm5-tiny on the Python standard library")
    console.print(f"run folder [bold]{run_dir}[/]")
    result = run_training(cfg, run_dir, False, device, console)
    print_summary(cfg.name, result.summary, console)
    if result.signum is not None:
        raise typer.Exit(128 + result.signum)

    console.rule("2. generate (greedy), then again with MTP drafts")
    gen = Generator.from_source(str(run_dir), device)
    print(prompt, end="", flush=True)
    plain = gen.generate(prompt, 64, on_text=lambda s: print(s, end="", flush=True))
    print(flush=True)
    spec = gen.generate(prompt, 64, speculative=2)
    console.print(f"plain: {escape(stats_line(plain))}\nwith drafts: {escape(stats_line(spec))}; "
                  f"same text: {spec.text == plain.text}", highlight=False)  # fmt: skip
    if spec.tokens_per_second < plain.tokens_per_second:
        console.print("[dim]drafts pay off once most are accepted: this short run's are not "
                      "(README, Benchmarks: a 3,000-step glm5-tiny decodes 1.3-1.4x faster)[/]")  # fmt: skip

    console.rule("3. estimate vs measured: one training step and one decoding step")
    print_profile(run_profile(cfg, None, None, 1, str(gen.device)), console)
    console.print(f"next: glmlab generate {run_dir} --prompt 'import ' | glmlab flops glm5 --seq 4k,128k")


@app.command()
def experiment(
    spec: str = typer.Argument(..., help="An experiment spec: experiments/dsa_topk.yaml."),
    quick: bool = typer.Option(False, "--quick", help="The spec's CI settings: a few steps, one seed."),
    parallel: int = typer.Option(1, "--parallel", help="Cells trained at once (above 1: worker processes)."),
    out: str = typer.Option("runs/experiments", "--out", help="Results go to OUT/<spec>[-quick]/."),
    device: str = typer.Option("auto", "--device", help=f"{DEVICE_HELP} Or cuda:0,cuda:1: workers alternate"),
    report_only: bool = typer.Option(False, "--report-only", help="Only rewrite tables, plots, report."),
    steps: Optional[int] = typer.Option(None, "--steps", help="Replace the spec's steps."),  # noqa: UP045
    max_cells: Optional[int] = typer.Option(  # noqa: UP045
        None, "--max-cells", help="Run at most N unfinished cells (a study split over several calls)."
    ),
    timing: bool = typer.Option(
        False, "--timing", help="Then time each variant alone on the device (report: 'Speed alone')."
    ),
) -> None:
    """Run an ablation spec cell by cell (finished cells are skipped, a killed run resumes), then
    write results.csv/json with 95% intervals and paired differences, plots and report.md."""
    from glmlab.experiment import run_experiment
    from glmlab.experiment.runner import spec_devices

    for name in spec_devices(device):
        parse_device(name)
    if parallel < 1:
        raise GlmlabError(f"--parallel must be at least 1, got {parallel}")
    if steps is not None and steps < 1:
        raise GlmlabError(f"--steps must be at least 1, got {steps}")
    if max_cells is not None and max_cells < 1:
        raise GlmlabError(f"--max-cells must be at least 1, got {max_cells}")
    echo = lambda s: console.print(s, markup=False, highlight=False)  # noqa: E731
    command = " ".join(["glmlab", *sys.argv[1:]])
    exp = run_experiment(spec, out=out, quick=quick, parallel=parallel, device=device,
                         report_only=report_only, steps=steps, max_cells=max_cells, timing=timing,
                         echo=echo, command=command)  # fmt: skip
    console.print(f"report: {exp.report}", highlight=False)
    if exp.outcome is not None and exp.outcome.stopped_by is not None:
        raise typer.Exit(128 + exp.outcome.stopped_by)
    if exp.outcome is not None and exp.outcome.failed:
        raise typer.Exit(1)


@app.command()
def claims(
    config: str = typer.Argument("glm5", help="A preset name or a YAML file."),
    results: str = typer.Option("experiments/results", "--results", help="Folder of the studies' results."),
    out: Optional[str] = typer.Option(None, "--out", help="Write the markdown report to this file."),  # noqa: UP045
    as_json: bool = JSON_OPT,
) -> None:
    """The article's claims: the calculator's check beside the measured check from the studies."""
    from pathlib import Path

    from glmlab.accounting.claims import claims_markdown, claims_report
    from glmlab.config import load_config

    cfg = load_config(config)
    rows = claims_report(cfg, results)
    if as_json:
        print(json.dumps(rows, indent=2))
        return
    text = claims_markdown(rows, cfg.name, results)
    if out:
        Path(out).write_text(text + "\n")
        console.print(f"wrote {out}", highlight=False)
        return
    print(text)


def main() -> None:
    """Entry point: run the app, turning GlmlabError into one line and exit status 2."""
    try:
        app()
    except GlmlabError as err:
        Console(stderr=True).print(f"[red]error:[/] {escape(str(err))}", highlight=False, soft_wrap=True)
        sys.exit(2)


if __name__ == "__main__":
    main()
