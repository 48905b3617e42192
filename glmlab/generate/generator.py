"""The decoding loops: chunked prefill into the latent cache, then one token per row (or one
verified draft run) per step, stop conditions, streaming text (docs/architecture.md,
"Decoding"). Prompts decode together in batches, each row at its own length."""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import torch

from glmlab.errors import GlmlabError
from glmlab.generate.joined import JoinedInputs
from glmlab.generate.sampling import SamplingParams, choose
from glmlab.generate.session import DecodeSession, session_capacity
from glmlab.generate.speculative import SpeculativeStats, accept
from glmlab.model import CausalLM
from glmlab.model.moe import grouped_form

# Decoding sessions (buffers and captured graphs) kept per Generator, most recently used first:
# plain and speculative decoding of similar lengths each keep theirs.
SESSIONS_KEPT = 4


@dataclass
class GenerationResult:
    """The new text and token ids (prompt excluded, EOS dropped) and how they were produced."""

    text: str
    ids: list[int]
    prompt_tokens: int
    finish_reason: str  # "length", "eos" or "stop"
    prefill_seconds: float
    decode_seconds: float
    speculative: SpeculativeStats | None = None
    prompt: str | list[int] | None = None

    @property
    def new_tokens(self) -> int:
        return len(self.ids)

    @property
    def tokens_per_second(self) -> float:
        """New tokens over the whole call (prefill included): what a user waits for."""
        return self.new_tokens / max(self.prefill_seconds + self.decode_seconds, 1e-9)

    @property
    def decode_tokens_per_second(self) -> float:
        """Tokens after the first over the time spent after prefill (steady-state decoding)."""
        return max(self.new_tokens - 1, 0) / max(self.decode_seconds, 1e-9)

    def to_dict(self) -> dict:
        out = {
            "prompt": self.prompt,
            "text": self.text,
            "new_tokens": self.new_tokens,
            "prompt_tokens": self.prompt_tokens,
            "finish_reason": self.finish_reason,
            "tokens_per_second": round(self.tokens_per_second, 2),
            "decode_tokens_per_second": round(self.decode_tokens_per_second, 2),
            "prefill_seconds": round(self.prefill_seconds, 4),
            "decode_seconds": round(self.decode_seconds, 4),
            "ids": self.ids,
        }
        if self.speculative is not None:
            out.update(self.speculative.to_dict())
        return out


class _TextStream:
    """Incremental detokenisation: emits text once it is complete UTF-8, watches for stop
    strings, and holds back a possible stop string's prefix until it is ruled out."""

    def __init__(self, tokenizer, stops: Sequence[str], on_text: Callable[[str], None] | None) -> None:
        self.tokenizer, self.stops, self.on_text = tokenizer, [s for s in stops if s], on_text
        self.active = bool(self.stops) or on_text is not None
        self.hold = max((len(s) for s in self.stops), default=1) - 1
        self.ids: list[int] = []
        self.text, self.prefix, self.read, self.emitted = "", 0, 0, 0
        self.stopped = False

    def push(self, token: int) -> bool:
        """Add one token; True when a stop string has just been completed."""
        self.ids.append(token)
        if not self.active:
            return False
        before = self.tokenizer.decode(self.ids[self.prefix : self.read])
        now = self.tokenizer.decode(self.ids[self.prefix :])
        if len(now) <= len(before) or now.endswith("\ufffd"):
            return False
        start = max(len(self.text) - self.hold, 0)
        self.text += now[len(before) :]
        self.prefix, self.read = self.read, len(self.ids)
        hits = [i for i in (self.text.find(s, start) for s in self.stops) if i >= 0]
        if hits:
            self.text, self.stopped = self.text[: min(hits)], True
        self._emit(len(self.text) if self.stopped else len(self.text) - self.hold)
        return self.stopped

    def _emit(self, upto: int) -> None:
        if self.on_text is not None and upto > self.emitted:
            self.on_text(self.text[self.emitted : upto])
            self.emitted = upto

    def finish(self) -> str:
        if not self.stopped:
            self.text = self.tokenizer.decode(self.ids)
        self._emit(len(self.text))
        return self.text


