"""Corpora, tokenizers, packing and the resumable batch order (issue 3, part 1)."""

from __future__ import annotations

import json
import random

import numpy as np
import pytest

from glmlab.config import load_config
from glmlab.data.batching import Batches, pack, validation_batches
from glmlab.data.corpus import load_corpus, split_documents, stdlib_files, user_files
from glmlab.data.prepare import prepare_data
from glmlab.data.synthetic import synthetic_documents
from glmlab.data.tokenizer import ByteTokenizer, check_vocab, load_tokenizer, train_bpe
from glmlab.errors import GlmlabError

TEXT = "def f(x):\n    return x + 1  # héllo wörld ✓\n"


def _texts(n: int = 200, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    words = ["alpha", "beta", "gamma", "delta", "return", "import", "class", "self", "lambda", "yield"]
    return [" ".join(rng.choice(words) + str(rng.randint(0, 99)) for _ in range(50)) for _ in range(n)]


def test_byte_tokenizer_round_trip(tmp_path):
    tok = ByteTokenizer()
    ids = tok.encode(TEXT)
    assert max(ids) < 256 and tok.vocab_size == 257 and tok.eos_id == 256
    assert tok.decode(ids + [tok.eos_id]) == TEXT
    assert sum(tok.token_bytes()[i] for i in ids) == len(TEXT.encode())
    tok.save(tmp_path)
    again = load_tokenizer(tmp_path)
    assert again.kind == "byte" and again.encode(TEXT) == ids


def test_bpe_trains_to_exact_vocab_and_round_trips(tmp_path):
    tok = train_bpe(_texts() + [TEXT], 400)
    assert tok.vocab_size == 400
    ids = tok.encode(TEXT)
    assert tok.decode(ids) == TEXT
    assert len(ids) < len(TEXT.encode())  # merges were learned
    assert sum(tok.token_bytes()[i] for i in ids) == len(TEXT.encode())
    assert tok.token_bytes()[tok.eos_id] == 0
    tok.save(tmp_path)
    again = load_tokenizer(tmp_path)
    assert again.encode(TEXT) == ids and again.eos_id == tok.eos_id and again.vocab_size == 400
    # Unseen characters still encode (byte fallback of byte-level BPE).
    odd = "字 ∮ 🙂"
    assert again.decode(again.encode(odd)) == odd


def test_tokenizer_errors(tmp_path):
    small = train_bpe(["tiny text"], 4000)  # too little text for 4000 tokens: what it can learn
    assert 257 <= small.vocab_size < 4000 and small.decode(small.encode("tiny text")) == "tiny text"
    with pytest.raises(GlmlabError, match="257"):
        check_vocab(ByteTokenizer(), 200)
    check_vocab(ByteTokenizer(), 300)  # a larger embedding is fine for bytes
    with pytest.raises(GlmlabError, match="vocab_size"):
        check_vocab(train_bpe(_texts(), 300), 512)
    with pytest.raises(GlmlabError, match="no tokenizer"):
        load_tokenizer(tmp_path)


def test_stdlib_corpus_excludes_tests_and_is_ordered():
    files = stdlib_files()
    assert len(files) > 100 and files == sorted(files)
    for p in files:
        assert not {"test", "tests", "idle_test"} & set(p.parts) and not p.name.startswith("test_")


def test_split_by_document_is_fixed_and_disjoint():
    docs = [f"doc {i}\n" for i in range(100)]
    train, val = split_documents(docs, 0.1)
    assert len(val) == 10 and len(train) == 90 and not set(train) & set(val)
    assert split_documents(docs, 0.1) == (train, val)
    one_train, one_val = split_documents(["line\n" * 100], 0.2)
    assert one_train[0] + one_val[0] == "line\n" * 100 and one_val[0].startswith("line")


def test_user_data_file_dir_glob_and_errors(tmp_path):
    (tmp_path / "a.txt").write_text("alpha\n")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "b.md").write_text("beta\n")
    (tmp_path / "blob.bin").write_bytes(b"\0\1\2")
    assert user_files(str(tmp_path / "a.txt")) == [tmp_path / "a.txt"]
    assert user_files(str(tmp_path)) == [tmp_path / "a.txt", tmp_path / "sub" / "b.md"]
    assert user_files(str(tmp_path / "**" / "*.md")) == [tmp_path / "sub" / "b.md"]
    with pytest.raises(GlmlabError, match="does not exist"):
        user_files(str(tmp_path / "missing.txt"))
    with pytest.raises(GlmlabError, match="no text files"):
        user_files(str(tmp_path / "*.nothing"))
    (tmp_path / "empty.txt").write_text("  \n")
    with pytest.raises(GlmlabError, match="empty"):
        load_corpus(str(tmp_path / "empty.txt"), 0.1, 0)


def test_a_binary_file_is_refused_alone_and_skipped_in_a_folder(tmp_path):
    """Issue 11 item 2: the folder rule (binary files are not text) holds for a single file too,
    including random bytes with no NUL; UTF-8 text with a character cut by the sample is text."""
    rng = np.random.default_rng(0)
    noise = bytes(b for b in rng.integers(1, 256, 20000, dtype=np.uint8).tobytes())  # no NUL byte
    (tmp_path / "blob.bin").write_bytes(noise)
    (tmp_path / "nul.dat").write_bytes(b"text\0more")
    for name in ("blob.bin", "nul.dat"):
        with pytest.raises(GlmlabError, match="not UTF-8 text"):
            user_files(str(tmp_path / name))
    (tmp_path / "notes.md").write_text("é" * 10000)  # 2-byte characters: the 8 KB sample cuts none...
    (tmp_path / "odd.md").write_text("a" + "é" * 10000)  # ...this one's sample ends mid-character
    assert user_files(str(tmp_path)) == [tmp_path / "notes.md", tmp_path / "odd.md"]


