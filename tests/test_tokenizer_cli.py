"""`scratchlm tokenizer`: the three algorithms, export, and one-line errors instead of tracebacks."""

from __future__ import annotations

import json
import os

import pytest

from scratchlm.cli import main as scratchlm_main
from scratchlm.tokenizer import BPETokenizer, CharTokenizer, WordBPETokenizer, load_tokenizer

TEXT = "To be, or not to be, that is the question.\nWhether 'tis nobler in the mind to suffer 🤖\n" * 40


def tokenizer(*argv: str) -> int:
    return scratchlm_main(["tokenizer", *argv])


@pytest.fixture()
def data(tmp_path):
    path = tmp_path / "corpus.txt"
    path.write_text(TEXT, encoding="utf-8")
    return path


@pytest.mark.parametrize("algorithm, cls", [("bytebpe", BPETokenizer), ("wordbpe", WordBPETokenizer),
                                            ("char", CharTokenizer)])
def test_train_each_algorithm_then_encode_decode_show(tmp_path, data, capsys, algorithm, cls):
    out = tmp_path / "tok.json"
    assert tokenizer("train", "--algorithm", algorithm, "--data", str(data), "--vocab-size", "300",
                     "--out", str(out), "--no-progress") == 0
    assert "bytes/token" in capsys.readouterr().out
    tok = load_tokenizer(out)
    assert isinstance(tok, cls)
    if algorithm == "bytebpe":
        assert tok.vocab_size == 300
    if algorithm == "wordbpe":  # this small text runs out of pairs to merge first
        assert tok.vocab_size < 300 and "<|endoftext|>" in tok.special_tokens
    text = "to be or not"
    assert tokenizer("encode", "-t", str(out), text) == 0
    ids = [int(x) for x in capsys.readouterr().out.split()]
    assert ids == tok.encode(text)
    assert tokenizer("decode", "-t", str(out), *map(str, ids)) == 0
    assert capsys.readouterr().out == text + "\n"
    assert tokenizer("show", "-t", str(out), text, "--no-colour") == 0
    assert "tokens" in capsys.readouterr().out


def test_a_run_folder_is_taken_for_its_tokenizer(tmp_path, capsys):
    BPETokenizer.train(TEXT, 280).save(tmp_path / "tokenizer.json")
    assert tokenizer("encode", "-t", str(tmp_path), "to be") == 0
    assert capsys.readouterr().out.strip()


def test_export_tiktoken_and_huggingface(tmp_path, capsys):
    tok = BPETokenizer.train(TEXT, 300)
    tok.save(tmp_path / "tok.json")
    assert tokenizer("export", "-t", str(tmp_path / "tok.json"), "--format", "tiktoken", "--out", str(tmp_path / "tt")) == 0
    assert tokenizer("export", "-t", str(tmp_path / "tok.json"), "--format", "huggingface",
                     "--out", str(tmp_path / "hf")) == 0
    capsys.readouterr()
    text = TEXT[:300] + " <|endoftext|> tail"
    pytest.importorskip("tiktoken")
    from scratchlm.tokenizer.export import load_tiktoken

    enc = load_tiktoken(tmp_path / "tt")
    assert enc.encode(text, allowed_special="all") == tok.encode(text, allowed_special="all")
    tokenizers = pytest.importorskip("tokenizers")
    hf = tokenizers.Tokenizer.from_file(str(tmp_path / "hf" / "tokenizer.json"))
    assert hf.encode(text).ids == tok.encode(text, allowed_special="all")
    assert json.loads((tmp_path / "hf" / "tokenizer_config.json").read_text())["eos_token"] == "<|endoftext|>"


def test_only_byte_level_bpe_exports(tmp_path, capsys):
    CharTokenizer.train(TEXT).save(tmp_path / "char.json")
    assert tokenizer("export", "-t", str(tmp_path / "char.json"), "--format", "tiktoken", "--out", str(tmp_path)) == 2
    assert "byte-level BPE" in capsys.readouterr().err


def one_line_error(capsys, *argv) -> str:
    assert tokenizer(*argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and "Traceback" not in err
    return err


def test_one_line_errors(tmp_path, data, capsys, monkeypatch):
    import scratchlm.tokenizer.bpe as bpe_module

    tok = tmp_path / "tok.json"
    BPETokenizer.train(TEXT, 280).save(tok)
    (tmp_path / "empty").mkdir()
    assert "is a directory" in one_line_error(capsys, "encode", "-t", str(tmp_path / "empty"), "x")
    assert "is a directory" in one_line_error(capsys, "train", "--data", str(tmp_path), "--out", str(tmp_path / "a.json"))
    # --out problems and a duplicate --special are found before any training
    monkeypatch.setattr(bpe_module, "learn_merges", lambda *a, **k: pytest.fail("trained before checking"))
    assert "is a directory" in one_line_error(capsys, "train", "--data", str(data), "--out", str(tmp_path))
    assert "twice" in one_line_error(capsys, "train", "--data", str(data), "--special", "<|a|>", "--special", "<|a|>",
                                     "--out", str(tmp_path / "b.json"))
    if os.name == "posix" and os.geteuid() != 0:  # root may write anywhere
        locked = tmp_path / "locked"
        locked.mkdir(mode=0o500)
        assert "cannot be written" in one_line_error(capsys, "train", "--data", str(data),
                                                     "--out", str(locked / "t.json"))
    assert "--pattern applies" in one_line_error(capsys, "train", "--algorithm", "wordbpe", "--pattern", "gpt2")
    err = one_line_error(capsys, "encode", "-t", str(tok), "hi <|endoftext|>")
    assert "--allowed-special" in err and "--plain-special" in err and "allowed_special" not in err
    deep = tmp_path / "deep.json"
    deep.write_text("[" * 100_000 + "]" * 100_000)
    assert "corrupt" in one_line_error(capsys, "decode", "-t", str(deep), "1")
    assert "outside" in one_line_error(capsys, "decode", "-t", str(tok), "99999")