@dataclass
class _Row:
    """One prompt being decoded: its ids, what it has produced, and why it stopped."""

    prompt: str | list[int]
    ids: list[int]
    stream: _TextStream | None
    gen: torch.Generator | None
    out: list[int]
    reason: str = "length"
    done: bool = False
    prefill_seconds: float = 0.0

    def emit(self, tokens: list[int], eos: int | None, limit: int) -> None:
        """Take new tokens in order until EOS, a stop string or `limit` tokens."""
        for tok in tokens:
            if tok == eos:
                self.reason, self.done = "eos", True
                return
            self.out.append(tok)
            if self.stream is not None and self.stream.push(tok):
                self.reason, self.done = "stop", True
                return
            if len(self.out) == limit:
                self.done = True
                return

    @property
    def last(self) -> int:
        """Position of the newest token (the one the next step reads)."""
        return len(self.ids) + len(self.out) - 1

    @property
    def newest(self) -> int:
        return self.out[-1] if self.out else self.ids[-1]

    def result(self, decode_seconds: float, stats: SpeculativeStats | None) -> GenerationResult:
        text = self.stream.finish() if self.stream is not None else ""
        seconds = (self.prefill_seconds, decode_seconds)
        return GenerationResult(text, self.out, len(self.ids), self.reason, *seconds, stats, self.prompt)


