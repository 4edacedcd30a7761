"""Byte-level BPE: training (fast == textbook), encoding, special tokens, save/load, CLI."""

from __future__ import annotations

import itertools
import json
import os
import random
import re
import subprocess
import sys

import numpy as np
import pytest
import regex
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import scratchlm.tokenizer.bpe as bpe_module
import scratchlm.tokenizer.bpe_train as bpe_train
import scratchlm.tokenizer.fast as fast_module
import scratchlm.tokenizer.regex_patterns as regex_patterns
from scratchlm.errors import ScratchLMError
from scratchlm.tokenizer import load_tokenizer, save_tokenizer, tokenizer_hash
from scratchlm.tokenizer.batch_merge import BatchMerger
from scratchlm.tokenizer.bpe import BPETokenizer, DisallowedSpecialTokenError, StreamDecoder
from scratchlm.tokenizer.bpe_train import count_chunks, learn_merges
from scratchlm.tokenizer.fast import FastEncoder
from scratchlm.tokenizer.naive import train_naive
from scratchlm.tokenizer.regex_patterns import ASCII_PATTERNS, GPT2_PATTERN, GPT4_PATTERN, Splitter, split_for_workers

# A small corpus with the things that break tokenizers: several scripts, emoji
# (4-byte characters, ZWJ sequences), combining marks, CRLF, tabs, runs of spaces,
# digits, a NUL byte, code.
MIXED = (
    "FIRST CITIZEN:\nBefore we proceed any further, hear me speak.\r\n\r\n"
    "ALL:\n\tSpeak, speak.   Speak!!\n\n"
    "def f(x):\n    return x ** 2  # square\n\n"
    "東京は日本の首都です。北京是中国的首都。\n"
    "naïve café — e\u0301 a\u0308 Å résumé\n"
    "emoji 🤖🤖 👩‍👩‍👧 🇫🇷 ok\n"
    "numbers 2024 3.14159 1,000,000\n"
    "nul\x00byte and trailing spaces   \n"
    "Привет, мир! مرحبا بالعالم\n"
)
CORPUS = MIXED * 30


@pytest.fixture(scope="module")
def tok() -> BPETokenizer:
    return BPETokenizer.train(CORPUS, vocab_size=450, special_tokens=("<|endoftext|>", "<|pad|>"))


# ------------------------------------------------------------------ known example


def test_aaabdaaabac_wikipedia_example():
    # aa -> Z, ab -> Y, ZY -> X: "aaabdaaabac" becomes X d X a c
    t = BPETokenizer.train("aaabdaaabac", vocab_size=256 + 3, special_tokens=())
    assert t.merges == [(97, 97), (97, 98), (256, 257)]
    assert [t.token_bytes(i) for i in (256, 257, 258)] == [b"aa", b"ab", b"aaab"]
    assert t.encode("aaabdaaabac") == [258, ord("d"), 258, ord("a"), ord("c")]
    assert t.decode([258, 100]) == "aaabd"
    assert t.vocab_size == 259


def test_vocab_size_counts_bytes_merges_and_specials(tok):
    assert tok.vocab_size == 450 == 256 + len(tok.merges) + 2
    assert tok.special_tokens == {"<|endoftext|>": 448, "<|pad|>": 449}
    assert tok.type == "bpe"


def test_small_corpus_runs_out_of_merges():
    t = BPETokenizer.train("ab ab", vocab_size=1000, special_tokens=())
    # chunks "ab", " ab": merges (a,b) then (" ", ab) and nothing is left to merge
    assert t.merges == [(97, 98), (32, 256)]
    assert t.vocab_size == 258


def test_vocab_too_small_is_a_clear_error():
    with pytest.raises(ScratchLMError, match="too small"):
        BPETokenizer.train("hello", vocab_size=200)


def test_bad_pattern_is_a_clear_error():
    with pytest.raises(ScratchLMError, match="not a valid regex"):
        BPETokenizer.train("hello", vocab_size=300, pattern="([")


# ------------------------------------------------------------ the fast ASCII split

SPLIT_UNITS = ["'s", "'LL", "'Ve", " ", "  ", "\n", "\r\n", "\n\n", "\t", "\x0b", "\x1c", "ab", "Z", "123", "4567",
               "!?", "_x", "(", ".\n", "é", "🤖", "东京", "e\u0301", "\u00a0", "\u2028", "²"]


