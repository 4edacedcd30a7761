"""Training byte-level BPE fast, in pure Python.

The textbook loop (see `naive.py`) recounts every pair in the whole corpus after
every merge. It is easy to read and hopeless on real data. This trainer learns the
*same* merges, in the same order, with four ideas:

1. **Count identical chunks once.** After the regex split, Shakespeare's 1.1 million
   chunks are only ~35 thousand distinct strings. We train on (chunk, count) and
   weight everything by the count.
2. **Keep pair counts up to date instead of recounting.** Merging (A, B) -> Z only
   changes the pairs right next to each occurrence: (x, A) becomes (x, Z) and
   (B, y) becomes (Z, y). We apply exactly those deltas.
3. **Index each pair to the chunks that hold it,** so a merge visits only those
   chunks, not all of them.
4. **Pick the best pair from a max-heap with lazy invalidation.** Counts change all
   the time; instead of fixing the heap we check an entry when it comes out: if its
   count is stale we push it back with the true count. New pairs are pushed fresh.

Two implementation tricks keep Python fast:

* A chunk is stored as a `str` whose characters are token ids (`chr(id)`). Bytes are
  ids 0..255 (so `bytes.decode("latin-1")` converts a chunk in C), merged tokens get
  ids 256, 257, ... Merging a pair everywhere in a chunk is then `str.replace`, which
  scans left to right without overlaps, exactly the BPE rule ("aaa" -> "Za").
* A pair is the 2-character string `chr(a) + chr(b)`, a cheap dictionary key.

Ties. When two pairs have the same count we take the one whose (left, right) ids
come first, comparing merged tokens by id and byte tokens in the order of GPT-2's
printable byte alphabet (`bytes_to_unicode`: the printable bytes "!".."~", "¡".."¬",
"®".."ÿ" by value, then the others). That is the order the Hugging Face trainer
uses, so our merges can be checked against it one for one; any fixed total order
would make training deterministic, this one also makes it comparable. Nothing here
depends on hash order or on the number of processes, so the same corpus gives the
same merges on every machine.
"""

from __future__ import annotations

import heapq
import multiprocessing as mp
import os
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable
from operator import add

from ..errors import ScratchLMError
from .regex_patterns import Splitter, split_for_workers


# --------------------------------------------------------------------------- bytes


def bytes_to_unicode() -> dict[int, str]:
    """GPT-2's reversible map from the 256 bytes to printable characters.

    Printable bytes map to themselves; the others (space, control bytes, ...) are
    shifted to 256 + n, so a space shows as 'Ġ'. Hugging Face's byte-level
    tokenizers store tokens in this alphabet; we use it for exports and tie-breaks.
    """
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    chars, n = list(printable), 0
    for b in range(256):
        if b not in printable:
            printable.append(b)
            chars.append(256 + n)
            n += 1
    return {b: chr(c) for b, c in zip(printable, chars)}


_B2U = bytes_to_unicode()
# BYTE_ORDER[b] is the position of byte b when bytes are sorted by their GPT-2 character.
BYTE_ORDER = [0] * 256
for _pos, _b in enumerate(sorted(range(256), key=lambda b: _B2U[b])):
    BYTE_ORDER[_b] = _pos


def chunk_bytes(chunk: str) -> bytes:
    """The UTF-8 bytes of a chunk. Surrogate escapes (from `bytes.decode(..., "surrogateescape")`,
    which is how `encode_bytes` carries invalid UTF-8 through the regex) turn back into
    the raw bytes they stand for. Other lone surrogates are refused before this point."""
    return chunk.encode("utf-8", "surrogateescape")


def tie_key(a: int, b: int) -> tuple[int, int]:
    """Smaller key wins a tie between pairs of equal count (see the module docstring)."""
    return (BYTE_ORDER[a] if a < 256 else a, BYTE_ORDER[b] if b < 256 else b)


# ------------------------------------------------------------------ chunk counting


