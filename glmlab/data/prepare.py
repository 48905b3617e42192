"""A run's data: its tokenizer (trained once and saved in the run), the config with the model's
vocabulary sized to that tokenizer, and the tokenized, packed training and validation streams.
The streams are cached under `$GLMLAB_CACHE/tokens/<hash>` (default ~/.cache/glmlab), keyed by
the tokenizer and the exact text, so new runs on the same corpus and a resumed run skip
tokenising (the stdlib is about 12 MB)."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from glmlab.config import Config
from glmlab.data.batching import pack
from glmlab.data.corpus import Corpus, load_corpus
from glmlab.data.tokenizer import ByteTokenizer, Tokenizer, check_vocab, load_tokenizer, train_bpe

BPE_TRAIN_CHARS = 3_000_000  # BPE learns its merges from about 3 MB of the training split
TOKENIZER_DIR = "tokenizer"
CACHE_ENV = "GLMLAB_CACHE"


@dataclass
class RunData:
    config: Config  # the run's config, vocab_size equal to the tokenizer's
    note: str | None  # what changed in the config, for the user (None: nothing)
    tokenizer: Tokenizer
    train: np.ndarray  # packed token stream
    val: np.ndarray
    source: str
    val_bytes_per_token: float  # UTF-8 bytes per validation token (information only)


def _sample_for_bpe(docs: list[str]) -> list[str]:
    """Every n-th training document, so that the sample spans the corpus, up to the cap."""
    total = sum(len(d) for d in docs)
    stride = max(1, -(-total // BPE_TRAIN_CHARS))
    return docs[::stride]


def cache_root() -> Path:
    return Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "glmlab") / "tokens"


def _fingerprint(tokenizer: Tokenizer, corpus: Corpus) -> str:
    """Hash of the tokenizer and of every document of both splits, in order."""
    h = hashlib.sha256(tokenizer.identity().encode())
    for split in (corpus.train, corpus.val):
        h.update(b"\x00split")
        for doc in split:
            h.update(doc.encode("utf-8", errors="replace") + b"\x00")
    return h.hexdigest()[:24]


def _write_cache(folder: Path, train: np.ndarray, val: np.ndarray, meta: dict) -> None:
    """Write the streams into a temporary folder and rename it into place."""
    tmp = folder.with_name(f".{folder.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    np.save(tmp / "train.npy", train)
    np.save(tmp / "val.npy", val)
    (tmp / "meta.json").write_text(json.dumps(meta, indent=1) + "\n")
    if folder.exists():
        shutil.rmtree(tmp)
    else:
        os.replace(tmp, folder)


def _sized_vocab(cfg: Config, tokenizer: Tokenizer) -> tuple[Config, str | None]:
    """A new run's model gets exactly the tokenizer's vocabulary: 257 for bytes, and what BPE
    could learn when the data holds fewer distinct tokens than the config asks for."""
    want, have = cfg.model.vocab_size, tokenizer.vocab_size
    if want == have:
        return cfg, None
    if tokenizer.kind == "byte":
        note = f"train.tokenizer=byte: vocab_size is {have} (256 bytes + EOS), not the config's {want}"
    else:
        note = (f"the data yields only {have:,} BPE tokens: vocab_size is {have}, not the config's {want} "
                "(more text gives a larger vocabulary)")  # fmt: skip
    return dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, vocab_size=have)), note


def prepare_data(cfg: Config, run_dir: Path) -> RunData:
    """Load the corpus named by `train.data`, get the run's tokenizer (load, or build and save;
    a new run's vocab_size follows it), and tokenize both splits, or read them from the cache."""
    t = cfg.train
    corpus = load_corpus(t.data, t.val_fraction, t.seed)
    tok_dir = run_dir / TOKENIZER_DIR
    note = None
    if tok_dir.is_dir():  # a resumed run's, or one placed for a new run (experiment cells, other ranks)
        tokenizer = load_tokenizer(tok_dir)
        check_vocab(tokenizer, cfg.model.vocab_size)
        cfg, note = _sized_vocab(cfg, tokenizer)  # bytes: 257 rows, as for a tokenizer built here
    else:
        if t.tokenizer == "byte":
            tokenizer = ByteTokenizer()
        else:
            tokenizer = train_bpe(_sample_for_bpe(corpus.train), cfg.model.vocab_size)
        cfg, note = _sized_vocab(cfg, tokenizer)
        tokenizer.save(tok_dir)

    folder = cache_root() / _fingerprint(tokenizer, corpus)
    if (folder / "meta.json").is_file():
        meta = json.loads((folder / "meta.json").read_text())
        train = np.load(folder / "train.npy", mmap_mode="r")
        val = np.load(folder / "val.npy", mmap_mode="r")
    else:
        vocab = tokenizer.vocab_size
        train = pack(tokenizer.encode_batch(corpus.train), tokenizer.eos_id, vocab)
        val = pack(tokenizer.encode_batch(corpus.val), tokenizer.eos_id, vocab)
        meta = {"source": corpus.source, "train_tokens": len(train), "val_tokens": len(val),
                "val_bytes": sum(len(d.encode()) for d in corpus.val)}  # fmt: skip
        try:
            _write_cache(folder, train, val, meta)
        except OSError:
            pass  # an unwritable cache only costs the next run the tokenising time
    bytes_per_token = meta["val_bytes"] / max(1, meta["val_tokens"])
    return RunData(cfg, note, tokenizer, train, val, corpus.source, bytes_per_token)
