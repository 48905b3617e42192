"""Generation: latent cache vs recomputation, fixed-shape steps and batches, sampling, MTP speculative
decoding, stops, CLI errors."""

from __future__ import annotations

import json

import pytest
import torch

from glmlab.build import build_model
from glmlab.config import load_config
from glmlab.errors import GlmlabError
from glmlab.generate import Generator, SamplingParams
from glmlab.generate.sampling import probabilities
from glmlab.generate.speculative import MTPDrafter, accept
from glmlab.generate.step import model_step

MICRO = [
    "hidden_size=32", "num_hidden_layers=3", "index_topk=8", "max_position_embeddings=128",
    "train.seq_len=64", "n_routed_experts=4", "intermediate_size=64", "moe_intermediate_size=16",
    "num_attention_heads=2", "q_lora_rank=32", "kv_lora_rank=16", "index_n_heads=8", "index_head_dim=16",
    "qk_nope_head_dim=16", "v_head_dim=16", "qk_rope_head_dim=8", "index_topk_freq=2",
]  # fmt: skip


def micro_model(vocab: int = 64, depth: int = 2, shared: bool = False, aligned_mtp: bool = True, extra=()):
    """A random micro model (fp32). `aligned_mtp` sets each MTP eh_proj to pass the token embedding
    through, so its drafts match the main model often but not always: both verification outcomes."""
    torch.manual_seed(0)
    over = [f"vocab_size={vocab}", f"num_nextn_predict_layers={depth}", f"mtp_share_modules={shared}", *extra]
    cfg = load_config("glm5-tiny", MICRO + over)
    model = build_model(cfg)
    if aligned_mtp:
        d = cfg.model.hidden_size
        with torch.no_grad():
            for module in model.mtp:
                module.eh_proj.weight.zero_()
                module.eh_proj.weight[:, :d] = torch.eye(d)
    return model.eval()


class Letters:
    """A tokenizer over a..z; id 26 is EOS."""

    vocab_size, eos_id = 27, 26

    def encode(self, text: str) -> list[int]:
        return [ord(c) - 97 for c in text]

    def decode(self, ids) -> str:
        return "".join(chr(97 + i) for i in ids if i < 26)


# ---- latent cache -------------------------------------------------------------------------------


@pytest.mark.parametrize("chunk", [40, 7])
def test_cached_logits_match_full_recomputation_beyond_index_topk(chunk):
    model = micro_model()
    ids = torch.randint(0, 64, (1, 40), generator=torch.Generator().manual_seed(1))
    assert ids.shape[1] > 4 * model.config.index_topk  # DSA is sparse over most of the sequence
    with torch.inference_mode():
        full = model(ids).logits[0]
        cache = model.new_cache(1, 48)
        prefill = 24
        parts = [
            model(ids[:, s : min(s + chunk, prefill)], cache=cache).logits[0]
            for s in range(0, prefill, chunk)
        ]
        parts += [model(ids[:, t : t + 1], cache=cache).logits[0] for t in range(prefill, 40)]
    torch.testing.assert_close(torch.cat(parts), full, atol=1e-4, rtol=0)


def test_cached_greedy_equals_no_cache_and_chunked_prefill():
    gen = Generator(micro_model())
    prompt = list(range(1, 30))
    ref = gen.generate(prompt, max_new_tokens=25, use_cache=False)
    assert gen.generate(prompt, max_new_tokens=25).ids == ref.ids
    assert gen.generate(prompt, max_new_tokens=25, prefill_chunk=6).ids == ref.ids
    assert len(ref.ids) == 25 and ref.finish_reason == "length"


# ---- sampling -----------------------------------------------------------------------------------


