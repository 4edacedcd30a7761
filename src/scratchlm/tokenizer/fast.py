"""The speed layers of the BPE encoder: same ids as `BPETokenizer.encode_chunk`, faster.

`bpe.py` defines what encoding is: split the text into chunks, then merge the bytes
of each chunk, lowest rank first (`encode_chunk`). That is the lesson, and it is
slow: a Python loop per merge. Real text goes through `FastEncoder`, which gives the
same ids (tests/test_tokenizer_bpe.py checks it against `encode_chunk`) by:

1. **A chunk cache.** " the" occurs thousands of times; its ids are computed once.
   The cache is bounded (`CACHE_LIMIT`): when full, a new one starts.
2. **The whole-token shortcut.** A chunk whose bytes are exactly one token encodes to
   that token (tiktoken takes the same shortcut; see `_whole_tokens`).
3. **A batch merge.** A fresh text brings thousands of new chunks: they are merged
   together with NumPy, one merge rank per round (`batch_merge.py`).
4. **Long chunks** (a megabyte of spaces) start with NumPy rounds on the chunk alone
   while those merge many positions at once, then finish with a heap over a linked
   list, so they cost O(n log n) rather than O(n^2).
5. **Worker processes** for large batches (`encode_in_processes`).

Thread safety: a `FastEncoder` can be shared by threads. The shared cache only ever
gains entries; it is never cleared in place (a full cache is replaced by a new dict,
while calls already running keep the one they started with), and long chunks, which
are not worth their memory, never enter it.
"""

from __future__ import annotations

import heapq
from bisect import bisect_left
from itertools import accumulate, chain

import numpy as np

from .batch_merge import BatchMerger
from .bpe_train import in_batches, pool_context
from .regex_patterns import Splitter

# Chunks longer than this (in bytes) take the long-chunk path; shorter ones the simple
# loop or the batch merge.
LONG_CHUNK = 128
# Long chunks of at least this many bytes first try NumPy rounds (each round has a fixed
# cost of some tens of microseconds, more than a shorter chunk's whole heap merge).
ROUNDS_MIN = 2048
# A round must merge at least this share of the chunk's tokens to beat the heap.
ROUNDS_SHARE = 1 / 64
# From this many new chunks in one call on, they are merged together with NumPy;
# fewer go through the simple loop one by one.
BATCH_MIN = 64
# The batch merge takes at most this many bytes of chunks at a time: its arrays
# (8 bytes per byte of text, several of them) stay a few MB whatever the input.
BATCH_BYTES = 1 << 18
# encode_texts splits its input into groups of about this many characters, and a group
# with more chunks than SLICE_CHUNKS (one long text) is encoded a slice of chunks at a
# time: the sets and dicts of one step stay bounded, whatever the size of the text.
GROUP_CHARS = 4_000_000
SLICE_CHUNKS = 1 << 17
# The chunk cache starts over when it would hold more entries than this.
CACHE_LIMIT = 1 << 18
NO_MERGE = 1 << 62  # the "rank" of a pair that is not a merge


