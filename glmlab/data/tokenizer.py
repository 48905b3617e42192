"""Tokenizers: byte-level (256 bytes + EOS, nothing to train) and byte-level BPE trained with the
`tokenizers` library. Both save to and load from a folder (`tokenizer/` in a run)."""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path

from glmlab.errors import GlmlabError

EOS_TOKEN = "<|endoftext|>"
META_FILE = "glmlab_tokenizer.json"  # {"kind": "byte" | "bpe", "eos_token": ...}
HF_FILE = "tokenizer.json"


class Tokenizer:
    """The interface every command codes against: encode, decode, vocab_size, eos_id, save."""

    kind: str
    vocab_size: int
    eos_id: int

    def encode(self, text: str) -> list[int]:
        raise NotImplementedError

    def encode_batch(self, texts: list[str]) -> list[list[int]]:
        return [self.encode(t) for t in texts]

    def decode(self, ids: Iterable[int]) -> str:
        raise NotImplementedError

    def token_bytes(self) -> list[int]:
        """UTF-8 bytes each token id stands for (0 for special tokens): for bits per byte."""
        raise NotImplementedError

    def identity(self) -> str:
        """A string that changes whenever the mapping from text to ids would (cache keys)."""
        raise NotImplementedError

    def save(self, directory: str | Path) -> None:
        raise NotImplementedError


class ByteTokenizer(Tokenizer):
    """Ids 0..255 are bytes, 256 is EOS; decoding replaces invalid UTF-8."""

    kind = "byte"
    vocab_size = 257
    eos_id = 256

    def encode(self, text: str) -> list[int]:
        return list(text.encode("utf-8"))

    def decode(self, ids: Iterable[int]) -> str:
        return bytes(i for i in ids if 0 <= i < 256).decode("utf-8", errors="replace")

    def token_bytes(self) -> list[int]:
        return [1] * 256 + [0]

    def identity(self) -> str:
        return "byte"

    def save(self, directory: str | Path) -> None:
        path = Path(directory)
        path.mkdir(parents=True, exist_ok=True)
        (path / META_FILE).write_text(json.dumps({"kind": "byte", "eos_token": EOS_TOKEN}) + "\n")


class BPETokenizer(Tokenizer):
    """A `tokenizers.Tokenizer` (byte-level BPE, or any tokenizer.json of a Hugging Face folder)."""

    kind = "bpe"

    def __init__(self, backend, eos_token: str = EOS_TOKEN) -> None:
        self.backend = backend
        eos = backend.token_to_id(eos_token)
        if eos is None:
            raise GlmlabError(f"tokenizer has no end-of-text token {eos_token!r}: retrain it or add it")
        self.eos_token = eos_token
        self.eos_id = eos
        self.vocab_size = backend.get_vocab_size(with_added_tokens=True)

    def encode(self, text: str) -> list[int]:
        return self.backend.encode(text).ids

    def encode_batch(self, texts: list[str]) -> list[list[int]]:
        return [e.ids for e in self.backend.encode_batch(texts)]

    def decode(self, ids: Iterable[int]) -> str:
        return self.backend.decode(list(ids), skip_special_tokens=True)

    def token_bytes(self) -> list[int]:
        # Byte-level BPE writes each byte as one printable character, so a token's length in
        # characters is its length in bytes; special tokens stand for no text.
        special = {t.content for t in self.backend.get_added_tokens_decoder().values() if t.special}
        out = [0] * self.vocab_size
        for token, idx in self.backend.get_vocab(with_added_tokens=True).items():
            out[idx] = 0 if token in special else len(token)
        return out

    def identity(self) -> str:
        return self.backend.to_str()

    def save(self, directory: str | Path) -> None:
        path = Path(directory)
        path.mkdir(parents=True, exist_ok=True)
        self.backend.save(str(path / HF_FILE))
        (path / META_FILE).write_text(json.dumps({"kind": "bpe", "eos_token": self.eos_token}) + "\n")


def train_bpe(texts: Iterable[str], vocab_size: int) -> BPETokenizer:
    """Train a byte-level BPE of `vocab_size` tokens (EOS included) on `texts`, or fewer when the
    text runs out of pairs to merge (its `vocab_size` says how many; never below 257)."""
    from tokenizers import Tokenizer as Backend
    from tokenizers import decoders, models, pre_tokenizers, trainers

    if vocab_size < 257:
        raise GlmlabError(f"vocab_size {vocab_size} is too small for byte-level BPE: use at least 257")
    backend = Backend(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[EOS_TOKEN],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    backend.train_from_iterator(texts, trainer=trainer)
    return BPETokenizer(backend)


def load_tokenizer(directory: str | Path) -> Tokenizer:
    """Load what `Tokenizer.save` wrote, or a Hugging Face folder's tokenizer.json."""
    path = Path(directory)
    meta_path = path / META_FILE
    meta: dict = {}
    if meta_path.is_file():
        try:
            meta = json.loads(meta_path.read_text())
        except (OSError, json.JSONDecodeError) as err:
            raise GlmlabError(f"cannot read {meta_path}: {err}; delete the folder to retrain") from None
    if meta.get("kind") == "byte":
        return ByteTokenizer()
    hf_path = path / HF_FILE
    if not hf_path.is_file():
        raise GlmlabError(f"no tokenizer in {path}: expected {META_FILE} or {HF_FILE}")
    from tokenizers import Tokenizer as Backend

    try:
        backend = Backend.from_file(str(hf_path))
    except Exception as err:  # the Rust library raises a plain Exception on a bad file
        raise GlmlabError(f"cannot load {hf_path}: {str(err).splitlines()[0]}") from None
    eos = meta.get("eos_token") or _guess_eos(backend)
    return BPETokenizer(backend, eos)


def _guess_eos(backend) -> str:
    """The end-of-text token of a foreign tokenizer.json (GLM, DeepSeek, GPT-2 spellings)."""
    names = ["<|endoftext|>", "<｜end▁of▁sentence｜>", "</s>", "<eos>", "<|end_of_text|>"]
    vocab = backend.get_vocab(with_added_tokens=True)
    return next((n for n in names if n in vocab), EOS_TOKEN)


def check_vocab(tokenizer: Tokenizer, model_vocab: int) -> None:
    """A tokenizer must fit the model's embedding; a trained BPE must match it exactly."""
    if tokenizer.kind == "byte" and model_vocab < tokenizer.vocab_size:
        raise GlmlabError(
            f"vocab_size {model_vocab} is too small for the byte tokenizer (256 bytes + EOS = 257): "
            "set vocab_size >= 257"
        )
    if tokenizer.kind == "bpe" and tokenizer.vocab_size != model_vocab:
        raise GlmlabError(
            f"tokenizer has {tokenizer.vocab_size} tokens but the model's vocab_size is {model_vocab}: "
            f"set vocab_size={tokenizer.vocab_size} or retrain the tokenizer"
        )