def test_top_k_and_top_p_filters():
    logits = torch.tensor([[2.0, 1.0, 0.5, -1.0, -3.0]])
    p = probabilities(logits, SamplingParams(temperature=1.0, top_k=2))
    assert (p[0, 2:] == 0).all() and p[0, :2].sum().item() == pytest.approx(1.0)
    base = logits.softmax(-1)[0]
    top_p = base[0].item() + base[1].item() / 2  # needs the top two tokens, not the third
    p = probabilities(logits, SamplingParams(temperature=1.0, top_p=top_p))
    assert (p[0, :2] > 0).all() and (p[0, 2:] == 0).all()
    p = probabilities(logits, SamplingParams(temperature=1.0, top_p=base[0].item() * 0.99))
    assert p[0, 0].item() == pytest.approx(1.0)
    hot = probabilities(logits, SamplingParams(temperature=5.0))
    assert hot[0, -1] > base[-1]  # a higher temperature flattens
    with pytest.raises(Exception, match="top-p"):
        SamplingParams(top_p=0.0)


def test_seeded_sampling_is_repeatable_and_differs_from_greedy():
    gen = Generator(micro_model())
    s = SamplingParams(temperature=1.5, top_k=20, seed=3)
    a = gen.generate([5, 6, 7], max_new_tokens=20, sampling=s)
    b = gen.generate([5, 6, 7], max_new_tokens=20, sampling=SamplingParams(temperature=1.5, top_k=20, seed=3))
    assert a.ids == b.ids
    assert a.ids != gen.generate([5, 6, 7], max_new_tokens=20).ids


# ---- speculative decoding -------------------------------------------------------------------------


@pytest.mark.parametrize("shared", [False, True])
def test_speculative_greedy_equals_plain_greedy(shared):
    gen = Generator(micro_model(shared=shared))
    prompt = list(range(3, 20))
    plain = gen.generate(prompt, max_new_tokens=20)
    accepted = rejected = 0
    for k in (1, 2, 3):
        spec = gen.generate(prompt, max_new_tokens=20, speculative=k)
        assert spec.ids == plain.ids, f"K={k}"
        stats = spec.speculative
        # the first token comes from the prefill, the last may need a plain step (no room to draft)
        assert stats.tokens in (len(plain.ids) - 1, len(plain.ids) - 2)
        accepted += sum(stats.accepted)
        rejected += sum(v - a for a, v in zip(stats.accepted, stats.verified, strict=True))
        assert (stats.note is not None) == (k > 2 and not shared)
    assert accepted > 0 and rejected > 0  # both verification outcomes were exercised


@pytest.mark.parametrize("shared", [False, True])
def test_one_graph_speculative_step_equals_plain_greedy(shared, monkeypatch):
    """The greedy step that a CUDA graph replays whole (drafts, verification, acceptance as tensor
    operations over every slot, DecodeSession._speculate), run eagerly here: the same text as plain
    greedy decoding, and the same acceptance as the step-by-step path."""
    from glmlab.generate.session import DecodeSession

    gen = Generator(micro_model(shared=shared))
    prompt = list(range(3, 20))
    plain = gen.generate(prompt, max_new_tokens=20)
    stepwise = {k: gen.generate(prompt, max_new_tokens=20, speculative=k).speculative for k in (1, 2, 3)}
    original = DecodeSession.__init__

    def with_fused_step(self, *args, **kwargs):
        original(self, *args, **kwargs)
        if self.depth:
            self.graphed_speculation = self._speculate  # what GraphedStep replays on a GPU

    monkeypatch.setattr(DecodeSession, "__init__", with_fused_step)
    gen = Generator(gen.model)
    for k in (1, 2, 3):
        spec = gen.generate(prompt, max_new_tokens=20, speculative=k)
        assert spec.ids == plain.ids, f"K={k}"
        assert spec.speculative.accepted == stepwise[k].accepted, f"K={k}"
        assert spec.speculative.verified == stepwise[k].verified, f"K={k}"


def test_drafts_equal_mtp_chain_recomputed_from_scratch(monkeypatch):
    """After every verification and rollback, the cached MTP chain drafts exactly what the MTP
    modules give over the whole committed sequence without any cache (the positions in speculative.py)."""
    model = micro_model(depth=2)
    seen = []
    original = MTPDrafter.draft

    def spy(self, n, params, gen):
        drafts, probs = original(self, n, params, gen)
        seen.append((self.tokens[:, : n + 1].clone(), drafts.tolist()))
        return drafts, probs

    monkeypatch.setattr(MTPDrafter, "draft", spy)
    Generator(model).generate(list(range(3, 15)), max_new_tokens=24, speculative=3)
    assert len(seen) > 5
    with torch.inference_mode():
        for seq, drafts in seen:
            h = model(seq).hidden_states[:, :-1]
            ids, expect = seq, []
            for k in range(1, len(drafts) + 1):
                logits, h = model.mtp_step(min(k, 2), h, ids[:, k:])
                expect.append(int(logits[0, -1].argmax()))
                ids = torch.cat([ids, torch.tensor([[expect[-1]]])], dim=1)
            assert drafts == expect


