"""The decoding loop: chunked prefill into the latent cache, one token (or one verified draft
run) per step, stop conditions, streaming text (spec 2.1 absorbed form, spec 3)."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from glmlab.errors import GlmlabError
from glmlab.generate.sampling import SamplingParams, choose
from glmlab.generate.speculative import MTPDrafter, SpeculativeStats, accept
from glmlab.model import CausalLM


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


class Generator:
    """Generate from a loaded model: `Generator(load_model(src)).generate("def f(")`, or
    `Generator(model, tokenizer)`. Batch size 1; prompts run one after another."""

    def __init__(self, source, tokenizer=None) -> None:
        model = source if isinstance(source, CausalLM) else getattr(source, "model", None)
        if not isinstance(model, CausalLM):
            raise GlmlabError(
                f"Generator needs a glmlab model or a loaded checkpoint, got {type(source).__name__}"
            )
        self.model = model.eval()
        self.tokenizer = tokenizer if tokenizer is not None else getattr(source, "tokenizer", None)
        self.device = model.lm_head.weight.device

    @classmethod
    def from_source(cls, source: str, device: str = "auto") -> Generator:
        """Load a run directory, a checkpoint or a Hugging Face folder; it must carry a tokenizer."""
        from glmlab.checkpoint import load_model
        from glmlab.device import resolve_device

        loaded = load_model(source, resolve_device(device))
        if loaded.tokenizer is None:
            raise GlmlabError(f"{source} has no tokenizer: generate needs one (tokenizer/ or tokenizer.json)")
        return cls(loaded)

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

    @torch.inference_mode()
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
        sampling = sampling or SamplingParams()
        ids = self.encode(prompt)
        P, K = len(ids), speculative
        self.check(P, max_new_tokens, K, use_cache)
        if (stop or on_text is not None) and self.tokenizer is None:
            raise GlmlabError("stop strings and streaming need text: give the Generator a tokenizer")
        if prefill_chunk < 1:
            raise GlmlabError(f"--prefill-chunk must be >= 1, got {prefill_chunk}")
        capacity = P + max_new_tokens + K + 1
        tokens = torch.zeros(1, capacity, dtype=torch.long, device=self.device)
        tokens[0, :P] = torch.tensor(ids, dtype=torch.long)
        gen = sampling.generator(self.device)
        eos = getattr(self.tokenizer, "eos_id", None)
        stream = _TextStream(self.tokenizer, stop, on_text) if self.tokenizer is not None else None
        stats = None

        t0 = time.perf_counter()
        if use_cache:
            cache = self.model.new_cache(1, capacity)
            drafter = MTPDrafter(self.model, K, capacity, prefill_chunk) if K else None
            if drafter is not None:
                stats = SpeculativeStats(K, note=drafter.note)
            logits = self._prefill(tokens[:, :P], cache, prefill_chunk, drafter)
        else:
            logits = self.model(tokens[:, :P], logits_to_keep=1).logits[0]
        first = choose(logits, sampling, gen)[0]
        new = [int(first)]
        t1 = time.perf_counter()
        out_ids: list[int] = []
        reason, n = "length", P
        while True:
            for tok in new:
                if tok == eos:
                    reason = "eos"
                    break
                out_ids.append(tok)
                if stream is not None and stream.push(tok):
                    reason = "stop"
                    break
                if len(out_ids) == max_new_tokens:
                    break
            if reason != "length" or len(out_ids) == max_new_tokens:
                break
            tokens[0, n] = new[-1]
            count = min(K, max_new_tokens - len(out_ids) - 1)
            if not use_cache:
                logits = self.model(tokens[:, : n + 1], logits_to_keep=1).logits[0]
                new = [int(choose(logits, sampling, gen)[0])]
                n += 1
            elif count == 0:
                logits = self.model(tokens[:, n : n + 1], cache=cache).logits[0]
                new = [int(choose(logits, sampling, gen)[0])]
                n += 1
            else:
                new = self._speculative_step(tokens, n, count, cache, drafter, sampling, gen)
                stats.record(count, len(new) - 1)
                n += len(new)
        t2 = time.perf_counter()
        text = stream.finish() if stream is not None else ""
        return GenerationResult(text, out_ids, P, reason, t1 - t0, t2 - t1, stats)

    def _prefill(self, prompt: torch.Tensor, cache, chunk: int, drafter: MTPDrafter | None) -> torch.Tensor:
        """Run the prompt through the model `chunk` tokens at a time; last position's logits [1, V]."""
        for s in range(0, prompt.shape[1], chunk):
            out = self.model(prompt[:, s : s + chunk], cache=cache, logits_to_keep=1)
            if drafter is not None:
                drafter.record_hidden(s, out.hidden_states)
        return out.logits[0]

    def _speculative_step(
        self, tokens, n: int, count: int, cache, drafter: MTPDrafter, sampling, gen
    ) -> list[int]:
        """Draft `count` tokens after t_n, verify them in one main-model pass over positions
        n..n+count, roll the caches back past the first rejection. Returns the new tokens."""
        drafts, draft_probs = drafter.draft(tokens, n, count, sampling, gen)
        out = self.model(tokens[:, n : n + count + 1], cache=cache)
        drafter.record_hidden(n, out.hidden_states)
        accepted, nxt = accept(out.logits[0], drafts, draft_probs, sampling, gen)
        values = torch.cat([accepted.view(1), drafts, nxt.view(1)]).tolist()
        a = values[0]
        cache.truncate(n + a + 1)
        drafter.rollback(n, count, a)
        return values[1 : 1 + a] + values[-1:]
