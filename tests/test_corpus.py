"""The built-in corpus conversion, the split by play, and reading user corpora."""

import pytest

from scratchlm.data.corpus import load_corpus
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