@pytest.mark.parametrize("prompt_len, k", [(1, 3), (3, 5), (2, 8)])
def test_speculative_drafts_beyond_a_short_prompt(prompt_len, k):
    """K > prompt length + 1 used to crash (issue 11: "x" with K=3, "import " with K=5)."""
    gen = Generator(micro_model())
    prompt = list(range(3, 3 + prompt_len))
    plain = gen.generate(prompt, max_new_tokens=16)
    spec = gen.generate(prompt, max_new_tokens=16, speculative=k)
    assert spec.ids == plain.ids and spec.speculative.steps > 0


@pytest.mark.parametrize("k", [1, 2])
def test_rejection_sampling_keeps_the_target_distribution(k):
    gen = torch.Generator().manual_seed(0)
    V, N = 6, 3000
    logits = torch.randn(k + 1, V, generator=gen) * 1.5
    draft_probs = torch.randn(k, V, generator=gen).mul(1.5).softmax(-1)
    params = SamplingParams(temperature=1.0)
    target = probabilities(logits, params)
    first = torch.zeros(V)
    second = torch.zeros(V)
    for _ in range(N):
        drafts = torch.multinomial(draft_probs, 1, generator=gen).squeeze(-1)
        a, nxt = accept(logits, drafts, draft_probs, params, gen)
        emitted = [*drafts[: int(a)].tolist(), int(nxt)]
        first[emitted[0]] += 1
        if len(emitted) > 1:
            second[emitted[1]] += 1
    assert (first / N - target[0]).abs().max() < 0.04
    if k == 2:
        assert (second / second.sum() - target[1]).abs().max() < 0.05
    assert (first / N - draft_probs[0]).abs().max() > 0.08  # the draft alone would be detectably off


def test_speculative_sampling_runs_and_counts():
    gen = Generator(micro_model())
    r = gen.generate(
        [4, 5, 6], max_new_tokens=20, sampling=SamplingParams(temperature=0.8, seed=0), speculative=2
    )
    assert len(r.ids) == 20 and r.speculative.steps > 0
    assert 1.0 <= r.speculative.tokens_per_step <= 3.0


def test_speculative_needs_mtp_and_cache():
    gen = Generator(micro_model(depth=0))
    with pytest.raises(Exception, match="no MTP"):
        gen.generate([1, 2], max_new_tokens=4, speculative=1)
    with pytest.raises(Exception, match="no-cache"):
        Generator(micro_model()).generate([1, 2], max_new_tokens=4, speculative=1, use_cache=False)


# ---- fixed-shape steps and batches -----------------------------------------------------------------


def test_fixed_shape_step_equals_the_model_with_rows_at_their_own_positions():
    """Row 1 lags row 0 by 5 positions; a row that has reached its end recomputes its last
    position (as finished rows do in a batch). Every logit equals the full forward's."""
    model = micro_model()
    ids = torch.randint(0, 64, (2, 30), generator=torch.Generator().manual_seed(2))
    with torch.inference_mode():
        full = model(ids).logits
        caches = model.new_cache(2, 40).layers
        for t in range(36):
            pos = torch.tensor([[min(t, 29)], [min(max(t - 5, 0), 29)]])
            for context in (int(pos.max()) + 1, 40):  # eager reads up to the furthest row; a graph all
                logits, _ = model_step(model, ids.gather(1, pos), pos, caches, context)
                expect = full[torch.arange(2), pos[:, 0]]
                torch.testing.assert_close(logits[:, 0], expect, atol=1e-4, rtol=0)


