"""Regression tests for the tokenizer defects an adversarial test found (issue 20), one section each."""

from __future__ import annotations

import json
import string
import threading
import tracemalloc

import pytest
import regex

import scratchlm.tokenizer.fast as fast_module
from scratchlm.data.corpus import Corpus
from scratchlm.data.dataset import tokenize_corpus
from scratchlm.errors import ScratchLMError
from scratchlm.tokenizer import BPETokenizer, CharTokenizer, WordBPETokenizer, load_tokenizer
from scratchlm.tokenizer.batch_merge import BatchMerger
from scratchlm.tokenizer.bpe_train import read_text_file
from scratchlm.tokenizer.export import to_huggingface_json, to_tiktoken

TEXT = "hello world, the king and the queen. 'll 've 123 4567 東京 🤖\n\n" * 20


@pytest.fixture(scope="module")
def tok() -> BPETokenizer:
    return BPETokenizer.train(TEXT, 330)


def word(i: int) -> str:
    """A distinct 5-letter chunk for each i (" aaaaa", " baaaa", ...): no two repeat."""
    return " " + "".join(string.ascii_lowercase[(i // 26**k) % 26] for k in range(5))


# ----------------------------------------------------- 1. cache overflow (KeyError)


def test_more_distinct_chunks_than_the_cache_holds(tok, monkeypatch):
    # The reproduction of the issue, at a cache of 1,000 instead of 262,144 entries: a
    # call whose old chunks were cached before the cache overflowed.
    monkeypatch.setattr(fast_module, "CACHE_LIMIT", 1000)
    fresh = BPETokenizer.from_dict(tok.to_dict())
    first = "".join(map(word, range(800)))
    assert fresh.encode(first) == tok.encode_simple(first)
    second = word(0) + "".join(map(word, range(800, 2500)))  # word(0) cached, 1,700 new chunks
    assert fresh.encode(second) == tok.encode_simple(second)
    assert len(fresh._fast.cache) <= 1 + 1700  # started over with this call's chunks only
    assert fresh.encode(first) == tok.encode_simple(first)


def test_a_corpus_larger_than_the_cache_through_the_data_path(tok, monkeypatch, tmp_path):
    monkeypatch.setattr(fast_module, "CACHE_LIMIT", 500)
    docs = ["".join(map(word, range(k * 700, (k + 1) * 700))) for k in range(4)]
    corpus = Corpus("many-words", docs[:3], docs[3:])
    fresh = BPETokenizer.from_dict(tok.to_dict())
    data = tokenize_corpus(corpus, fresh, "test", cache=tmp_path)
    sep = [tok.special_tokens["<|endoftext|>"]]
    want = tok.encode_simple(docs[0]) + sep + tok.encode_simple(docs[1]) + sep + tok.encode_simple(docs[2])
    assert data["train"].tolist() == want
    assert data["val"].tolist() == tok.encode_simple(docs[3])


# ------------------------------------------------------------ 2. shared by threads


def test_one_tokenizer_shared_by_threads(tok, monkeypatch):
    # Long chunks (over 128 bytes), a small cache that keeps starting over, and several
    # threads at once: every result must equal the readable encoder's.
    monkeypatch.setattr(fast_module, "CACHE_LIMIT", 300)
    shared = BPETokenizer.from_dict(tok.to_dict())
    texts = [" ".join("word" + "-" * 200 for _ in range(30)),
             "".join(map(word, range(400))), "".join(map(word, range(300, 700))) + TEXT]
    want = [tok.encode_simple(t) for t in texts]
    errors: list[BaseException] = []

    def work(k: int) -> None:
        try:
            for n in range(100):  # the old encoder raised KeyError within 100 calls
                t = (k + n) % len(texts)
                if shared.encode(texts[t]) != want[t]:
                    raise AssertionError(f"thread {k}: wrong ids for text {t}")
        except BaseException as e:  # noqa: BLE001 - reported below
            errors.append(e)

    threads = [threading.Thread(target=work, args=(k,)) for k in range(3)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert not errors, errors[0]


# ------------------------------------------------- 3. Unicode tables vs the exports

# Letters and digits assigned in Unicode 15.0 - 16.0: newer than Python 3.11's own
# tables, known to the installed `regex` and to tiktoken's and tokenizers' engines.
UP_TO_16 = ["\U0001e030", "\U00031350", "\U00011f04", "\U0001e4d0",  # 15.0: Cyrillic, CJK Ext H, Kawi, Nag Mundari
            "\U0002ebf0",  # 15.1: CJK Ext I
            "\U000105c0", "\U00010d4a", "\U00016d40", "\U0001e5d0", "\U0001ccf0"]  # 16.0 (the last a digit)
# Letters Unicode 17.0 added: the exports' engines (Unicode 16.0) do not know them.
FROM_17 = ["\u0558", "\U00010940", "\U00011db0", "\U00016ea0"]


@pytest.fixture(scope="module")
def exports(tok):
    tiktoken = pytest.importorskip("tiktoken")  # noqa: F841 - only its presence matters
    tokenizers = pytest.importorskip("tokenizers")
    hf = tokenizers.Tokenizer.from_str(json.dumps(to_huggingface_json(tok)))
    return to_tiktoken(tok), hf


@pytest.mark.parametrize("ch", UP_TO_16)
def test_characters_up_to_unicode_16_split_alike_in_ours_and_the_exports(tok, exports, ch):
    enc, hf = exports
    for text in (f"x{ch}'ll 12", f"{ch}{ch}3 {ch}!", f" {ch}\n"):
        ours = tok.encode(text)
        assert enc.encode_ordinary(text) == ours
        assert hf.encode(text).ids == ours


@pytest.mark.parametrize("ch", FROM_17)
def test_characters_after_unicode_16_are_where_ours_may_differ(ch):
    # The documented line: ours follows the installed `regex` tables. Trained on text
    # with the character, so that a split in a different place gives different ids.
    tokenizers = pytest.importorskip("tokenizers")
    pytest.importorskip("tiktoken")
    text = f" x{ch}'ll"
    t = BPETokenizer.train(TEXT + text * 50, 400)
    enc, hf = to_tiktoken(t), tokenizers.Tokenizer.from_str(json.dumps(to_huggingface_json(t)))
    assert enc.encode_ordinary(text) == hf.encode(text).ids  # the two engines agree with each other
    if regex.match(r"\p{L}", ch):  # this `regex` knows Unicode 17.0: " x?" is one word for us
        assert t.encode(text) != enc.encode_ordinary(text)
    else:
        assert t.encode(text) == enc.encode_ordinary(text)
    assert t.decode(t.encode(text)) == text


# ---------------------------------------------- 4. long repeated runs (correctness)


@pytest.mark.parametrize("unit", [" ", "\n", "a", "ab", "🤖", " \n"])
def test_long_runs_encode_like_the_readable_loop(unit):
    t = BPETokenizer.train([unit * n for n in range(1, 60)] + [TEXT], 400)
    text = unit * (30_000 // len(unit))
    assert t.encode(text) == t.encode_simple(text)


# ------------------------------------ 5. custom patterns that skip characters


def test_text_a_custom_pattern_skips_is_kept():
    t = BPETokenizer.train("hello world 123 " * 50, 270, pattern=r"\p{L}+")
    text = "hello world 123"
    assert t.decode(t.encode(text)) == text
    tokenizers = pytest.importorskip("tokenizers")
    hf = tokenizers.Tokenizer.from_str(json.dumps(to_huggingface_json(t)))
    assert hf.encode(text).ids == t.encode(text)
    pytest.importorskip("tiktoken")
    enc = to_tiktoken(t)
    for s in (text, "  héllo, wörld!! 42\n", "123", "abc"):
        assert enc.encode_ordinary(s) == t.encode(s)
        assert t.decode(t.encode(s)) == s


@pytest.mark.parametrize("pattern", [r"\p{L}*", r"(?=a)", r"a?"])
def test_a_pattern_that_matches_nothing_is_refused(pattern):
    with pytest.raises(ScratchLMError, match="empty string"):
        BPETokenizer.train("hello", 260, pattern=pattern)


# --------------------------------------------------------------- 6. lone surrogates


@pytest.mark.parametrize("text", ["\ud800", "a\udc80b", "ok \udfff"])
def test_lone_surrogates_are_refused_alike_by_ours_and_the_exports(tok, text):
    with pytest.raises(ScratchLMError, match="lone surrogate"):
        tok.encode(text)
    with pytest.raises(ScratchLMError, match="lone surrogate"):
        tok.encode_batch([text, "fine"])
    with pytest.raises(ScratchLMError, match="lone surrogate"):
        BPETokenizer.train(["hello", text], 260)
    pytest.importorskip("tiktoken")
    enc = to_tiktoken(tok)
    with pytest.raises(ScratchLMError, match="lone surrogate"):
        enc.encode(text)
    with pytest.raises(ScratchLMError, match="lone surrogate"):
        enc.encode_ordinary_batch(["fine", text])
    tokenizers = pytest.importorskip("tokenizers")
    hf = tokenizers.Tokenizer.from_str(json.dumps(to_huggingface_json(tok)))
    with pytest.raises(Exception):  # noqa: B017 - tokenizers refuses with a TypeError/ValueError
        hf.encode(text)


def test_raw_bytes_still_round_trip(tok):
    data = b"ok \xed\xa0\x80 \xff\xfe caf\xc3\xa9"  # invalid UTF-8, an encoded surrogate among it
    assert tok.decode_bytes(tok.encode_bytes(data)) == data


# --------------------------------------------------------- 7. load validates merges


@pytest.mark.parametrize("corrupt, message", [
    (lambda m: m.insert(3, list(m[1])), "repeats merge 1"),
    (lambda m: m.__setitem__(2, [40, 9999]), "do not exist"),
    (lambda m: m.__setitem__(0, [m[0][0], 257]), "do not exist"),  # uses a token made later
])
def test_load_refuses_bad_merges(tok, tmp_path, corrupt, message):
    d = tok.to_dict()
    corrupt(d["merges"])
    specials = len(d["special_tokens"])
    d["special_tokens"] = {s: 256 + len(d["merges"]) + k for k, s in enumerate(list(d["special_tokens"])[:specials])}
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(d), encoding="utf-8")
    with pytest.raises(ScratchLMError, match=message):
        load_tokenizer(path)


# ------------------------------------------------------------ 8. one-line errors


def test_a_directory_where_a_file_belongs(tmp_path):
    with pytest.raises(ScratchLMError, match="is a directory"):
        load_tokenizer(tmp_path)
    with pytest.raises(ScratchLMError, match="is a directory"):
        BPETokenizer.load(tmp_path)
    with pytest.raises(ScratchLMError, match="is a directory"):
        read_text_file(tmp_path)


def test_deeply_nested_json_is_a_corrupt_file(tmp_path):
    path = tmp_path / "deep.json"
    path.write_text("[" * 100_000 + "]" * 100_000, encoding="utf-8")
    with pytest.raises(ScratchLMError, match="corrupt"):
        load_tokenizer(path)


def test_duplicate_special_is_refused_before_training(monkeypatch):
    import scratchlm.tokenizer.bpe as bpe_module

    monkeypatch.setattr(bpe_module, "count_chunks", lambda *a, **k: pytest.fail("trained before checking"))
    with pytest.raises(ScratchLMError, match="listed twice"):
        BPETokenizer.train("hello", 300, special_tokens=["<|a|>", "<|a|>"])


@pytest.mark.parametrize("bad", [[1.5], [True], [72.0], ["7"], [None]])
def test_decode_takes_integers_only(tok, bad):
    for t in (tok, CharTokenizer.train("abc"), WordBPETokenizer.train("a b c", 2)):
        with pytest.raises(ScratchLMError, match="integers"):
            t.decode(bad)


def test_decode_accepts_numpy_integers(tok):
    import numpy as np

    ids = tok.encode("hello world")
    assert tok.decode([np.int64(i) for i in ids]) == tok.decode(np.array(ids, dtype=np.int32)) == "hello world"


# ------------------------------------------- 9. memory of encoding unique chunks


def test_batch_merges_work_in_bounded_pieces(tok, monkeypatch):
    # Encoding text with no repeated chunk must not hold NumPy arrays for all of it at
    # once: the batch merger gets at most about BATCH_BYTES of chunks per call.
    sizes = []
    original = BatchMerger.encode
    monkeypatch.setattr(BatchMerger, "encode", lambda self, raw: sizes.append(sum(map(len, raw))) or original(self, raw))
    monkeypatch.setattr(fast_module, "BATCH_BYTES", 20_000)
    fresh = BPETokenizer.from_dict(tok.to_dict())
    text = "".join(map(word, range(30_000)))  # 180 kB, every chunk new
    assert fresh.encode(text) == tok.encode_simple(text)
    assert len(sizes) > 5 and max(sizes) <= 20_000 + fast_module.LONG_CHUNK


def test_a_long_text_is_encoded_a_slice_of_chunks_at_a_time(tok, monkeypatch):
    # The sets and dicts of one step (distinct chunks, new chunks, their ids) cover at
    # most SLICE_CHUNKS chunks, however long the text.
    from scratchlm.tokenizer.fast import FastEncoder

    seen = []
    original = FastEncoder._encode_split
    monkeypatch.setattr(FastEncoder, "_encode_split",
                        lambda self, split: seen.append(sum(map(len, split))) or original(self, split))
    monkeypatch.setattr(fast_module, "SLICE_CHUNKS", 100)
    text = "".join(map(word, range(1000))) + TEXT
    assert BPETokenizer.from_dict(tok.to_dict()).encode(text) == tok.encode_simple(text)
    assert len(seen) > 10 and max(seen) <= 100


def test_memory_of_encoding_grows_like_its_output(tok):
    # Working memory beyond the returned ids stays within a small factor of the text:
    # measured with tracemalloc on 100 kB of unique chunks (benchmarks/bench_tokenizer.py
    # measures 4 MB).
    text = "".join(map(word, range(1, 17_000)))
    fresh = BPETokenizer.from_dict(tok.to_dict())
    tracemalloc.start()
    ids = fresh.encode(text)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert peak < 150 * len(text), f"{peak / len(text):.0f} bytes per character of text"
    assert len(ids) > 15_000


@pytest.mark.parametrize("content", ["[" * 200_000 + "]" * 200_000,
                                     '{"format": "scratchlm-tokenizer", "type": "char", "version": 1, "chars": '
                                     + "9" * 100_000 + "}",
                                     '{"format": "scratchlm-tokenizer", "type": "char", "version": 1, "chars": [1, null]}'])
def test_crafted_tokenizer_files_are_one_line_errors(tmp_path, content):
    from scratchlm.errors import ScratchLMError
    from scratchlm.tokenizer import load_tokenizer

    path = tmp_path / "tokenizer.json"
    path.write_text(content)
    with pytest.raises(ScratchLMError, match="corrupt"):
        load_tokenizer(path)
