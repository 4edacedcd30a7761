"""The classic word-level BPE (Sennrich et al.): the paper's example and its unknown-character problem."""

from __future__ import annotations

import pytest

from scratchlm.errors import ScratchLMError
from scratchlm.tokenizer import load_tokenizer, save_tokenizer
from scratchlm.tokenizer.bpe import BPETokenizer
from scratchlm.tokenizer.wordbpe import EOW, UNK, WordBPETokenizer

# The toy vocabulary of the paper: low x5, lower x2, newest x6, widest x3.
PAPER = " ".join(["low"] * 5 + ["lower"] * 2 + ["newest"] * 6 + ["widest"] * 3)


def test_paper_example_merges():
    t = WordBPETokenizer.train(PAPER, num_merges=5)
    assert t.merges == [("e", "s"), ("es", "t"), ("est", EOW), ("l", "o"), ("lo", "w")]
    assert t.tokenize("lowest") == ["low", "est</w>"]  # a word never seen, built from known parts
    assert t.tokenize("newer") == ["n", "e", "w", "e", "r", EOW]


def test_round_trip_for_known_characters():
    text = "the cat sat on the mat and the rat sat on the hat"
    t = WordBPETokenizer.train(text * 3, num_merges=30)
    ids = t.encode(text)
    assert t.decode(ids) == text
    assert t.vocab_size == len(set(text.replace(" ", ""))) + 2 + len(t.merges)  # + <unk> and </w>


def test_unknown_characters_are_lost():
    t = WordBPETokenizer.train(PAPER, num_merges=10)
    text = "lowest 🤖 naïve"
    toks = t.tokenize(text)
    assert UNK in toks
    assert t.decode(t.encode(text)) != text  # the emoji and 'ï' are gone for good
    assert t.unknown_fraction(text) > 0.2
    # byte-level BPE trained on the same text has no such problem
    b = BPETokenizer.train(PAPER, vocab_size=270, special_tokens=())
    assert b.decode(b.encode(text)) == text


def test_whitespace_is_collapsed():
    t = WordBPETokenizer.train(PAPER, num_merges=10)
    assert t.decode(t.encode("low\t\tlow\n  lower")) == "low low lower"


def test_save_load():
    t = WordBPETokenizer.train(PAPER, num_merges=8)
    back = WordBPETokenizer.from_dict(t.to_dict())
    assert back.encode("lowest newer") == t.encode("lowest newer")
    with pytest.raises(ScratchLMError):
        WordBPETokenizer.from_dict({"version": 9})


def test_load_through_load_tokenizer(tmp_path):
    t = WordBPETokenizer.train(PAPER, num_merges=8)
    path = tmp_path / "word.json"
    save_tokenizer(t, path)
    back = load_tokenizer(path)
    assert isinstance(back, WordBPETokenizer)
    assert back.merges == t.merges and back.encode("lowest newer") == t.encode("lowest newer")


@pytest.mark.parametrize("bad", [["e"], ["e", "s", "t"], [1, 2], "es", None])
def test_malformed_merge_is_a_clear_error(bad):
    d = WordBPETokenizer.train(PAPER, num_merges=3).to_dict()
    d["merges"][1] = bad
    with pytest.raises(ScratchLMError, match="merge 1 is"):
        WordBPETokenizer.from_dict(d)


# ------------------------------------------------- a real tokenizer: protocol, training


def test_incremental_trainer_learns_the_papers_loop_merges():
    from scratchlm.tokenizer.wordbpe import learn_merges, learn_merges_naive

    text = PAPER + " the cat sat on the mat; a rat ate the hat. aaaa aaa abab baba " * 3
    words = {tuple(w) + (EOW,): f for w, f in __import__("collections").Counter(text.split()).items()}
    for n in (1, 5, 20, 80):
        assert learn_merges(words, n) == learn_merges_naive(words, n)


def test_vocab_size_and_special_tokens():
    t = WordBPETokenizer.train(PAPER * 3, vocab_size=20, special_tokens=("<|endoftext|>",))
    assert t.vocab_size == 20 and t.special_tokens == {"<|endoftext|>": 19}
    assert t.decode([19]) == "<|endoftext|>" and 19 not in t.encode("<|endoftext|> low")
    back = load_tokenizer_from(t)
    assert back.special_tokens == t.special_tokens and back.encode("lowest") == t.encode("lowest")
    with pytest.raises(ScratchLMError, match="too small"):
        WordBPETokenizer.train(PAPER, vocab_size=5)


def load_tokenizer_from(t):
    from scratchlm.tokenizer import tokenizer_from_dict

    return tokenizer_from_dict(t.to_dict())


def test_it_implements_the_tokenizer_protocol():
    from scratchlm.tokenizer import StreamDecoder, Tokenizer

    t = WordBPETokenizer.train(PAPER, num_merges=6)
    assert isinstance(t, Tokenizer)
    ids = t.encode("lowest newer")
    assert b"".join(map(t.token_bytes, ids)).decode() == "lowest newer "  # </w> stands for a space
    dec = StreamDecoder(t)
    assert "".join(dec.feed(i) for i in ids) + dec.flush() == "lowest newer "


def test_data_tokenizer_wordbpe_trains_a_model(tmp_path, small_corpus):
    # The guide's word-level BPE as a model's tokenizer, end to end: train, run folder, sample.
    from scratchlm.cli import main
    from scratchlm.inference import load_run

    run = tmp_path / "run"
    rc = main(["train", "--preset", "tiny", "--data", str(small_corpus), "--out", str(run), "--max-steps", "6",
               "--data.tokenizer", "wordbpe", "--data.vocab_size", "300", "--model.n_layer", "1",
               "--train.eval_interval", "3", "--train.warmup_steps", "2", "--sample.max_new_tokens", "8",
               "--sample.num_samples", "1", "--viz.snapshots", "false", "--viz.figures", "false",
               "--viz.tensorboard", "false", "--quiet"])
    assert rc == 0
    tok = load_tokenizer(run / "tokenizer.json")
    assert isinstance(tok, WordBPETokenizer) and "<|endoftext|>" in tok.special_tokens
    loaded = load_run(run)
    assert loaded.model.config.vocab_size >= tok.vocab_size
    assert "ALL:" in tok.decode(tok.encode("ALL: Speak"))