@pytest.mark.parametrize(("shared", "extra"), [(False, ()), (True, ()), (False, ("attention_bias=true",))])
def test_joined_input_products_give_the_step_and_the_drafts_unjoined(shared, extra):
    """With each layer's input products joined into one (joined.py), the fixed-shape step and the MTP
    depths give the logits of the separate products; the copies hold what `joined_input_params`
    counts (the shared MTP module once; with MLA's biases, zeros for the indexer's)."""
    from glmlab.accounting.params import joined_input_params
    from glmlab.generate.joined import JoinedInputs
    from glmlab.generate.step import mtp_step

    model = micro_model(shared=shared, extra=extra)
    joined = JoinedInputs(model)
    copies = {
        id(j): j.weight.numel() + (0 if j.bias is None else j.bias.numel())
        for j in [*joined.layers, *joined.mtp]
    }
    assert sum(copies.values()) == joined_input_params(model.config)
    ids = torch.randint(0, 64, (2, 12), generator=torch.Generator().manual_seed(4))
    pos = torch.arange(12)[None].expand(2, 12)
    with torch.inference_mode():
        out = [
            model_step(model, ids, pos, model.new_cache(2, 16).layers, 16, joined=j) for j in (None, joined)
        ]
        torch.testing.assert_close(out[1][0], out[0][0], atol=1e-5, rtol=0)
        drafts = [
            mtp_step(model, 2, out[0][1], ids, pos, model.new_cache(2, 16).layers[0], 16, joined=j)[0]
            for j in (None, joined)
        ]
        torch.testing.assert_close(drafts[1], drafts[0], atol=1e-5, rtol=0)


def test_joined_copies_follow_weights_changed_in_place():
    """An optimiser step changes the model's weights in place: the next generation copies them into
    the same memory (what a captured graph reads) and decodes as a new Generator would; unchanged
    weights are not copied again."""
    model = micro_model()
    gen = Generator(model)
    prompt = list(range(3, 15))
    before = gen.generate(prompt, 12).ids
    (session,) = gen.sessions.values()
    first, q_a = session.joined.layers[0], model.model.layers[0].self_attn.q_a_proj
    address = first.weight.data_ptr()
    first.weight[0, 0] += 1.0  # the copy's alone: the model's weights did not change, nothing is copied
    first.refresh()
    assert first.weight[0, 0] != q_a.weight[0, 0]
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    after = gen.generate(prompt, 12).ids
    assert first.weight.data_ptr() == address
    torch.testing.assert_close(first.weight[: q_a.out_features], q_a.weight, atol=0, rtol=0)
    assert after == Generator(model).generate(prompt, 12).ids and after != before


def test_joined_copies_follow_replaced_moved_and_inference_weights():
    """Weights replaced rather than changed in place (`p.data = ...`), a model moved to another dtype
    between calls, and one built under inference mode (whose tensors keep no version counter) all
    decode as a new Generator does."""
    model = micro_model()
    gen = Generator(model)
    prompt = list(range(3, 15))
    gen.generate(prompt, 8)
    with torch.no_grad():
        for p in model.parameters():
            p.data = p.data + torch.randn_like(p) * 0.05
    assert gen.generate(prompt, 8).ids == Generator(model).generate(prompt, 8).ids
    model.to(torch.float64)
    assert gen.generate(prompt, 8).ids == Generator(model).generate(prompt, 8).ids
    with torch.inference_mode():
        frozen = Generator(micro_model())
    expect = Generator(micro_model()).generate(prompt, 8).ids
    assert frozen.generate(prompt, 8).ids == expect and frozen.generate(prompt, 8).ids == expect


