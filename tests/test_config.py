"""Configs: presets, dotted overrides, and clear errors for bad keys and values."""

import pytest

from scratchlm.cli import main
from scratchlm.config import build_config, presets
from scratchlm.errors import ScratchLMError


def test_presets_exist_and_load():
    assert {"tiny", "shakespeare", "gpt2", "default"} <= set(presets())
    sh = build_config("shakespeare")
    assert (sh.model.n_layer, sh.model.n_head, sh.model.n_embd, sh.model.block_size) == (6, 6, 384, 256)


def test_overrides_win_and_are_typed():
    cfg = build_config("tiny", overrides=["model.n_layer=8", "train.lr=1e-3", "train.compile=true"])
    assert cfg.model.n_layer == 8 and cfg.train.lr == 1e-3 and cfg.train.compile is True


@pytest.mark.parametrize("override, message", [
    ("train.lrr=1", "did you mean 'train.lr'"),
    ("modle.n_layer=2", "did you mean 'model.n_layer'"),
    ("train.lr=abc", "bad value for 'train.lr'"),
    ("train.lr=-1", "learning rate must be positive"),
    ("sample.top_p=1.5", "(0, 1]"),
    ("sample.temperature=-1", ">= 0"),
    ("model.n_embd=130", "divisible"),
])
def test_bad_overrides_are_clear_errors(override, message):
    with pytest.raises(ScratchLMError, match=message.replace("(", r"\(").replace(")", r"\)").replace("[", r"\[").replace("]", r"\]")):
        build_config("tiny", overrides=[override])


def test_unknown_preset_suggests():
    with pytest.raises(ScratchLMError, match="did you mean 'tiny'"):
        build_config("tinny")


def test_cli_prints_one_line_and_exits_2(capsys):
    assert main(["train", "--train.lrr", "1"]) == 2
    err = capsys.readouterr().err
    assert err.strip().count("\n") == 0 and "did you mean 'train.lr'" in err
    assert main(["train", "--lr", "1"]) == 2
    assert "unrecognised argument '--lr'" in capsys.readouterr().err


def test_cli_debug_shows_traceback():
    with pytest.raises(ScratchLMError):
        main(["--debug", "train", "--train.lrr", "1"])