@pytest.mark.parametrize("pattern", [GPT4_PATTERN, GPT2_PATTERN])
def test_ascii_split_equals_regex_on_every_short_ascii_string(pattern):
    full, fast = regex.compile(pattern).findall, re.compile(ASCII_PATTERNS[pattern], re.ASCII).findall
    every = [chr(i) for i in range(128)]
    for n, alphabet in ((1, every), (2, every), (3, "aZ09 \t\n\r\x0b\x0c\x1c\x1f'sSlLdD!_.\x00\x7f"), (4, "a0 \n'!sL\r")):
        for t in itertools.product(alphabet, repeat=n):
            assert fast("".join(t)) == full("".join(t)), repr("".join(t))


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.one_of(st.text(st.characters(max_codepoint=127), max_size=200), st.lists(st.sampled_from(SPLIT_UNITS), max_size=80).map("".join)))
def test_splitter_equals_regex(text):
    # ASCII text takes `re`; other text `regex`, or pieces of each when it is long
    old = regex_patterns.ASCII_PIECE
    try:
        regex_patterns.ASCII_PIECE = 8  # so short texts are cut into pieces too
        for pattern in (GPT4_PATTERN, GPT2_PATTERN):
            assert Splitter(pattern)(text) == regex.findall(pattern, text)
    finally:
        regex_patterns.ASCII_PIECE = old