class FastEncoder:
    """Encodes text with a tokenizer's merges: cached, batched, thread-safe."""

    def __init__(self, merges: list[tuple[int, int]], vocab: list[bytes], pattern: str):
        self.merges = merges
        self.n = 256 + len(merges)  # every id below n, so pair (a, b) is the int a * n + b
        self.ranks = {a * self.n + b: r for r, (a, b) in enumerate(merges)}
        self.whole = _whole_tokens(vocab[: self.n])
        self.split = Splitter(pattern)
        self.cache: dict[str, list[int]] = {}
        self._batch: BatchMerger | None = None

    @property
    def batch(self) -> BatchMerger:
        if self._batch is None:  # built on first use (two threads may both build one: harmless)
            self._batch = BatchMerger(self.merges)
        return self._batch

    # ------------------------------------------------------------------ many texts

    def encode_texts(self, texts) -> list[list[int]]:
        """The ids of each text (no special tokens: every character is text)."""
        return [ids for group in in_batches(texts, GROUP_CHARS) for ids in self._encode_group(group)]

    def _encode_group(self, texts: list[str]) -> list[list[int]]:
        split = [self.split(t) for t in texts]
        if sum(map(len, split)) <= SLICE_CHUNKS:
            return self._encode_split(split)
        out = []
        for chunks in split:
            ids: list[int] = []
            for k in range(0, len(chunks), SLICE_CHUNKS):
                ids += self._encode_split([chunks[k : k + SLICE_CHUNKS]])[0]
            out.append(ids)
        return out

    def _encode_split(self, split: list[list[str]]) -> list[list[int]]:
        """The ids of texts given as their chunks: from the cache, new chunks merged."""
        cache = self.cache  # this call uses this dict, even if another thread starts a new one
        distinct = set().union(*split)
        new = distinct.difference(cache)  # most chunks were seen before
        if not new:
            return [list(chain.from_iterable(map(cache.__getitem__, chunks))) for chunks in split]
        fresh = self.encode_chunks(new)
        short = fresh  # what may enter the cache: not the long chunks (rare; not worth their memory)
        if max(map(len, fresh)) > LONG_CHUNK:
            short = {c: ids for c, ids in fresh.items() if len(c) <= LONG_CHUNK}
        if len(cache) + len(short) > CACHE_LIMIT:  # start a new cache with this call's chunks
            old = distinct.difference(new)
            cache = dict(zip(old, map(cache.__getitem__, old)))
            cache.update(short)
            self.cache = cache
        else:
            cache.update(short)
        get = cache.__getitem__
        if len(short) < len(fresh):  # long chunks stay out of the cache (rare: a slower lookup)
            get = lambda c, f=fresh.get, g=get: f(c) or g(c)  # noqa: E731
        return [list(chain.from_iterable(map(get, chunks))) for chunks in split]

    # ------------------------------------------------------------------ many chunks

    def encode_chunks(self, chunks) -> dict[str, list[int]]:
        """{chunk: ids} for distinct chunks (str; surrogate escapes stand for raw bytes)."""
        chunks = list(chunks)
        out = {c: [t] for c, t in zip(chunks, map(self.whole.get, chunks)) if t is not None}
        rest = [c for c in chunks if c not in out]
        raw = [c.encode("utf-8", "surrogateescape") for c in rest]
        if max(map(len, raw), default=0) > LONG_CHUNK:  # rare: take the long chunks out
            out.update((c, self.merge_long(b)) for c, b in zip(rest, raw) if len(b) > LONG_CHUNK)
            rest, raw = [c for c in rest if c not in out], [b for b in raw if len(b) <= LONG_CHUNK]
        if len(rest) < BATCH_MIN:
            out.update((c, self.merge_short(list(b))) for c, b in zip(rest, raw))
            return out
        ends = list(accumulate(map(len, raw)))  # batches of about BATCH_BYTES bytes each
        start = 0
        while start < len(raw):
            stop = bisect_left(ends, (ends[start - 1] if start else 0) + BATCH_BYTES, lo=start) + 1
            out.update(zip(rest[start:stop], self.batch.encode(raw[start:stop])))
            start = stop
        return out

    # ------------------------------------------------------------------ one chunk

    def merge_short(self, ids: list[int]) -> list[int]:
        """`encode_chunk`'s loop, merging one pair at a time and updating only the two
        pairs next to it instead of recomputing all of them."""
        n, rank_of = self.n, self.ranks.get
        ranks = [rank_of(a * n + b, NO_MERGE) for a, b in zip(ids, ids[1:])]
        while ranks:
            r = min(ranks)
            if r == NO_MERGE:
                break
            i = ranks.index(r)  # the leftmost occurrence, as training merged left to right
            ids[i : i + 2] = [256 + r]
            del ranks[i]
            if i > 0:
                ranks[i - 1] = rank_of(ids[i - 1] * n + ids[i], NO_MERGE)
            if i < len(ranks):
                ranks[i] = rank_of(ids[i] * n + ids[i + 1], NO_MERGE)
        return ids

    def merge_long(self, data: bytes) -> list[int]:
        """A long chunk: NumPy rounds while they pay off, then the heap."""
        if len(data) >= ROUNDS_MIN:
            tok = np.frombuffer(data, dtype=np.uint8).astype(np.int64)
            tok, finished = self.batch.merge_rounds(tok, ROUNDS_SHARE)
            return tok.tolist() if finished else self.merge_heap(tok.tolist())
        return self.merge_heap(list(data))

    def merge_heap(self, tok: list[int]) -> list[int]:
        """The same merges with a heap over a linked list: O(n log n) for n tokens.

        The heap holds (rank, position) for every adjacent pair that is a merge.
        Popping the lowest rank, leftmost first, and merging it follows the simple
        loop's rule. An entry is checked when it comes out: its tokens may have been
        merged away meanwhile.
        """
        n, N, ranks, merges = len(tok), self.n, self.ranks, self.merges
        nxt = list(range(1, n + 1))  # n means "no next"
        prv = list(range(-1, n - 1))
        alive = [True] * n
        pair_ranks = map(ranks.get, [a * N + b for a, b in zip(tok, tok[1:])])
        heap = [(r, i) for i, r in enumerate(pair_ranks) if r is not None]
        heapq.heapify(heap)
        while heap:
            r, i = heapq.heappop(heap)
            j = nxt[i] if alive[i] else n
            if j >= n:
                continue
            a, b = merges[r]
            if tok[i] != a or tok[j] != b:
                continue  # stale: this pair changed since the entry was pushed
            tok[i] = 256 + r
            alive[j] = False
            nxt[i] = nxt[j]
            if nxt[j] < n:
                prv[nxt[j]] = i
            # new pairs with the neighbours; their ranks are always > r
            p, k = prv[i], nxt[i]
            if p >= 0 and (rp := ranks.get(tok[p] * N + tok[i])) is not None:
                heapq.heappush(heap, (rp, p))
            if k < n and (rk := ranks.get(tok[i] * N + tok[k])) is not None:
                heapq.heappush(heap, (rk, i))
        return [t for t, keep in zip(tok, alive) if keep]