def test_synthetic_is_seeded_structured_text():
    a, b = synthetic_documents(1, n_docs=50), synthetic_documents(1, n_docs=50)
    assert a == b and a != synthetic_documents(2, n_docs=50)
    lines = [line for doc in a for line in doc.splitlines()]
    records = [json.loads(line) for line in lines if line.startswith("{")]
    queries = [line for line in lines if line.split(" ")[0] in ("SELECT", "INSERT", "UPDATE")]
    assert records and queries and len(records) + len(queries) == len(lines)
    assert all(q.endswith(";") for q in queries)


def test_pack_joins_documents_with_eos():
    stream = pack([[1, 2], [3], []], eos_id=9, vocab_size=10)
    assert stream.tolist() == [1, 2, 9, 3, 9, 9]
    assert stream.dtype == np.uint16 and pack([[1]], 0, 70000).dtype == np.int32


def test_batches_are_a_function_of_position():
    tokens = np.arange(10 * 4, dtype=np.uint16)  # 10 sequences of 4
    a = Batches(tokens, seq_len=4, batch_size=3, seed=7)
    seen = [a.batch(p) for p in range(0, 30, 3)]  # three epochs
    first_epoch = np.concatenate([b.numpy() for b in seen[:3]] + [a.batch(9).numpy()[:1]])
    assert sorted(first_epoch[:, 0].tolist()) == list(range(0, 40, 4))  # each sequence once per epoch
    b = Batches(tokens, seq_len=4, batch_size=3, seed=7)  # a resumed run: fresh object, same position
    assert all((b.batch(p) == seen[p // 3]).all() for p in (27, 3, 12))
    other = Batches(tokens, seq_len=4, batch_size=3, seed=8)
    assert not all((other.batch(p) == seen[p // 3]).all() for p in range(0, 30, 3))
    with pytest.raises(GlmlabError, match="fewer than one sequence"):
        Batches(tokens[:3], seq_len=4, batch_size=1, seed=0)
    with pytest.raises(GlmlabError, match="non-negative"):  # numpy's generator would raise ValueError
        Batches(tokens, seq_len=4, batch_size=1, seed=-1)
    val = validation_batches(tokens, seq_len=4, batch_size=3, n_batches=2)
    assert [v.shape[0] for v in val] == [3, 3] and val[0][0].tolist() == [0, 1, 2, 3]


def test_prepare_data_saves_tokenizer_and_reuses_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("GLMLAB_CACHE", str(tmp_path / "cache"))
    data = tmp_path / "corpus"
    data.mkdir()
    for i, text in enumerate(_texts(40)):
        (data / f"f{i:02d}.txt").write_text(text)
    cfg = load_config("glm5-tiny", ["vocab_size=300", f"train.data={data}"])
    run = tmp_path / "run"
    first = prepare_data(cfg, run)
    assert first.tokenizer.vocab_size == 300 and (run / "tokenizer" / "tokenizer.json").is_file()
    assert first.config == cfg and first.note is None
    (entry,) = (tmp_path / "cache" / "tokens").iterdir()
    stamp = (entry / "train.npy").stat().st_mtime_ns
    other_run = prepare_data(cfg, tmp_path / "run2")  # same text, same (deterministic) BPE: cache hit
    assert (entry / "train.npy").stat().st_mtime_ns == stamp
    assert np.array_equal(first.train, other_run.train) and np.array_equal(first.val, other_run.val)
    assert first.train[-1] == first.tokenizer.eos_id
    (data / "f00.txt").write_text("changed text " * 50)  # new content: a new cache entry
    prepare_data(cfg, run)
    assert len(list((tmp_path / "cache" / "tokens").iterdir())) == 2


@pytest.mark.parametrize("tokenizer", ["bpe", "byte"])
def test_vocab_size_follows_the_tokenizer_of_a_new_run(tokenizer, tmp_path, monkeypatch):
    """Issue 11 item 7: a modest folder cannot fill glm5-tiny's 4096 BPE tokens: the run gets the
    vocabulary its data yields, and says so; with bytes the model has exactly 257 rows."""
    monkeypatch.setenv("GLMLAB_CACHE", str(tmp_path / "cache"))
    data = tmp_path / "notes"
    data.mkdir()
    for i, text in enumerate(_texts(10)):
        (data / f"n{i}.md").write_text(text)
    cfg = load_config("glm5-tiny", [f"train.data={data}", f"train.tokenizer={tokenizer}"])
    assert cfg.model.vocab_size == 4096
    got = prepare_data(cfg, tmp_path / "run")
    size = got.tokenizer.vocab_size
    assert got.config.model.vocab_size == size
    assert size == 257 if tokenizer == "byte" else 257 < size < 4096
    assert got.note is not None and str(size) in got.note and "4096" in got.note
    again = prepare_data(got.config, tmp_path / "run")  # a resumed run: its saved tokenizer, no change
    assert again.config == got.config and again.note is None
    if tokenizer == "bpe":
        with pytest.raises(GlmlabError, match="vocab_size"):
            prepare_data(cfg, tmp_path / "run")  # the saved tokenizer does not fit another vocabulary