def test_mostly_ascii_text_is_split_in_pieces():
    text = ("def f(x):\n    return x  # naïve\n" + "class A:\n    pass\n" * 300) * 5
    for pattern in (GPT4_PATTERN, GPT2_PATTERN):
        pieces = split_for_workers(text, pattern, len(text) // regex_patterns.ASCII_PIECE)
        assert len(pieces) > 3 and sum(p.isascii() for p in pieces) >= len(pieces) - 5
        assert Splitter(pattern)(text) == regex.findall(pattern, text)


# --------------------------------------------------------------- fast == textbook

SMALL_CORPORA = [
    "aaabdaaabac",
    "a" * 50 + " " + "aa " * 20 + "aaa aaaa",
    MIXED,
    "the cat sat on the mat; the rat ate the cat's hat\n" * 5,
    "".join(random.Random(0).choice("ab \n") for _ in range(2000)),
    "def f(x):\n\treturn x\r\n\r\n    \t \n" * 10 + "1234567 89 00000",
]


@pytest.mark.parametrize("pattern", ["gpt4", "gpt2", r"\S+|\s+"])
@pytest.mark.parametrize("corpus", range(len(SMALL_CORPORA)))
def test_fast_trainer_matches_naive_merge_for_merge(corpus, pattern):
    text = SMALL_CORPORA[corpus]
    naive = train_naive(text, 150, pattern=pattern)
    fast = BPETokenizer.train(text, vocab_size=256 + 150, pattern=pattern, special_tokens=()).merges
    assert len(fast) > 5
    assert fast == naive


@settings(max_examples=40, deadline=None)
@given(st.text(alphabet=st.sampled_from("aab c\n\t"), max_size=300), st.integers(1, 60))
def test_fast_trainer_matches_naive_on_random_corpora(text, n):
    counts = count_chunks(text, GPT4_PATTERN, workers=1)
    assert learn_merges(counts, n) == train_naive(text, n)


def test_documents_never_merge_across_boundaries():
    docs = ["ab", "ab", "ab"]
    joined = BPETokenizer.train("ababab", vocab_size=260, pattern=r".+", special_tokens=())
    separate = BPETokenizer.train(docs, vocab_size=260, pattern=r".+", special_tokens=())
    assert separate.merges == [(97, 98)]  # nothing to merge after "ab"
    assert len(joined.merges) > 1  # "ab"+"ab" merges too when it is one chunk


def test_training_is_deterministic_across_runs(tok):
    again = BPETokenizer.train(CORPUS, vocab_size=450, special_tokens=("<|endoftext|>", "<|pad|>"))
    assert again.merges == tok.merges
    assert tokenizer_hash(again) == tokenizer_hash(tok)


def test_training_is_deterministic_across_processes(tok):
    # Another interpreter, with other hash seeds (so other dict and set orders),
    # must learn the same merges.
    src = (
        "import json, sys\n"
        "from scratchlm.tokenizer.bpe import BPETokenizer\n"
        "corpus = json.loads(sys.stdin.read())\n"
        "t = BPETokenizer.train(corpus, vocab_size=450, special_tokens=('<|endoftext|>', '<|pad|>'), workers=1)\n"
        "print(json.dumps(t.merges))\n"
    )
    for seed in ("1", "12345"):
        out = subprocess.run(
            [sys.executable, "-c", src], input=json.dumps(CORPUS), capture_output=True, text=True, check=True,
            env={**os.environ, "PYTHONHASHSEED": seed},
        )
        assert [tuple(m) for m in json.loads(out.stdout)] == tok.merges


def test_parallel_counting_equals_serial(monkeypatch):
    text = (MIXED + "word\nNext line\n  indented\nX\n") * 200
    monkeypatch.setattr(bpe_train, "PARALLEL_MIN_CHARS", 1000)
    for pattern in (GPT4_PATTERN, GPT2_PATTERN):
        pieces = split_for_workers(text, pattern, 7)
        assert len(pieces) > 3 and "".join(pieces) == text
        serial = count_chunks(text, pattern, workers=1)
        assert count_chunks(text, pattern, workers=2) == serial
    docs = [MIXED[i:] for i in range(0, 400, 7)] * 40
    orig = bpe_train.in_batches
    monkeypatch.setattr(bpe_train, "in_batches", lambda d, n: orig(d, 2000))  # many small batches
    assert count_chunks(docs, GPT4_PATTERN, workers=2) == count_chunks(docs, GPT4_PATTERN, workers=1)


def test_parallel_training_equals_serial(monkeypatch):
    # Lower the thresholds so a small corpus takes the process-pool path, and check
    # that it did (a pool was made) and learned the very same merges.
    text = (MIXED + "word\nNext line\n  indented\nX\n") * 100
    docs = [MIXED[i:] for i in range(0, 400, 7)] * 20
    serial = [BPETokenizer.train(d, vocab_size=500, workers=1).merges for d in (text, docs)]
    pools = []
    orig_pool, orig_batches = bpe_train.pool_context, bpe_train.in_batches
    monkeypatch.setattr(bpe_train, "pool_context", lambda: pools.append(1) or orig_pool())
    monkeypatch.setattr(bpe_train, "PARALLEL_MIN_CHARS", 1000)
    monkeypatch.setattr(bpe_train, "in_batches", lambda d, n: orig_batches(d, 5000))
    parallel = [BPETokenizer.train(d, vocab_size=500, workers=2).merges for d in (text, docs)]
    assert len(pools) == 2
    assert parallel == serial and len(serial[0]) > 100


def test_train_accepts_paths_and_iterables(tmp_path):
    p = tmp_path / "c.txt"
    p.write_bytes(CORPUS.encode("utf-8"))  # "\r\n" must survive reading
    from_path = BPETokenizer.train(p, vocab_size=400)
    from_str = BPETokenizer.train(CORPUS, vocab_size=400)
    from_iter = BPETokenizer.train(iter([CORPUS]), vocab_size=400)
    assert from_path.merges == from_str.merges == from_iter.merges
    assert from_path.meta["corpus_sha256"] == from_iter.meta["corpus_sha256"]
    # an iterable of Paths: each file is one document, read lazily
    docs = [MIXED, "the cat sat\r\n" * 50, CORPUS]
    paths = [tmp_path / f"doc{i}.txt" for i in range(len(docs))]
    for path, doc in zip(paths, docs):
        path.write_bytes(doc.encode("utf-8"))
    from_paths = BPETokenizer.train(iter(paths), vocab_size=400)
    from_docs = BPETokenizer.train(docs, vocab_size=400)
    assert from_paths.merges == from_docs.merges
    assert from_paths.meta["corpus_sha256"] == from_docs.meta["corpus_sha256"]


def test_progress_bars_go_to_stderr(monkeypatch, capsys):
    counts = count_chunks(CORPUS, GPT4_PATTERN, workers=1)
    assert learn_merges(counts, 20, progress=True) == learn_merges(counts, 20)
    err = capsys.readouterr().err
    assert "bpe merges" in err and "20/20" in err
    # counting shows a bar too when it runs in processes (large inputs)
    monkeypatch.setattr(bpe_train, "PARALLEL_MIN_CHARS", 1000)
    assert count_chunks(CORPUS, GPT4_PATTERN, workers=2, progress=True) == counts
    assert "bpe counting" in capsys.readouterr().err


# ------------------------------------------------------------------ round trips

FRAGMENTS = [
    "🤖", "👩‍👩‍👧", "🇫🇷", "東京", "中文字符", "e\u0301", "a\u0308\u0323", "\r\n", "\t", "\x00",
    "   ", " ", "\n\n", "Hello", " world", "'s", "'LL", "2024", "3.14", "<|endoftext|>", "\u200b", "\ufeff",
]

texty = st.lists(st.one_of(st.sampled_from(FRAGMENTS), st.text(max_size=20)), max_size=30).map("".join)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(texty)
def test_round_trip_arbitrary_text(tok, text):
    ids = tok.encode(text, disallowed_special=())
    assert tok.decode(ids) == text
    assert all(0 <= i < 448 for i in ids)  # ordinary text never yields a special id


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=200))
def test_round_trip_arbitrary_bytes(tok, data):
    assert tok.decode_bytes(tok.encode_bytes(data)) == data


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(["a", " ", "\n", "\t", "🤖", "é", "ab", "  \n", "0"]), st.integers(1, 3000))
def test_round_trip_long_runs(tok, unit, n):
    text = unit * n
    assert tok.decode(tok.encode(text)) == text