class Generator:
    """Generate from a loaded model: `Generator(load_model(src)).generate("def f(")`, or
    `Generator(model, tokenizer)`; `generate_batch` decodes many prompts together.

    On CUDA with bf16 weights every decoding step after the prefill is replayed from a CUDA
    graph (`cuda_graphs=False` runs them eagerly); `compiled=True` puts each step through
    torch.compile before its capture (each new session shape compiles once, seconds to a minute)."""

    def __init__(self, source, tokenizer=None, *, cuda_graphs: bool = True, compiled: bool = False) -> None:
        model = source if isinstance(source, CausalLM) else getattr(source, "model", None)
        if not isinstance(model, CausalLM):
            raise GlmlabError(
                f"Generator needs a glmlab model or a loaded checkpoint, got {type(source).__name__}"
            )
        self.model = model.eval()
        self.tokenizer = tokenizer if tokenizer is not None else getattr(source, "tokenizer", None)
        weight = model.lm_head.weight
        self.device = weight.device
        # the routed experts read nothing back to the host only in their grouped bf16 form
        self.graphs = cuda_graphs and grouped_form(self.device.type, weight.dtype, weight.shape[1])
        if compiled and not self.graphs:
            raise GlmlabError(
                "compiling the decoding steps needs their CUDA graphs (a CUDA device and bf16 weights), "
                f"not {self.device.type} with {weight.dtype}: drop --compile"
            )
        self.compiled = compiled
        self.sessions: OrderedDict[tuple[int, int, int], DecodeSession] = OrderedDict()
        self.joined: JoinedInputs | None = None  # each layer's input products as one, for every session

    @classmethod
    def from_source(cls, source: str, device: str = "auto", *, compiled: bool = False) -> Generator:
        """Load a run directory, a checkpoint or a Hugging Face folder; it must carry a tokenizer."""
        from glmlab.checkpoint import load_model
        from glmlab.device import resolve_device

        loaded = load_model(source, resolve_device(device))
        if loaded.tokenizer is None:
            raise GlmlabError(f"{source} has no tokenizer: generate needs one (tokenizer/ or tokenizer.json)")
        return cls(loaded, compiled=compiled)

    def encode(self, prompt: str | Sequence[int]) -> list[int]:
        if isinstance(prompt, str):
            if self.tokenizer is None:
                raise GlmlabError("this Generator has no tokenizer: pass token ids or a tokenizer")
            return self.tokenizer.encode(prompt)
        return [int(i) for i in prompt]

    def check(self, prompt_len: int, max_new_tokens: int, speculative: int, use_cache: bool) -> None:
        """One-line errors for requests the model cannot serve."""
        context = self.model.config.max_position_embeddings
        if prompt_len == 0:
            raise GlmlabError("the prompt is empty: give at least one token of text")
        if max_new_tokens < 1:
            raise GlmlabError(f"--max-new-tokens must be >= 1, got {max_new_tokens}")
        if prompt_len >= context:
            raise GlmlabError(f"the prompt has {prompt_len} tokens but the model's context "
                              f"(max_position_embeddings) is {context}: shorten the prompt")  # fmt: skip
        if prompt_len + max_new_tokens > context:
            room = context - prompt_len
            raise GlmlabError(f"prompt ({prompt_len} tokens) + --max-new-tokens {max_new_tokens} exceeds "
                              f"the context {context}: lower --max-new-tokens to {room}")  # fmt: skip
        if speculative < 0:
            raise GlmlabError(f"--speculative must be >= 0, got {speculative}")
        if speculative and not use_cache:
            raise GlmlabError("--speculative needs the latent cache: drop --no-cache")
        if speculative and not len(self.model.mtp):
            raise GlmlabError("this model has no MTP module, so --speculative cannot draft: drop it")

    def generate(
        self,
        prompt: str | Sequence[int],
        max_new_tokens: int = 128,
        sampling: SamplingParams | None = None,
        speculative: int = 0,
        use_cache: bool = True,
        stop: Sequence[str] = (),
        prefill_chunk: int = 512,
        on_text: Callable[[str], None] | None = None,
    ) -> GenerationResult:
        """Continue `prompt` (text or ids). `speculative` K > 0 drafts K tokens per step with
        MTP; `use_cache=False` recomputes the whole sequence each step (the reference);
        `prefill_chunk` bounds the prompt's attention memory to chunk x length; `on_text`
        receives the text as it is produced. Stops at EOS, a stop string or max_new_tokens."""
        return self._run([prompt], max_new_tokens, sampling, speculative, use_cache, stop, prefill_chunk,
                         on_text)[0]  # fmt: skip

    def generate_batch(
        self,
        prompts: Sequence[str | Sequence[int]],
        *,
        max_new_tokens: int = 128,
        sampling: SamplingParams | None = None,
        speculative: int = 0,
        use_cache: bool = True,
        stop: Sequence[str] = (),
        prefill_chunk: int = 512,
        batch_size: int = 8,
    ) -> Iterator[GenerationResult]:
        """Continue each prompt, `batch_size` prompts decoding together; yields the results in
        order as each batch finishes. Each row runs at its own length, so every result is the
        one `generate` gives for that prompt alone (greedy; a seeded sampler is seeded per
        prompt). Speculative decoding and `use_cache=False` take one prompt at a time."""
        if batch_size < 1:
            raise GlmlabError(f"--batch-size must be >= 1, got {batch_size}")
        size = 1 if speculative or not use_cache else batch_size
        for s in range(0, len(prompts), size):
            part = prompts[s : s + size]
            yield from self._run(
                part, max_new_tokens, sampling, speculative, use_cache, stop, prefill_chunk, None
            )

    @torch.inference_mode()
    def _run(self, prompts, max_new_tokens, sampling, speculative, use_cache, stop, prefill_chunk, on_text):
        sampling = sampling or SamplingParams()
        rows = []
        for prompt in prompts:
            ids = self.encode(prompt)
            self.check(len(ids), max_new_tokens, speculative, use_cache)
            stream = _TextStream(self.tokenizer, stop, on_text) if self.tokenizer is not None else None
            rows.append(_Row(prompt if isinstance(prompt, str) else ids, ids, stream,
                             sampling.generator(self.device), []))  # fmt: skip
        if (stop or on_text is not None) and self.tokenizer is None:
            raise GlmlabError("stop strings and streaming need text: give the Generator a tokenizer")
        if prefill_chunk < 1:
            raise GlmlabError(f"--prefill-chunk must be >= 1, got {prefill_chunk}")
        if not use_cache:
            return [self._recompute(rows[0], max_new_tokens, sampling)]
        K = speculative
        need = max(len(r.ids) for r in rows) + max_new_tokens + K + 1
        key = (len(rows), session_capacity(need, graphs=self.graphs), K)
        session = self._session(key)
        eos = getattr(self.tokenizer, "eos_id", None)
        for b, row in enumerate(rows):
            t0 = time.perf_counter()
            first = choose(session.prefill(b, row.ids, prefill_chunk)[None], sampling, row.gen)[0]
            row.emit([int(first)], eos, max_new_tokens)
            row.prefill_seconds = time.perf_counter() - t0
        t1 = time.perf_counter()
        if K:
            stats = SpeculativeStats(K, note=session.drafter.note)
            self._speculative(session, rows[0], max_new_tokens, sampling, eos, stats)
        else:
            stats = None
            self._plain(session, rows, max_new_tokens, sampling, eos)
        decode = time.perf_counter() - t1
        return [row.result(decode, stats) for row in rows]

    def _session(self, key: tuple[int, int, int]) -> DecodeSession:
        """The session for (rows, capacity, depth): the last SESSIONS_KEPT are kept with their graphs."""
        if self.joined is None:
            self.joined = JoinedInputs(self.model)
        self.joined.refresh()  # the model may have trained or moved since the last call
        if key in self.sessions:
            self.sessions.move_to_end(key)
        else:
            while len(self.sessions) >= SESSIONS_KEPT:
                self.sessions.popitem(last=False)
            self.sessions[key] = DecodeSession(
                self.model, *key, graphs=self.graphs, compiled=self.compiled, joined=self.joined
            )
        return self.sessions[key]

    def _plain(self, session: DecodeSession, rows: list[_Row], limit: int, sampling, eos) -> None:
        """One token per unfinished row per step, all rows in one step; a finished row keeps
        recomputing its last position (its output is ignored)."""
        index = torch.arange(len(rows), device=self.device)
        while not all(row.done for row in rows):
            pos = torch.tensor([row.last for row in rows], device=self.device)
            session.tokens[index, pos] = torch.tensor([row.newest for row in rows], device=self.device)
            logits = session.step(pos[:, None], max(row.last for row in rows))[:, 0]
            if sampling.greedy:
                new = logits.argmax(-1).tolist()
            else:
                new = [int(choose(logits[b : b + 1], sampling, row.gen)[0]) for b, row in enumerate(rows)]
            for row, tok in zip(rows, new, strict=True):
                if not row.done:
                    row.emit([tok], eos, limit)

    def _speculative(self, session: DecodeSession, row: _Row, limit: int, sampling, eos, stats) -> None:
        """Draft K tokens after t_n, verify them in one main-model pass over positions
        n..n+K, keep the agreeing prefix and the main model's next token."""
        K, drafter, gen = session.depth, session.drafter, row.gen
        verify = torch.arange(K + 1, device=self.device)[None]
        while not row.done:
            n = row.last
            count = min(K, limit - len(row.out) - 1)  # drafts that can still be used
            if count and sampling.greedy and session.graphed_speculation is not None:
                values = session.speculate(n, row.out[-1])  # one graph, which writes t_n; one read-back
                a = min(values[0], count)  # the agreeing prefix of the drafts that can be used
                stats.record(count, a)
                row.emit(values[1 : 1 + a] + [values[1 + K + a]], eos, limit)
                continue
            session.tokens[0, n] = row.out[-1]
            if count == 0:
                logits = session.step(torch.tensor([[n]], device=self.device), n)[0]
                row.emit([int(choose(logits, sampling, gen)[0])], eos, limit)
                continue
            drafts, draft_probs = drafter.draft(n, sampling, gen)
            logits = session.step(verify + n, n + K)[0, : count + 1]
            probs = None if draft_probs is None else draft_probs[:count]
            accepted, nxt = accept(logits, drafts[:count], probs, sampling, gen)
            values = torch.cat([accepted.view(1), drafts[:count], nxt.view(1)]).tolist()
            a = values[0]
            stats.record(count, a)
            row.emit(values[1 : 1 + a] + values[-1:], eos, limit)

    def _recompute(self, row: _Row, limit: int, sampling) -> GenerationResult:
        """The reference: the whole sequence through the model at every step, no cache."""
        eos = getattr(self.tokenizer, "eos_id", None)
        t0 = time.perf_counter()
        seq = torch.tensor([row.ids], dtype=torch.long, device=self.device)
        logits = self.model(seq, logits_to_keep=1).logits[0]
        row.emit([int(choose(logits, sampling, row.gen)[0])], eos, limit)
        row.prefill_seconds = time.perf_counter() - t0
        t1 = time.perf_counter()
        while not row.done:
            seq = torch.cat([seq, seq.new_tensor([[row.out[-1]]])], dim=1)
            logits = self.model(seq, logits_to_keep=1).logits[0]
            row.emit([int(choose(logits, sampling, row.gen)[0])], eos, limit)
        return row.result(time.perf_counter() - t1, None)