def _count_piece(args) -> Counter:
    """Worker: split some text (or a batch of documents) and count the chunks."""
    pattern, texts = args
    split = Splitter(pattern)
    counts: Counter = Counter()
    for t in texts:
        counts.update(split(t))
    return counts


def in_batches(docs: Iterable[str], target_chars: int):
    batch, size = [], 0
    for d in docs:
        batch.append(d)
        size += len(d)
        if size >= target_chars:
            yield batch
            batch, size = [], 0
    if batch:
        yield batch


# Below this many characters, starting processes costs more than it saves.
PARALLEL_MIN_CHARS = 2_000_000


def default_workers() -> int:
    return max(1, min(8, os.cpu_count() or 1))


def count_chunks(
    data: str | Iterable[str], pattern: str, workers: int | None = None, on_doc: Callable | None = None,
    progress: bool = False,
) -> Counter:
    """Split the corpus with `pattern` and count how often each distinct chunk occurs.

    `data` is one string or an iterable of documents (chunks never span documents).
    `on_doc(text)` sees every document as it goes by (used to hash the corpus).
    With several workers, a long string is cut at safe places (see
    `regex_patterns.split_for_workers`) and documents are sent in batches; the counts
    are identical to a single-process run. `progress` shows a bar of finished parts
    when the input is large enough to be counted in processes.
    """
    workers = default_workers() if workers is None else max(1, int(workers))
    if isinstance(data, str):
        if on_doc:
            on_doc(data)
        if workers == 1 or len(data) < PARALLEL_MIN_CHARS:
            return _count_piece((pattern, [data]))
        pieces = split_for_workers(data, pattern, workers)
        jobs = [(pattern, [p]) for p in pieces]
    else:
        docs = (on_doc(d) or d for d in data) if on_doc else iter(data)
        if workers == 1:
            return _count_piece((pattern, docs))
        jobs = ((pattern, batch) for batch in in_batches(docs, 1_000_000))
        first = next(jobs, None)
        if first is None:
            return Counter()
        second = next(jobs, None)
        if second is None:  # a small corpus: not worth a process pool
            return _count_piece(first)
        jobs = _chain(first, second, jobs)
    total: Counter = Counter()
    bar = _progress_bar(progress, len(jobs) if isinstance(jobs, list) else None, "bpe counting", "part")
    with pool_context().Pool(workers) as pool:
        for counts in pool.imap_unordered(_count_piece, jobs):
            total.update(counts)  # addition commutes: arrival order does not matter
            bar.update(1)
    bar.close()
    return total


def _progress_bar(on: bool, total: int | None, desc: str, unit: str):
    """A tqdm bar on stderr (a silent no-op bar when progress is off)."""
    from tqdm import tqdm  # deferred: only training with a progress bar needs it

    return tqdm(total=total, desc=desc, unit=unit, disable=not on)


def pool_context():
    """Processes for workers (see the comment below for why "fork")."""
    # "fork" where the OS has it: workers start in milliseconds and, unlike "spawn",
    # do not re-import the caller's script (a script without an `if __name__ ==
    # "__main__"` guard would otherwise start training again in every worker). The
    # workers only run the regex and a Counter, so threads the parent may hold
    # (torch's) are never touched in the child.
    methods = mp.get_all_start_methods()
    return mp.get_context("fork" if "fork" in methods else "spawn")


def _chain(*parts):
    yield parts[0]
    yield parts[1]
    yield from parts[2]


# ----------------------------------------------------------------------- merging