def test_very_long_run_is_not_quadratic(tok, monkeypatch):
    import time

    # Spy on the long-chunk path: it must take every chunk longer than LONG_CHUNK bytes,
    # and only those.
    seen = []
    long_path = FastEncoder.merge_long
    monkeypatch.setattr(FastEncoder, "merge_long", lambda self, b: seen.append(len(b)) or long_path(self, b))
    for unit in (" ", "a", "=", "\n", "🤖"):
        text = unit * (100_000 // len(unit.encode()))  # 100 kB
        seen.clear()
        t0 = time.perf_counter()
        ids = tok.encode(text)
        assert time.perf_counter() - t0 < 5.0
        assert tok.decode(ids) == text
        assert seen and all(n > fast_module.LONG_CHUNK for n in seen)
        assert len(ids) < len(text.encode()) or unit in "a="  # spaces, newlines and emoji have merges in CORPUS
    seen.clear()
    tok.encode(MIXED, disallowed_special=())
    assert seen == []  # ordinary text: short chunks
    # On a long run, the long path (rounds, then heap) gives what the readable loop gives.
    for unit in (" ", "\n", "🤖", " \n"):
        data = (unit * 5000).encode()
        assert tok._fast.merge_long(data) == tok.encode_chunk(data)


HEAP_ALPHABET = "aabbc  \n\té🤖"


@pytest.fixture(scope="module")
def heap_tok() -> BPETokenizer:
    # Trained on text from the same alphabet, split only at newlines, so long chunks
    # hold many merges, and merges of merges (e.g. "ab" + "ab").
    rng = random.Random(1)
    lines = ["".join(rng.choice(HEAP_ALPHABET) for _ in range(rng.randint(1, 40))) for _ in range(400)]
    t = BPETokenizer.train("\n".join(lines), vocab_size=256 + 300, pattern=r"[^\n]+|\n+", special_tokens=())
    assert sum(a >= 256 and b >= 256 for a, b in t.merges) > 20
    return t


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.text(alphabet=st.sampled_from(HEAP_ALPHABET), min_size=1, max_size=600))
def test_fast_chunk_paths_equal_the_readable_loop(heap_tok, chunk):
    data = chunk.encode()
    want = heap_tok.encode_chunk(data)
    fast = heap_tok._fast
    assert fast.merge_short(list(data)) == want
    assert fast.merge_heap(list(data)) == want
    for share in (0.0, 0.05, 0.3):  # rounds stop anywhere: the heap finishes from there
        rounds, finished = fast.batch.merge_rounds(np.frombuffer(data, dtype=np.uint8).astype(np.int64), share)
        assert fast.merge_heap(rounds.tolist()) == want
        if finished:
            assert rounds.tolist() == want
        assert finished or share > 0  # with no minimum share, rounds alone finish the chunk


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from([" ", "\n", "a", "ab", "🤖", "aab", " \n"]), st.integers(2000, 20000))
def test_long_runs_take_rounds_then_heap_with_the_readable_ids(heap_tok, unit, n):
    data = (unit * n).encode()[:n]
    assert heap_tok._fast.merge_long(data) == heap_tok.encode_chunk(data)