def _whole_tokens(vocab: list[bytes]) -> dict[str, int]:
    """{chunk text: id} for chunks whose bytes are exactly one token.

    Such a chunk encodes to that token: the merges that built the token happened inside
    its bytes, never across their edges (a merge across an edge would have consumed an
    edge byte), so the same merges rebuild it in isolation. Bytes that two tokens share
    (never seen from our trainer) are left to the merge loop. Keyed by the chunk as text:
    "surrogateescape" turns any bytes into a str and back unchanged.
    """
    whole: dict[str, int] = {}
    shared = set()
    for i, piece in enumerate(vocab):
        key = piece.decode("utf-8", "surrogateescape")
        if key in whole:
            shared.add(key)
        whole[key] = i
    for key in shared:
        del whole[key]
    return whole


# ---------------------------------------------------------------- worker processes

_worker_tok = None


def encode_in_processes(tok, texts: list[str], workers: int, kwargs: dict) -> list[list[int]]:
    """`tok.encode_batch(texts, **kwargs)` spread over a pool: contiguous slices of about
    equal size, one or two per worker, each encoded with `workers=1`."""
    n_jobs, slices, acc, start, total = min(len(texts), 2 * workers), [], 0, 0, sum(map(len, texts))
    for i, t in enumerate(texts):
        acc += len(t)
        if acc >= total / n_jobs * (len(slices) + 1) or i == len(texts) - 1:
            slices.append(texts[start : i + 1])
            start = i + 1
    with pool_context().Pool(workers, initializer=_init_worker, initargs=(tok,)) as pool:
        parts = pool.map(_encode_slice, [(texts, kwargs) for texts in slices])
    return [ids for part in parts for ids in part]


def _init_worker(tok) -> None:
    global _worker_tok
    _worker_tok = tok


def _encode_slice(args) -> list[list[int]]:
    texts, kwargs = args
    return _worker_tok.encode_batch(texts, workers=1, **kwargs)
