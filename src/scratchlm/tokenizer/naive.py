"""The textbook BPE training loop: the lesson, and the fast trainer's test oracle.

Byte-pair encoding in five lines:

    start with every chunk as its list of bytes (ids 0..255);
    repeat:
        count every adjacent pair of ids in the corpus;
        take the most frequent pair (a, b);
        give it a new id and replace (a, b) by it everywhere.

Every iteration reads the whole corpus again, so the cost is
(number of merges) x (corpus size): on 1 MB of text a 4k vocabulary takes over an
hour. `bpe_train.learn_merges` learns the same merges in seconds by updating
counts instead of recounting; the tests check the two agree merge for merge.

Ties between equally frequent pairs are broken exactly as in the fast trainer
(`bpe_train.tie_key`), otherwise the two could not be compared.
"""

from __future__ import annotations

from collections.abc import Iterable

import regex

from .bpe_train import chunk_bytes, tie_key
from .regex_patterns import resolve_pattern


def get_stats(chunks: list[list[int]]) -> dict[tuple[int, int], int]:
    """How often each adjacent pair occurs. Overlaps count: "aaa" holds (a, a) twice."""
    counts: dict[tuple[int, int], int] = {}
    for ids in chunks:
        for pair in zip(ids, ids[1:]):
            counts[pair] = counts.get(pair, 0) + 1
    return counts


def merge(ids: list[int], pair: tuple[int, int], new_id: int) -> list[int]:
    """Replace every occurrence of `pair` by `new_id`, scanning left to right ("aaa" -> [Z, a])."""
    out, i = [], 0
    while i < len(ids):
        if i + 1 < len(ids) and ids[i] == pair[0] and ids[i + 1] == pair[1]:
            out.append(new_id)
            i += 2
        else:
            out.append(ids[i])
            i += 1
    return out


def train_naive(data: str | Iterable[str], num_merges: int, pattern: str = "gpt4") -> list[tuple[int, int]]:
    """Learn up to `num_merges` merges the slow, obvious way. Merge i creates id 256 + i."""
    pat = regex.compile(resolve_pattern(pattern))
    docs = [data] if isinstance(data, str) else list(data)
    chunks = [list(chunk_bytes(c)) for doc in docs for c in pat.findall(doc)]
    merges: list[tuple[int, int]] = []
    for i in range(num_merges):
        stats = get_stats(chunks)
        if not stats:
            break  # everything is merged into single tokens
        # most frequent first; among equals, the smallest tie key
        best = min(stats, key=lambda p: (-stats[p], tie_key(*p)))
        chunks = [merge(ids, best, 256 + i) for ids in chunks]
        merges.append(best)
    return merges