def _loop_only(tok: BPETokenizer):
    """chunk (str) -> ids by the readable loop alone."""
    return lambda chunk: tok.encode_chunk(chunk.encode("utf-8", "surrogateescape"))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.text(alphabet=st.sampled_from(HEAP_ALPHABET), min_size=1, max_size=60), min_size=1, max_size=40))
def test_batch_merges_equal_the_simple_loop(heap_tok, chunks):
    merger = BatchMerger(heap_tok.merges)
    got = merger.encode([c.encode() for c in chunks])
    assert got == list(map(_loop_only(heap_tok), chunks))


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_batch_merges_equal_the_loop_on_hand_made_merges(data):
    # Any merge list, even ones no trainer learns: two ways to the same bytes, merges of
    # tokens that never meet. Chunks over the 3 bytes the merges use.
    merges = []
    for _ in range(data.draw(st.integers(0, 25))):
        ids = st.sampled_from([97, 98, 99] + list(range(256, 256 + len(merges))))
        pair = (data.draw(ids), data.draw(ids))
        if pair not in merges:
            merges.append(pair)
    tok = BPETokenizer(merges, special_tokens=())
    chunks = data.draw(st.lists(st.text(alphabet="abc", min_size=1, max_size=30), min_size=1, max_size=20))
    merger = BatchMerger(tok.merges)
    assert merger.encode([c.encode() for c in chunks]) == list(map(_loop_only(tok), chunks))
    fast = tok._fast
    assert [fast.merge_short(list(c.encode())) for c in chunks] == list(map(_loop_only(tok), chunks))
    assert [fast.merge_heap(list(c.encode())) for c in chunks] == list(map(_loop_only(tok), chunks))


def test_large_batches_take_the_batch_path_with_the_same_ids(tok, monkeypatch):
    # whole-token chunks, long chunks, ordinary ones and surrogate escapes (raw bytes) in one batch
    texts = [MIXED, "x" * 300 + " " + MIXED[::-1], "\udce9\udc80 caf\udce9 " * 3, "a" * 129]
    loop = _loop_only(tok)
    want = [[i for c in tok._fast.split(t) for i in loop(c)] for t in texts]
    calls = []
    original = BatchMerger.encode
    monkeypatch.setattr(BatchMerger, "encode", lambda self, raw: calls.append(len(raw)) or original(self, raw))
    monkeypatch.setattr(fast_module, "BATCH_MIN", 1)
    fresh = BPETokenizer.from_dict(tok.to_dict())
    assert fresh._fast.encode_texts(texts) == want
    assert calls and len(calls) == 1  # all new chunks of all texts in one batch
    assert fresh._fast.encode_texts(texts) == want  # and from the cache
    monkeypatch.setattr(fast_module, "GROUP_CHARS", 50)  # one text per group
    assert BPETokenizer.from_dict(tok.to_dict())._fast.encode_texts(iter(texts)) == want
    assert len(calls) == 1 + 3  # the last text is one long chunk: no batch
    assert not any(len(c) > fast_module.LONG_CHUNK for c in fresh._fast.cache)
    monkeypatch.setattr(fast_module, "BATCH_BYTES", 40)  # many small NumPy batches: same ids
    calls.clear()
    assert BPETokenizer.from_dict(tok.to_dict())._fast.encode_texts(texts) == want
    assert len(calls) > 10


def test_encode_simple_is_the_definition(tok):
    text = MIXED + "x" * 300 + "🤖" * 100
    assert tok.encode_ordinary(text) == tok.encode_simple(text)


def test_encoding_reproduces_the_training_segmentation():
    # Encoding a training chunk must give what the trainer ended with: replay
    # the naive trainer's merges on its chunks and compare.
    from scratchlm.tokenizer.naive import merge

    text = SMALL_CORPORA[3] + SMALL_CORPORA[5]
    t = BPETokenizer.train(text, vocab_size=256 + 80, special_tokens=())
    for chunk in set(regex.findall(GPT4_PATTERN, text)):
        ids = list(chunk.encode())
        for r, pair in enumerate(t.merges):
            ids = merge(ids, pair, 256 + r)
        assert t.encode(chunk) == ids


