"""Apply the merges to thousands of chunks at once, with NumPy.

`BPETokenizer._encode_chunk` (in bpe.py) is the readable version: per chunk, find the
lowest-ranked pair, merge its leftmost occurrence, repeat. Each merge costs a few
microseconds of Python, and a fresh text has thousands of new chunks, so encoding
cold text spends most of its time there. This file does the same merges for all new
chunks together, one *round* at a time, each step a NumPy operation over every
position of every chunk still being merged:

1. look up the rank of every adjacent pair (a binary search in the sorted merge keys);
2. take each chunk's lowest rank: the pair the simple loop would merge next;
3. merge *every* occurrence of that pair in the chunk, left to right.

Step 3 does in one round what the loop does in several, and gives the same result:
merging (a, b) into c creates only pairs that contain c, and every merge that uses c
was learned after c, so (a, b) stays the lowest rank until all its occurrences are
gone. Overlaps only happen for a pair (a, a) in a run "a a a ...": left to right
merges the 1st and 2nd, then the 3rd and 4th, and so on, which is what the loop
does. Chunks with no pair left drop out, so the rounds get cheaper as they go.

The same rounds also start the work on one very long chunk (a megabyte of spaces or
of "ab"): there a round merges thousands of positions at once (`merge_rounds`), and
once rounds stop paying off, the heap in fast.py finishes the chunk.

tests/test_tokenizer_bpe.py checks it against the simple loop on random merges and text.
"""

from __future__ import annotations

import numpy as np

NO_MERGE = np.iinfo(np.int64).max


class BatchMerger:
    """The merges of a tokenizer as sorted arrays, ready to encode many chunks per call."""

    def __init__(self, merges: list[tuple[int, int]]):
        self.n = 256 + len(merges)  # every token id is below n, so pair (a, b) is the integer a * n + b
        pairs = np.array(merges, dtype=np.int64).reshape(-1, 2)
        keys = pairs[:, 0] * self.n + pairs[:, 1]
        order = np.argsort(keys, kind="stable")
        keys = keys[order]
        # a pair listed twice (only in a hand-made list) keeps its last rank, like a dict would
        last = np.append(keys[1:] != keys[:-1], True)[: len(keys)]
        self.keys, self.ranks = keys[last], order[last]

    def pair_ranks(self, left: np.ndarray, right: np.ndarray) -> np.ndarray:
        """Rank of each pair (left[i], right[i]); NO_MERGE where it is not a merge."""
        if not len(self.keys):
            return np.full(len(left), NO_MERGE, dtype=np.int64)
        key = left * self.n + right
        at = np.searchsorted(self.keys, key).clip(max=len(self.keys) - 1)
        return np.where(self.keys[at] == key, self.ranks[at], NO_MERGE)

    def encode(self, chunks: list[bytes]) -> list[list[int]]:
        """Token ids of each chunk (given as its non-empty bytes)."""
        if not chunks:
            return []
        lengths = np.fromiter(map(len, chunks), dtype=np.int64, count=len(chunks))
        tok = np.frombuffer(b"".join(chunks), dtype=np.uint8).astype(np.int64)  # every chunk, end to end
        owner = np.repeat(np.arange(len(chunks)), lengths)  # which chunk each position belongs to
        last = np.zeros(len(tok), dtype=bool)  # the last position of its chunk: no pair starts there
        last[np.cumsum(lengths) - 1] = True
        rank = self._ranks_at(tok, last, np.arange(len(tok)))  # rank of the pair starting at each position
        done_tok, done_owner = [], []
        while len(tok):
            # each chunk's lowest rank (a chunk's positions are contiguous)
            starts = np.concatenate(([0], np.flatnonzero(last[:-1]) + 1))
            size = np.diff(np.append(starts, len(tok)))
            best = np.minimum.reduceat(rank, starts)
            finished = best == NO_MERGE
            if finished.any():  # nothing left to merge: these chunks leave the batch
                leaving = np.repeat(finished, size)
                done_tok.append(tok[leaving])
                done_owner.append(owner[leaving])
                stay = ~leaving
                tok, owner, last, rank = tok[stay], owner[stay], last[stay], rank[stay]
                best, size = best[~finished], size[~finished]
            # merge every occurrence of the chunk's best pair, left to right
            hit = rank == np.repeat(best, size)
            if (hit[1:] & hit[:-1]).any():  # a run "a a a ...": keep the 1st, 3rd, 5th... hit
                idx = np.arange(len(tok))
                run_start = np.maximum.accumulate(np.where(hit & ~np.concatenate(([False], hit[:-1])), idx, 0))
                hit &= (idx - run_start) % 2 == 0
            at = np.flatnonzero(hit)
            tok[at] = 256 + rank[at]  # the merged token takes the left place...
            last[at] = last[at + 1]
            keep = np.ones(len(tok), dtype=bool)
            keep[at + 1] = False  # ...and its right half goes
            tok, owner, last, rank = tok[keep], owner[keep], last[keep], rank[keep]
            # only the pairs on either side of a merged token changed
            at -= np.arange(len(at))  # where the merged tokens are now
            left = at[at > 0] - 1
            left = left[~last[left]]
            changed = np.concatenate((at, left))
            rank[changed] = self._ranks_at(tok, last, changed)
        tok, owner = np.concatenate(done_tok), np.concatenate(done_owner)
        order = np.argsort(owner, kind="stable")  # back in chunk order, positions in order
        flat = tok[order].tolist()
        ends = np.cumsum(np.bincount(owner, minlength=len(chunks))).tolist()
        return [flat[a:b] for a, b in zip([0] + ends[:-1], ends)]

    def merge_rounds(self, tok: np.ndarray, min_share: float) -> tuple[np.ndarray, bool]:
        """Rounds on ONE chunk (token ids as int64) while each merges at least `min_share`
        of its tokens. Returns the tokens reached, a state the simple loop also passes
        through, so any exact merger can finish from there, and whether no merge is left.

        A round costs a pass over the whole chunk, a heap merge a few microseconds: a
        round that merges few positions is cheaper done by the heap.
        """
        last = np.zeros(len(tok), dtype=bool)
        last[-1:] = True
        rank = self._ranks_at(tok, last, np.arange(len(tok)))
        while len(tok) > 1:
            best = rank.min()
            if best == NO_MERGE:
                break
            hit = rank == best
            if (hit[1:] & hit[:-1]).any():  # a run "a a a ...": keep the 1st, 3rd, 5th... hit
                idx = np.arange(len(tok))
                run_start = np.maximum.accumulate(np.where(hit & ~np.concatenate(([False], hit[:-1])), idx, 0))
                hit &= (idx - run_start) % 2 == 0
            at = np.flatnonzero(hit)
            if len(at) < min_share * len(tok):
                return tok, False
            tok[at] = 256 + best
            keep = np.ones(len(tok), dtype=bool)
            keep[at + 1] = False
            tok, last, rank = tok[keep], last[keep], rank[keep]
            last[-1] = True
            at -= np.arange(len(at))
            changed = np.concatenate((at, at[at > 0] - 1))
            rank[changed] = self._ranks_at(tok, last, changed)
        return tok, True

    def _ranks_at(self, tok: np.ndarray, last: np.ndarray, at: np.ndarray) -> np.ndarray:
        """Rank of the pair starting at each position in `at` (NO_MERGE at a chunk's end)."""
        out = np.full(len(at), NO_MERGE, dtype=np.int64)
        inner = ~last[at]
        i = at[inner]
        out[inner] = self.pair_ranks(tok[i], tok[i + 1])
        return out