def learn_merges(chunk_counts: dict[str, int], num_merges: int, progress: bool = False) -> list[tuple[int, int]]:
    """Learn up to `num_merges` merges from {chunk: count}. Merge i creates id 256 + i.

    Returns the list of merged pairs (left id, right id) in the order learned. Stops
    early when no pair occurs any more (the corpus is fully merged).
    """
    # Chunks as id-strings; a 1-byte chunk has no pairs and can never change.
    words: list[str] = []
    counts: list[int] = []
    for chunk, c in chunk_counts.items():
        w = chunk_bytes(chunk).decode("latin-1")
        if len(w) > 1:
            words.append(w)
            counts.append(c)

    pair_counts: defaultdict[str, int] = defaultdict(int)  # pair -> occurrences, weighted by chunk count
    where: defaultdict[str, set[int]] = defaultdict(set)  # pair -> chunks that (may) hold it
    for wi, w in enumerate(words):
        c = counts[wi]
        for p in map(add, w, w[1:]):
            pair_counts[p] += c
            where[p].add(wi)

    def entry(p: str) -> tuple:
        a, b = ord(p[0]), ord(p[1])
        return (-pair_counts[p], BYTE_ORDER[a] if a < 256 else a, BYTE_ORDER[b] if b < 256 else b, p)

    heap = [entry(p) for p in pair_counts]
    heapq.heapify(heap)

    bar = _progress_bar(progress, num_merges, "bpe merges", "merge")

    merges: list[tuple[int, int]] = []
    while len(merges) < num_merges and heap:
        neg, ka, kb, p = heapq.heappop(heap)
        count = pair_counts.get(p, 0)
        if count <= 0:
            continue  # merged already, or vanished
        if count != -neg:  # stale entry: put it back with its true count
            heapq.heappush(heap, (-count, ka, kb, p))
            continue

        z = chr(256 + len(merges))
        merges.append((ord(p[0]), ord(p[1])))
        A, B = p
        del pair_counts[p]  # every occurrence of p is about to disappear
        fresh: set[str] = set()  # pairs that gained occurrences (they contain z)

        for wi in where.pop(p):
            w = words[wi]
            nw = w.replace(p, z)
            if len(nw) == len(w):
                continue  # the index was stale: p left this chunk in an earlier merge
            words[wi] = nw
            c = counts[wi]
            last = len(nw) - 1
            j = nw.find(z)
            while j != -1:
                if j > 0:  # left neighbour x: (x, A) -> (x, z); between two z's, (B, A) -> (z, z)
                    x = nw[j - 1]
                    old = B + A if x == z else x + A
                    if old != p:
                        pair_counts[old] -= c
                    q = x + z
                    pair_counts[q] += c
                    where[q].add(wi)
                    fresh.add(q)
                if j < last:  # right neighbour y: (B, y) -> (z, y); a z on the right is its own left
                    y = nw[j + 1]
                    if y != z:
                        old = B + y
                        if old != p:
                            pair_counts[old] -= c
                        q = z + y
                        pair_counts[q] += c
                        where[q].add(wi)
                        fresh.add(q)
                j = nw.find(z, j + 1)

        for q in fresh:
            heapq.heappush(heap, entry(q))
        bar.update(1)
    bar.close()
    return merges


# ------------------------------------------------------------------- training input


def as_documents(data):
    """A str stays one text; a Path is read; an iterable yields documents (Paths read lazily)."""
    if isinstance(data, str):
        return data
    if isinstance(data, os.PathLike):
        return read_text_file(data)
    if isinstance(data, (bytes, bytearray)):
        raise ScratchLMError("train on text (str), a Path, or an iterable of documents, not bytes")
    return (read_text_file(d) if isinstance(d, os.PathLike) else d for d in data)


def read_text_file(path: str | os.PathLike) -> str:
    """A UTF-8 file exactly as it is: newline="" keeps "\\r\\n" (a tokenizer must see it)."""
    try:
        with open(path, encoding="utf-8", newline="") as f:
            return f.read()
    except FileNotFoundError:
        raise ScratchLMError(f"data file not found: {path}") from None
    except IsADirectoryError:
        raise ScratchLMError(f"{path} is a directory; give a UTF-8 text file") from None
    except UnicodeDecodeError as e:
        raise ScratchLMError(f"{path} is not UTF-8 text ({e})") from None
    except OSError as e:
        raise ScratchLMError(f"cannot read {path}: {e.strerror or e}") from None