@pytest.mark.parametrize("corpus", range(len(SMALL_CORPORA)))
def test_every_learned_token_encodes_to_itself(corpus):
    # Why the encoder may map a chunk that is one token's bytes straight to that token:
    # the readable loop rebuilds every learned token from its bytes.
    t = BPETokenizer.train(SMALL_CORPORA[corpus] * 3 + MIXED, vocab_size=256 + 200, special_tokens=())
    for i in range(256, t.vocab_size):
        assert t.encode_chunk(t.token_bytes(i)) == [i], i


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.text(alphabet=st.sampled_from("aab c\n\t🤖é"), max_size=200))
def test_whole_token_shortcut_changes_no_ids(tok, text):
    assert tok.encode(text + MIXED[:80]) == tok.encode_simple(text + MIXED[:80])


def test_bytes_shared_by_two_tokens_are_left_to_the_merge_loop():
    # "abc" as (ab, c) and as (a, bc): a hand-made merge list our trainer never learns
    t = BPETokenizer(merges=[(97, 98), (98, 99), (256, 99), (97, 257)])
    assert "abc" not in t._fast.whole and t._fast.whole["ab"] == 256
    assert t.encode("abc") == [258]  # (a, b) ranks first, then (ab, c)


def test_encode_batch_equals_encode(tok, monkeypatch):
    texts = [MIXED[i:] * 3 for i in range(0, 300, 11)]
    monkeypatch.setattr(bpe_module, "PARALLEL_MIN_CHARS", 100)
    assert tok.encode_batch(texts, workers=2) == [tok.encode(t) for t in texts]
    assert tok.encode_batch(texts, workers=1) == [tok.encode(t) for t in texts]


def test_cache_does_not_change_results(tok):
    fresh = BPETokenizer.from_dict(tok.to_dict())
    a = fresh.encode(MIXED)
    assert fresh.encode(MIXED) == a == tok.encode(MIXED)


def test_tokenizer_pickles_for_worker_processes(tok):
    import pickle

    copy = pickle.loads(pickle.dumps(tok))
    assert copy.encode(MIXED, disallowed_special=()) == tok.encode(MIXED, disallowed_special=())


def test_cache_starts_over_at_its_limit(tok, monkeypatch):
    monkeypatch.setattr(fast_module, "CACHE_LIMIT", 2)
    fresh = BPETokenizer.from_dict(tok.to_dict())
    assert fresh.encode(MIXED, disallowed_special=()) == tok.encode(MIXED, disallowed_special=())
    assert len(fresh._fast.cache) > 2  # one call may overfill it; the next call with a new chunk starts over
    assert fresh.encode("zqzq") == tok.encode("zqzq")
    assert list(fresh._fast.cache) == ["zqzq"]
    assert fresh.encode(MIXED) == tok.encode(MIXED)  # and results never change


def test_decode_accepts_numpy_and_torch(tok):
    import numpy as np
    import torch

    ids = tok.encode("Speak, speak.")
    assert tok.decode(np.array(ids)) == tok.decode(torch.tensor(ids)) == "Speak, speak."


def test_decode_of_unknown_id_is_a_clear_error(tok):
    with pytest.raises(ScratchLMError, match="outside"):
        tok.decode([1, 2, tok.vocab_size])
    with pytest.raises(ScratchLMError, match="outside"):
        tok.decode([-1])


# --------------------------------------------------------------------- streaming


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(texty)
def test_stream_decoder_never_breaks_a_character(tok, text):
    ids = tok.encode(text, disallowed_special=())
    dec = tok.stream_decoder()
    pieces = [dec.feed(i) for i in ids]
    pieces.append(dec.flush())
    assert "".join(pieces) == text
    if "\ufffd" not in text:
        assert all("\ufffd" not in p for p in pieces)


def test_stream_decoder_holds_partial_character():
    t = BPETokenizer([], special_tokens=())  # bytes only: an emoji is 4 tokens
    dec = StreamDecoder(t)
    ids = list("🤖".encode())
    assert [dec.feed(i) for i in ids] == ["", "", "", "🤖"]
    assert dec.feed(ids[:2]) == "" and dec.flush() == "\ufffd"  # a truly cut-off character


