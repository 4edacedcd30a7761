"""Tokenized data on disk, and the batches the training loop draws from it.

The corpus is tokenized once and cached as a flat NumPy memmap (uint16 when the
vocabulary fits, else uint32) keyed by a hash of corpus + tokenizer, so the next
run with the same data starts instantly. Documents are joined with a separator
(the tokenizer's `<|endoftext|>` where it has one, else a blank line).

The cache's meta.json records each file's token count, size and SHA-256. Every use
checks the sizes and that no id is outside the vocabulary (one pass over the ids);
the checksums are checked when the cache is written and with `verify=True`
(`scratchlm train --verify`). A cache that fails is rebuilt.

Batches are random windows. The window positions for step s come from a generator
seeded by (seed, step, rank, micro-step): the data "position" is just the step,
which makes resuming a run exact. The trainer reads batches through a small interface,
`BatchSource`, so another source (padded chat examples, say) can stand in for `Batches`.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path
from typing import Iterator, Protocol

import numpy as np
import torch

from ..errors import ScratchLMError
from ..tokenizer import Tokenizer


def cache_root() -> Path:
    return Path(os.environ.get("SCRATCHLM_CACHE", Path.home() / ".cache" / "scratchlm"))


def _separator_ids(tok: Tokenizer) -> list[int]:
    if "<|endoftext|>" in tok.special_tokens:
        return [tok.special_tokens["<|endoftext|>"]]
    try:
        return tok.encode("\n\n")
    except ScratchLMError:  # a character tokenizer trained on text without newlines: no separator
        return []


def _encode_docs(tok: Tokenizer, docs: list[str]) -> np.ndarray:
    sep = _separator_ids(tok)
    encoded = tok.encode_documents(docs)  # special-token text in a corpus is just text
    ids: list[int] = []
    for i, e in enumerate(encoded):
        if i:
            ids += sep
        ids += e
    dtype = np.uint16 if tok.vocab_size <= 65536 else np.uint32
    return np.asarray(ids, dtype=dtype)


def _sha256(arr: np.ndarray) -> str:
    return hashlib.sha256(memoryview(np.ascontiguousarray(arr)).cast("B")).hexdigest()


def _cache_problem(folder: Path, vocab_size: int, verify: bool) -> str | None:
    """Why the cache in `folder` cannot be used (None: it can)."""
    try:
        info = json.loads((folder / "meta.json").read_text())
        for split in ("train", "val"):
            entry = info[split]
            path = folder / f"{split}.bin"
            dtype = np.dtype(entry["dtype"])
            if path.stat().st_size != entry["tokens"] * dtype.itemsize:
                return f"{path.name} has {path.stat().st_size} bytes, not {entry['tokens'] * dtype.itemsize}"
            ids = np.memmap(path, dtype=dtype, mode="r") if entry["tokens"] else np.zeros(0, dtype)
            if ids.size and int(ids.max()) >= vocab_size:
                return f"{path.name} holds id {int(ids.max())}, outside the vocabulary of {vocab_size}"
            if verify and _sha256(ids) != entry.get("sha256"):
                return f"{path.name} fails its checksum"
    except (OSError, ValueError, KeyError, TypeError) as e:
        return f"is unreadable ({type(e).__name__}: {e})"
    return None


def _write_cache(folder: Path, corpus, tok) -> None:
    """Encode and write both splits, then meta.json (with sizes and checksums) last."""
    info = {}
    for split, docs in (("train", corpus.train), ("val", corpus.val)):
        arr = _encode_docs(tok, docs)
        tmp = folder / f"{split}.bin.{os.getpid()}.tmp"
        try:
            arr.tofile(tmp)
            os.replace(tmp, folder / f"{split}.bin")
        finally:
            tmp.unlink(missing_ok=True)
        info[split] = {"tokens": int(arr.size), "dtype": str(arr.dtype), "bytes": int(arr.nbytes),
                       "sha256": _sha256(arr)}
    tmp = folder / f"meta.json.{os.getpid()}.tmp"
    try:
        tmp.write_text(json.dumps(info))
        os.replace(tmp, folder / "meta.json")
    finally:
        tmp.unlink(missing_ok=True)


def tokenize_corpus(corpus, tok, tok_hash: str, cache: Path | None = None, verify: bool = False,
                    warn=lambda message: None) -> dict[str, np.memmap]:
    """{'train': ids, 'val': ids} as read-only memmaps, tokenizing only on a cache miss
    (or when the cached files fail their checks: `warn` is told, and they are rebuilt).

    Safe with several processes at once (torchrun ranks, two runs): each writes under its
    own temporary names and renames into place, meta.json last, so a reader that finds
    meta.json finds complete files (identical whichever process wrote them)."""
    folder = (cache or cache_root()) / "tokens" / f"{corpus.fingerprint()}-{tok_hash}"
    meta = folder / "meta.json"
    if meta.exists():
        problem = _cache_problem(folder, tok.vocab_size, verify)
        if problem:
            warn(f"the token cache {folder} {problem}; rebuilding it")
            meta.unlink(missing_ok=True)
    if not meta.exists():
        try:
            folder.mkdir(parents=True, exist_ok=True)
            _write_cache(folder, corpus, tok)
        except OSError as e:  # numpy's tofile reports a full disk as an OSError without an errno
            free = shutil.disk_usage(folder.parent).free if folder.parent.exists() else 0
            raise ScratchLMError(f"cannot write the token cache in {folder} ({e.strerror or e}; {free / 2**20:.0f} MiB "
                                 "free); free some space or set SCRATCHLM_CACHE to a folder on another disk") from None
    info = json.loads(meta.read_text())
    return {s: np.memmap(folder / f"{s}.bin", dtype=info[s]["dtype"], mode="r", shape=(info[s]["tokens"],))
            for s in ("train", "val")}


class BatchSource(Protocol):
    """What the trainer asks of its data: `Batches` below, or your own (e.g. padded chat examples
    whose targets are -100 where no loss is wanted: those positions are left out of the loss
    and of the validation figures)."""

    num_tokens: int  # tokens in the split (for the start-up summary)
    data: np.ndarray  # the split's tokens as one 1-D array (for statistics and probe prompts: the doctor, viz)

    def get(self, position: int, micro_step: int, micro_batch_size: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(x, y) of shape (micro_batch_size, T), T <= block_size, on the device; a pure function of
        its arguments, so that a resumed or rolled-back run sees exactly the same batches."""
        ...

    def eval_windows(self, n_tokens: int, micro_batch_size: int, rank: int = 0,
                     world: int = 1) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """The same (x, y) batches every evaluation, about `n_tokens` tokens in all; rank's share of them."""
        ...