def test_batched_prompts_decode_as_each_alone():
    gen = Generator(micro_model(vocab=27), Letters())
    prompts = ["abc", "x", "helloworld", "zyxw"]
    alone = [gen.generate(p, max_new_tokens=12) for p in prompts]
    batched = list(gen.generate_batch(prompts, max_new_tokens=12, batch_size=3))
    assert [r.ids for r in batched] == [r.ids for r in alone]
    assert [r.text for r in batched] == [r.text for r in alone]
    assert [r.prompt for r in batched] == prompts

    stop = [alone[0].text[2:4]]  # the first row stops early, the others run on
    stopped = [gen.generate(p, max_new_tokens=12, stop=stop) for p in prompts]
    assert stopped[0].finish_reason == "stop"
    together = list(gen.generate_batch(prompts, max_new_tokens=12, stop=stop))
    assert [(r.text, r.finish_reason) for r in together] == [(r.text, r.finish_reason) for r in stopped]

    s = SamplingParams(temperature=1.0, seed=5)
    sampled = [gen.generate(p, max_new_tokens=10, sampling=s).ids for p in prompts]
    assert [r.ids for r in gen.generate_batch(prompts, max_new_tokens=10, sampling=s)] == sampled


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_graphs_decode_as_eager_steps():
    model = micro_model(extra=["dsa_impl=gather"]).cuda().to(torch.bfloat16)  # prefill: the torch path
    graphed, eager = Generator(model), Generator(model, cuda_graphs=False)
    assert graphed.graphs and not eager.graphs
    prompts = [list(range(3, 20)), [5], list(range(1, 9))]
    for p in prompts:
        assert graphed.generate(p, 20).ids == eager.generate(p, 20).ids
        assert graphed.generate(p, 20, speculative=2).ids == eager.generate(p, 20, speculative=2).ids
    batched = [r.ids for r in graphed.generate_batch(prompts, max_new_tokens=20)]
    assert batched == [r.ids for r in eager.generate_batch(prompts, max_new_tokens=20)]
    assert all(s.graphed.graphs for s in graphed.sessions.values())  # the steps ran from captured graphs


def test_compiled_steps_need_cuda_graphs():
    """`--compile` compiles the steps that CUDA graphs capture; without the graphs (a CPU, fp32
    weights, or cuda_graphs=False) it is refused with a one-line error."""
    with pytest.raises(GlmlabError, match="drop --compile"):
        Generator(micro_model(), compiled=True)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_compiled_steps_decode_as_eager_steps():
    """A step compiled before its capture (bf16, DSA's Triton top-k and split sparse forward past
    index_topk) gives the eager step's logits within bf16 rounding (Inductor keeps fused
    intermediates in fp32, so not bit for bit), and `Generator(compiled=True)` decodes plain,
    batched and speculative requests from compiled, captured steps."""
    from glmlab.generate.graphs import GraphedStep

    model = micro_model(extra=["dsa_impl=triton"]).cuda().to(torch.bfloat16).eval()
    ids = torch.randint(0, 64, (2, 1), device="cuda", generator=torch.Generator("cuda").manual_seed(0))
    pos = torch.tensor([[40], [25]], device="cuda")  # beyond index_topk: the sparse path

    def step(caches):
        def run(ids, pos):
            with torch.no_grad():
                return model_step(model, ids, pos, caches, 48)[0]

        return run

    def filled_cache():
        cache = model.new_cache(2, 48)
        for layer in cache.layers:
            layer.latent.normal_(generator=torch.Generator("cuda").manual_seed(1))
            if layer.index_keys is not None:
                layer.index_keys.normal_(generator=torch.Generator("cuda").manual_seed(2))
        return cache.layers

    eager = step(filled_cache())(ids, pos).float()
    compiled = GraphedStep(step(filled_cache()), compiled=True)(ids, pos).float()
    assert (compiled - eager).abs().max().item() <= 2e-2 * eager.abs().max().item()
    gen = Generator(model, compiled=True)
    prompts = [list(range(3, 20)), [5], list(range(1, 9))]
    assert len(gen.generate(prompts[0], 12).ids) == 12
    assert len(gen.generate(prompts[0], 12, speculative=2).ids) == 12
    assert [len(r.ids) for r in gen.generate_batch(prompts, max_new_tokens=12)] == [12, 12, 12]
    assert all(s.graphed.graphs for s in gen.sessions.values())


# ---- stops and streaming ------------------------------------------------------------------------------