# ---------------------------------------------------------------- special tokens


def test_special_token_injection_is_refused_by_default(tok):
    text = "user says <|endoftext|> and more"
    with pytest.raises(DisallowedSpecialTokenError, match="special token"):
        tok.encode(text)
    with pytest.raises(ScratchLMError):  # it is a ScratchLMError (and a ValueError, like tiktoken's)
        tok.encode("<|pad|>")
    assert issubclass(DisallowedSpecialTokenError, ValueError)


def test_special_tokens_as_plain_text_or_allowed(tok):
    text = "a<|endoftext|>b<|pad|>"
    plain = tok.encode(text, disallowed_special=())
    assert plain == tok.encode_ordinary(text)
    assert 448 not in plain and 449 not in plain and tok.decode(plain) == text
    allowed = tok.encode(text, allowed_special="all")
    assert allowed == tok.encode("a") + [448] + tok.encode("b") + [449]
    assert tok.decode(allowed) == text
    # allow one, refuse the other
    with pytest.raises(DisallowedSpecialTokenError, match="<\\|pad\\|>"):
        tok.encode(text, allowed_special={"<|endoftext|>"})
    one = tok.encode(text, allowed_special={"<|endoftext|>"}, disallowed_special=())
    assert one.count(448) == 1 and 449 not in one


def test_unknown_special_name_is_an_error(tok):
    with pytest.raises(ScratchLMError, match="not special tokens"):
        tok.encode("x", allowed_special={"<|nope|>"})


def test_user_defined_special_tokens():
    t = BPETokenizer.train(CORPUS, vocab_size=400, special_tokens=("<|im_start|>", "<|im_end|>", "<|endoftext|>"))
    ids = t.encode("<|im_start|>hi<|im_end|>", allowed_special="all")
    assert ids[0] == 397 and ids[-1] == 398 and t.vocab_size == 400
    with pytest.raises(ScratchLMError, match="twice"):
        BPETokenizer([], special_tokens=("<|x|>", "<|x|>"))


def test_one_special_token_as_a_bare_string():
    # A bare string is one token, not one token per character.
    t = BPETokenizer.train(MIXED, vocab_size=300, special_tokens="<|endoftext|>")
    assert t.special_tokens == {"<|endoftext|>": 299} and t.vocab_size == 300
    assert BPETokenizer([], special_tokens="<|x|>").special_tokens == {"<|x|>": 256}


@pytest.mark.parametrize("bad", [("",), ("<|a|>", ""), "", (None,)])
def test_empty_special_token_is_refused(bad):
    with pytest.raises(ScratchLMError, match="non-empty strings"):
        BPETokenizer([], special_tokens=bad)
    with pytest.raises(ScratchLMError, match="non-empty strings"):
        BPETokenizer.train("hello", vocab_size=300, special_tokens=bad)


# -------------------------------------------------------------------- save / load


def test_save_load_identity(tok, tmp_path):
    path = tmp_path / "tok.json"
    tok.save(path)
    d = json.loads(path.read_text(encoding="utf-8"))
    assert d["format"] == "scratchlm-tokenizer" and d["version"] == 1 and d["type"] == "bpe"
    assert d["pattern"] == GPT4_PATTERN and d["pattern_name"] == "gpt4"
    assert "corpus_sha256" in d["meta"] and "training_seconds" in d["meta"]
    back = load_tokenizer(path)
    assert isinstance(back, BPETokenizer)
    assert back.to_dict() == tok.to_dict()
    assert back.encode(MIXED) == tok.encode(MIXED)
    assert tokenizer_hash(back) == tokenizer_hash(tok)
    # the package-level writer round-trips too
    save_tokenizer(tok, tmp_path / "b.json")
    assert BPETokenizer.load(tmp_path / "b.json").merges == tok.merges


def test_hash_ignores_metadata(tok):
    d = tok.to_dict(include_meta=False)
    assert "meta" not in d
    other = BPETokenizer.from_dict({**tok.to_dict(), "meta": {"training_seconds": 123}})
    assert tokenizer_hash(other) == tokenizer_hash(tok)