def batch_source(data, block_size: int, device, seed: int, split: str) -> BatchSource:
    """Token ids (a 1-D NumPy array) become `Batches`; anything else is taken to be a `BatchSource` already."""
    return Batches(data, block_size, device, seed, split=split) if isinstance(data, np.ndarray) else data


class Batches:
    """Random (x, y) windows of `block_size` tokens; y is x shifted by one."""

    def __init__(self, data: np.ndarray, block_size: int, device, seed: int, rank: int = 0, split: str = "training"):
        # a window is block_size + 1 tokens (y is x shifted by one), and `get` draws its
        # start from [0, len - block_size - 1): that range must not be empty
        if len(data) < block_size + 2:
            raise ScratchLMError(
                f"the {split} split has {len(data)} tokens, too short for one context window of {block_size} "
                f"(it needs at least {block_size + 2}); use more text or a smaller --model.block_size")
        self.data, self.block_size, self.device = data, block_size, torch.device(device)
        self.seed, self.rank = seed, rank
        self.num_tokens = len(data)

    def get(self, position: int, micro_step: int, micro_batch_size: int) -> tuple[torch.Tensor, torch.Tensor]:
        rng = np.random.default_rng([self.seed, position, self.rank, micro_step])
        ix = rng.integers(0, len(self.data) - self.block_size - 1, size=micro_batch_size)
        return self._windows(ix)

    def _windows(self, ix):
        T = self.block_size
        rows = np.stack([self.data[i : i + T + 1] for i in ix]).astype(np.int64)
        xy = torch.from_numpy(rows)
        x, y = xy[:, :-1], xy[:, 1:]
        if self.device.type == "cuda":
            return x.pin_memory().to(self.device, non_blocking=True), y.pin_memory().to(self.device, non_blocking=True)
        return x.to(self.device), y.to(self.device)

    def eval_windows(self, n_tokens: int, micro_batch_size: int, rank: int = 0, world: int = 1):
        """Fixed, evenly spaced windows covering the split (the same every evaluation);
        with several ranks, each takes its share."""
        T = self.block_size
        n = max(1, min(n_tokens // T, (len(self.data) - 1) // T))
        starts = np.linspace(0, len(self.data) - T - 1, n).astype(np.int64)[rank::world]
        for i in range(0, len(starts), micro_batch_size):
            yield self._windows(starts[i : i + micro_batch_size])
