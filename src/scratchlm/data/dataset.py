"""Tokenized data on disk, and the batches the training loop draws from it.

The corpus is tokenized once and cached as a flat NumPy memmap (uint16 when the
vocabulary fits, else uint32) keyed by a hash of corpus + tokenizer, so the next
run with the same data starts instantly. Documents are joined with a separator
(the tokenizer's `<|endoftext|>` where it has one, else a blank line).

Batches are random windows. The window positions for step s come from a generator
seeded by (seed, step, rank, micro-step): the data "position" is just the step,
which makes resuming a run exact.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import torch

from ..errors import ScratchLMError


def cache_root() -> Path:
    return Path(os.environ.get("SCRATCHLM_CACHE", Path.home() / ".cache" / "scratchlm"))


def _separator_ids(tok) -> list[int]:
    special = getattr(tok, "special_tokens", None) or {}
    if "<|endoftext|>" in special:
        return [special["<|endoftext|>"]]
    try:
        return tok.encode("\n\n")
    except Exception:  # a character tokenizer trained on text without newlines: no separator
        return []


def _encode_docs(tok, docs: list[str]) -> np.ndarray:
    sep = _separator_ids(tok)
    if hasattr(tok, "encode_batch"):  # BPE: special-token text in a corpus is just text
        encoded = tok.encode_batch(docs, disallowed_special=())
    else:
        encoded = [tok.encode(d) for d in docs]
    ids: list[int] = []
    for i, e in enumerate(encoded):
        if i:
            ids += sep
        ids += e
    dtype = np.uint16 if tok.vocab_size <= 65536 else np.uint32
    return np.asarray(ids, dtype=dtype)


def tokenize_corpus(corpus, tok, tok_hash: str, cache: Path | None = None) -> dict[str, np.memmap]:
    """{'train': ids, 'val': ids} as read-only memmaps, tokenizing only on a cache miss.

    Safe with several processes at once (torchrun ranks, two runs): each writes under its
    own temporary names and renames into place, meta.json last, so a reader that finds
    meta.json finds complete files (identical whichever process wrote them)."""
    folder = (cache or cache_root()) / "tokens" / f"{corpus.fingerprint()}-{tok_hash}"
    meta = folder / "meta.json"
    if not meta.exists():
        folder.mkdir(parents=True, exist_ok=True)
        info = {}
        for split, docs in (("train", corpus.train), ("val", corpus.val)):
            arr = _encode_docs(tok, docs)
            tmp = folder / f"{split}.bin.{os.getpid()}.tmp"
            arr.tofile(tmp)
            os.replace(tmp, folder / f"{split}.bin")
            info[split] = {"tokens": int(arr.size), "dtype": str(arr.dtype)}
        tmp = folder / f"meta.json.{os.getpid()}.tmp"
        tmp.write_text(json.dumps(info))
        os.replace(tmp, meta)
    info = json.loads(meta.read_text())
    return {s: np.memmap(folder / f"{s}.bin", dtype=info[s]["dtype"], mode="r", shape=(info[s]["tokens"],)) for s in ("train", "val")}


class Batches:
    """Random (x, y) windows of `block_size` tokens; y is x shifted by one."""

    def __init__(self, data: np.ndarray, block_size: int, device, seed: int, rank: int = 0, split: str = "training"):
        # a window is block_size + 1 tokens (y is x shifted by one), and `get` draws its
        # start from [0, len - block_size - 1): that range must not be empty
        if len(data) < block_size + 2:
            raise ScratchLMError(
                f"the {split} split has {len(data)} tokens, too short for one context window of {block_size} "
                f"(it needs at least {block_size + 2}); use more text or a smaller --model.block_size")
        self.data, self.block_size, self.device, self.seed, self.rank = data, block_size, torch.device(device), seed, rank

    def get(self, step: int, micro: int, batch: int) -> tuple[torch.Tensor, torch.Tensor]:
        rng = np.random.default_rng([self.seed, step, self.rank, micro])
        ix = rng.integers(0, len(self.data) - self.block_size - 1, size=batch)
        return self._windows(ix)

    def _windows(self, ix):
        T = self.block_size
        rows = np.stack([self.data[i : i + T + 1] for i in ix]).astype(np.int64)
        xy = torch.from_numpy(rows)
        x, y = xy[:, :-1], xy[:, 1:]
        if self.device.type == "cuda":
            return x.pin_memory().to(self.device, non_blocking=True), y.pin_memory().to(self.device, non_blocking=True)
        return x.to(self.device), y.to(self.device)

    def eval_windows(self, n_tokens: int, batch: int, rank: int = 0, world: int = 1):
        """Fixed, evenly spaced windows covering the split (the same every evaluation);
        with several ranks, each takes its share."""
        T = self.block_size
        n = max(1, min(n_tokens // T, (len(self.data) - 1) // T))
        starts = np.linspace(0, len(self.data) - T - 1, n).astype(np.int64)[rank::world]
        for i in range(0, len(starts), batch):
            yield self._windows(starts[i : i + batch])