@pytest.mark.parametrize(
    "corrupt, message",
    [
        (lambda d: d.update(version=2), "version"),
        (lambda d: d.update(merges=[[1, 2, 3]]), "merges"),
        (lambda d: d["merges"].__setitem__(0, [300, 1]), "do not exist"),
        (lambda d: d.update(special_tokens={"<|endoftext|>": 5}), "special token ids"),
        (lambda d: d.pop("pattern"), "pattern"),
        (lambda d: d.update(pattern="(["), "regex"),
        (lambda d: d.update(type="char"), "type"),
    ],
)
def test_corrupt_content_is_a_clear_error(tok, corrupt, message):
    d = tok.to_dict()
    corrupt(d)
    with pytest.raises(ScratchLMError, match=message):
        BPETokenizer.from_dict(d)


def test_corrupt_file_is_a_clear_error(tok, tmp_path):
    path = tmp_path / "tok.json"
    tok.save(path)
    path.write_text(path.read_text(encoding="utf-8")[:-50], encoding="utf-8")  # truncated
    with pytest.raises(ScratchLMError, match="corrupt"):
        BPETokenizer.load(path)
    with pytest.raises(ScratchLMError, match="not found"):
        BPETokenizer.load(tmp_path / "missing.json")
    for top in ("[1, 2]", "42", '"bpe"', "null"):  # valid JSON, but not an object
        path.write_text(top, encoding="utf-8")
        with pytest.raises(ScratchLMError, match="corrupt.*top level must be an object"):
            load_tokenizer(path)


# --------------------------------------------------------------------------- CLI


def test_cli_train_encode_decode_show(tmp_path, capsys):
    from scratchlm.cli import main as scratchlm_main
    from scratchlm.cli.tokenizer import render_tokens

    def main(argv):
        return scratchlm_main(["tokenizer", *argv])

    data = tmp_path / "corpus.txt"
    data.write_bytes(CORPUS.encode("utf-8"))
    out = tmp_path / "tok.json"
    assert main(["train", "--data", str(data), "--vocab-size", "400", "--out", str(out), "--no-progress"]) == 0
    assert "bytes/token" in capsys.readouterr().out
    t = BPETokenizer.load(out)
    assert t.vocab_size == 400

    assert main(["encode", "-t", str(out), "Speak, speak. 🤖"]) == 0
    ids = [int(x) for x in capsys.readouterr().out.split()]
    assert ids == t.encode("Speak, speak. 🤖")

    assert main(["decode", "-t", str(out), *map(str, ids)]) == 0
    assert capsys.readouterr().out == "Speak, speak. 🤖\n"

    assert main(["show", "-t", str(out), "Speak, speak.", "--ids"]) == 0
    shown = capsys.readouterr().out
    assert "\x1b[" in shown and "tokens" in shown
    plain = render_tokens(t, t.encode("Speak, speak."), colour=False)
    assert plain.replace("|", "") == "Speak, speak." and plain.count("|") == len(t.encode("Speak, speak.")) - 1

    assert main(["encode", "-t", str(out), "<|endoftext|>"]) == 2  # refused, naming the command's own flags
    assert "--allowed-special" in capsys.readouterr().err
    assert main(["encode", "-t", str(out), "<|endoftext|>", "--allowed-special", "all"]) == 0
    assert capsys.readouterr().out.split() == ["399"]


def test_cli_show_through_the_real_entry_point(tok, tmp_path):
    # `python -m scratchlm tokenizer show`: the command a learner types.
    path = tmp_path / "tok.json"
    tok.save(path)
    text = "Speak, speak. naïve 😀 ∑ 東京 <|endoftext|>"  # 😀 and ∑ are not in CORPUS: byte tokens
    out = subprocess.run(
        [sys.executable, "-m", "scratchlm", "tokenizer", "show", "-t", str(path), text, "--allowed-special", "all"],
        capture_output=True, text=True, encoding="utf-8", check=True,
    ).stdout
    ids = tok.encode(text, allowed_special="all")
    assert f"{len(ids)} tokens" in out
    # One colour escape per token that shows text; a token holding only part of a
    # character shows nothing until the character is complete.
    dec = StreamDecoder(tok)
    shown = sum(1 for i in ids if dec.feed(i))
    assert shown < len(ids)
    assert out.count("\x1b[30;48;5;") + out.count("\x1b[97;48;5;160m") == shown
    assert out.count("\x1b[97;48;5;160m") == 1  # the special token, in its own colour
