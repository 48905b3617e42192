"""Text sources as lists of documents, split into training and validation by file: the running
Python's standard library (tests excluded), the user's own files, or the synthetic generator."""

from __future__ import annotations

import glob
import random
import sysconfig
from dataclasses import dataclass
from pathlib import Path

from glmlab.errors import GlmlabError

# Folders of the standard library that hold tests, demos or third-party packages.
SKIP_DIRS = {"test", "tests", "idle_test", "site-packages", "dist-packages", "__pycache__"}
SPLIT_SEED = 0  # the validation files do not change with the training seed


@dataclass
class Corpus:
    """Documents in a fixed order; `source` says where they came from (for the run's record)."""

    train: list[str]
    val: list[str]
    source: str


def stdlib_files() -> list[Path]:
    """*.py files of the running Python's standard library, tests excluded, sorted."""
    root = Path(sysconfig.get_paths()["stdlib"])
    return [
        p
        for p in sorted(root.rglob("*.py"))
        if not SKIP_DIRS & set(p.relative_to(root).parts[:-1]) and not p.name.startswith("test_")
    ]


def user_files(spec: str) -> list[Path]:
    """A file, a directory (every text file below it) or a glob -> sorted list of files. Binary
    files are skipped in a folder or glob, and refused when named alone."""
    path = Path(spec).expanduser()
    if path.is_file():
        if not _is_text(path):
            raise GlmlabError(f"data file {spec} is not UTF-8 text (it looks binary): point --data at text")
        return [path]
    if path.is_dir():
        found = [p for p in sorted(path.rglob("*")) if p.is_file() and not _hidden(p.relative_to(path))]
    else:
        found = sorted(Path(p) for p in glob.glob(str(path), recursive=True) if Path(p).is_file())
        if not found and not glob.has_magic(spec):
            raise GlmlabError(f"data path {spec} does not exist: give a text file, a directory or a glob")
    found = [p for p in found if _is_text(p)]
    if not found:
        raise GlmlabError(f"data path {spec} has no text files: point --data at UTF-8 text")
    return found


def _hidden(rel: Path) -> bool:
    return any(part.startswith(".") for part in rel.parts)


def _is_text(path: Path, sample: int = 8192) -> bool:
    """No NUL byte in the first `sample` bytes, and at most 1% of them undecodable as UTF-8 (a
    multi-byte character cut by the sample's end is not counted)."""
    try:
        with open(path, "rb") as f:
            head = f.read(sample)
    except OSError:
        return False
    if b"\0" in head:
        return False
    text = head.decode("utf-8", errors="replace")
    if len(head) == sample:
        text = text[:-3] + text[-3:].rstrip("\ufffd")
    return text.count("\ufffd") <= 0.01 * max(1, len(head))


def _read(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8", errors="replace")
    except OSError as err:
        raise GlmlabError(f"cannot read {path}: {err.strerror}") from None


def split_documents(docs: list[str], val_fraction: float) -> tuple[list[str], list[str]]:
    """Hold out a fixed random share of documents (at least one); a single document is split
    at a line boundary instead, so a one-file corpus still has a validation part."""
    docs = [d for d in docs if d.strip()]
    if not docs:
        raise GlmlabError("the data is empty: every file is blank; give files with text")
    if len(docs) == 1:
        text = docs[0]
        at = int(len(text) * (1 - val_fraction))
        cut = text.rfind("\n", 0, at) + 1 or at
        return [text[:cut]], [text[cut:]]
    order = list(range(len(docs)))
    random.Random(SPLIT_SEED).shuffle(order)
    n_val = max(1, round(len(docs) * val_fraction))
    held = set(order[:n_val])
    return [d for i, d in enumerate(docs) if i not in held], [d for i, d in enumerate(docs) if i in held]


def load_corpus(data: str, val_fraction: float, seed: int) -> Corpus:
    """`stdlib`, `synthetic` (seeded by `seed`) or a user path -> Corpus."""
    if data == "synthetic":
        from glmlab.data.synthetic import synthetic_documents

        docs = synthetic_documents(seed)
        source = f"synthetic JSON/SQL, seed {seed}"
    else:
        files = stdlib_files() if data == "stdlib" else user_files(data)
        docs = [_read(p) for p in files]
        source = f"python stdlib ({len(files)} files)" if data == "stdlib" else f"{data} ({len(files)} files)"
    train, val = split_documents(docs, val_fraction)
    return Corpus(train, val, source)
