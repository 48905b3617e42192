"""A run's data: its tokenizer (trained once and saved in the run) and the tokenized, packed
training and validation streams, cached in the run folder so a resumed run reads them back."""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from glmlab.config import Config
from glmlab.data.batching import pack
from glmlab.data.corpus import load_corpus
from glmlab.data.tokenizer import ByteTokenizer, Tokenizer, check_vocab, load_tokenizer, train_bpe

BPE_TRAIN_CHARS = 3_000_000  # BPE learns its merges from about 3 MB of the training split
TOKENIZER_DIR = "tokenizer"
CACHE_DIR = "data"


@dataclass
class RunData:
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


def _fingerprint(cfg: Config, tokenizer: Tokenizer, source: str, n_train: int, n_val: int) -> str:
    t = cfg.train
    key = json.dumps([t.data, t.val_fraction, t.seed if t.data == "synthetic" else 0, tokenizer.kind,
                      tokenizer.vocab_size, source, n_train, n_val])  # fmt: skip
    return hashlib.sha256(key.encode()).hexdigest()[:16]


def _save_array(path: Path, array: np.ndarray) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}.npy")
    np.save(tmp, array)
    os.replace(tmp, path)


def prepare_data(cfg: Config, run_dir: Path) -> RunData:
    """Load the corpus named by `train.data`, get the run's tokenizer (load, or build and save),
    and tokenize both splits, reusing `run_dir/data/` when it matches."""
    t = cfg.train
    corpus = load_corpus(t.data, t.val_fraction, t.seed)
    tok_dir = run_dir / TOKENIZER_DIR
    if tok_dir.is_dir():
        tokenizer = load_tokenizer(tok_dir)
    elif t.tokenizer == "byte":
        tokenizer = ByteTokenizer()
    else:
        tokenizer = train_bpe(_sample_for_bpe(corpus.train), cfg.model.vocab_size)
    check_vocab(tokenizer, cfg.model.vocab_size)
    if not tok_dir.is_dir():
        tokenizer.save(tok_dir)

    cache = run_dir / CACHE_DIR
    stamp = _fingerprint(cfg, tokenizer, corpus.source, len(corpus.train), len(corpus.val))
    meta_path = cache / "meta.json"
    meta = json.loads(meta_path.read_text()) if meta_path.is_file() else {}
    if meta.get("fingerprint") == stamp:
        train = np.load(cache / "train.npy", mmap_mode="r")
        val = np.load(cache / "val.npy", mmap_mode="r")
    else:
        vocab = cfg.model.vocab_size
        train = pack(tokenizer.encode_batch(corpus.train), tokenizer.eos_id, vocab)
        val = pack(tokenizer.encode_batch(corpus.val), tokenizer.eos_id, vocab)
        cache.mkdir(parents=True, exist_ok=True)
        _save_array(cache / "train.npy", train)
        _save_array(cache / "val.npy", val)
        meta = {"fingerprint": stamp, "source": corpus.source, "train_tokens": len(train),
                "val_tokens": len(val), "val_bytes": sum(len(d.encode()) for d in corpus.val)}  # fmt: skip
        meta_path.write_text(json.dumps(meta, indent=1) + "\n")
    return RunData(tokenizer, train, val, corpus.source, meta["val_bytes"] / max(1, meta["val_tokens"]))