def test_stop_string_eos_and_streaming():
    gen = Generator(micro_model(vocab=27), Letters())
    full = gen.generate("abc", max_new_tokens=30)
    assert full.finish_reason in ("length", "eos") and len(full.text) >= 6
    stop = full.text[3:5]
    chunks: list[str] = []
    stopped = gen.generate("abc", max_new_tokens=30, stop=[stop], on_text=chunks.append, speculative=2)
    assert stopped.finish_reason == "stop"
    assert stopped.text == full.text[: full.text.find(stop)]
    assert "".join(chunks) == stopped.text
    streamed: list[str] = []
    again = gen.generate("abc", max_new_tokens=30, on_text=streamed.append)
    assert "".join(streamed) == again.text == full.text and len(streamed) > 1

    tok = Letters()
    tok.eos_id = full.ids[4]  # pretend the fifth token is EOS
    cut = full.ids.index(tok.eos_id)
    for k in (0, 2):
        r = Generator(gen.model, tok).generate("abc", max_new_tokens=30, speculative=k)
        assert r.finish_reason == "eos" and r.ids == full.ids[:cut]


# ---- CLI ----------------------------------------------------------------------------------------------


@pytest.fixture
def checkpoint(tmp_path):
    from glmlab.checkpoint import save_checkpoint
    from glmlab.data.tokenizer import ByteTokenizer

    cfg = load_config(
        "glm5-tiny", [*MICRO, "vocab_size=257", "max_position_embeddings=64", "train.seq_len=64"]
    )
    torch.manual_seed(0)
    model = build_model(cfg)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    save_checkpoint(tmp_path / "run", 1, model, opt, {}, cfg, ByteTokenizer())
    return tmp_path / "run"


def test_cli_generate_json_and_no_cache_agree(checkpoint, run_cli):
    args = ["generate", str(checkpoint), "--prompt", "def f(x):", "--max-new-tokens", "12", "--json"]
    code, out, _ = run_cli(*args, "--speculative", "2", "--device", "cpu")
    assert code == 0
    spec = json.loads(out)
    assert {"text", "tokens_per_second", "new_tokens", "acceptance_per_position"} <= spec.keys()
    code, out, _ = run_cli(*args, "--no-cache")
    assert code == 0 and json.loads(out)["ids"] == spec["ids"]


def test_cli_speculative_beyond_a_one_token_prompt(checkpoint, run_cli):
    args = ["generate", str(checkpoint), "--prompt", "x", "--max-new-tokens", "8", "--json"]
    code, out, err = run_cli(*args, "--speculative", "3")
    assert code == 0, err
    code, plain, _ = run_cli(*args)
    assert code == 0 and json.loads(out)["ids"] == json.loads(plain)["ids"]


def test_cli_prompts_file_decodes_in_batches_with_each_prompt(checkpoint, run_cli, tmp_path):
    prompts = ["def f(", "import ", "x"]
    path = tmp_path / "prompts.txt"
    path.write_text("\n".join([prompts[0], "", *prompts[1:]]) + "\n")
    args = ["generate", str(checkpoint), "--max-new-tokens", "6", "--json"]
    code, out, err = run_cli(*args, "--prompts-file", str(path), "--batch-size", "2")
    assert code == 0, err
    lines = [json.loads(line) for line in out.splitlines()]
    assert [line["prompt"] for line in lines] == prompts
    code, alone, _ = run_cli(*args, "--prompt", "import ")
    assert code == 0 and json.loads(alone)["ids"] == lines[1]["ids"]


def test_generator_is_exported():
    import glmlab

    assert glmlab.Generator is Generator


@pytest.mark.parametrize(
    "args, message",
    [
        (["--prompt", "x" * 80], "context"),
        (["--prompt", "hello", "--max-new-tokens", "60"], "max-new-tokens"),
        (["--prompt", "hi", "--top-p", "2"], "top-p"),
        (["--prompts-file", "/nonexistent/prompts.txt"], "prompts-file"),
        (["--prompt", "hi", "--compile", "--device", "cpu"], "drop --compile"),
    ],
)
def test_cli_errors_are_one_line_exit_2(checkpoint, run_cli, args, message):
    code, _, err = run_cli("generate", str(checkpoint), *args)
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1


def test_cli_missing_source(run_cli, tmp_path):
    code, _, err = run_cli("generate", str(tmp_path / "nope"), "--prompt", "hi")
    assert code == 2 and "does not exist" in err and len(err.strip().splitlines()) == 1
