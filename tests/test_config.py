"""Configs: presets, dotted overrides, and clear errors for bad keys and values."""

import pytest
import torch

from scratchlm.cli import main
from scratchlm.config import build_config, presets
from scratchlm.errors import ScratchLMError
from scratchlm.model import GPT


def test_presets_exist_and_load():
    assert {"tiny", "shakespeare", "gpt2", "default"} <= set(presets())
    sh = build_config("shakespeare")
    assert (sh.model.n_layer, sh.model.n_head, sh.model.n_embd, sh.model.block_size) == (6, 6, 384, 256)


@pytest.mark.parametrize("preset, vocab_size, low, high", [
    ("tiny", 512, 0.7e6, 1.3e6),  # ≈1M
    ("shakespeare", 65, 9e6, 11e6),  # ≈10M, character-level
    ("gpt2", 50257, 124e6, 125e6),  # GPT-2 small: 124M
])
def test_preset_parameter_counts(preset, vocab_size, low, high):
    cfg = build_config(preset, overrides={"model.vocab_size": vocab_size}).model
    with torch.device("meta"):  # shapes only: no memory, no time
        model = GPT(cfg)
    assert low < model.num_params(non_embedding=preset != "gpt2") < high
    if preset == "gpt2":
        assert model.num_params(non_embedding=False) == 124_439_808  # the published count, head tied


def test_config_file_is_a_layer_under_overrides(tmp_path):
    f = tmp_path / "mine.toml"
    f.write_text("[model]\nn_layer = 3\nn_embd = 96\n\n[train]\nlr = 5e-4\nbatch_size = 8\n")
    cfg = build_config(config_file=str(f), overrides=["train.batch_size=4"])
    assert (cfg.model.n_layer, cfg.model.n_embd, cfg.train.lr, cfg.train.batch_size) == (3, 96, 5e-4, 4)
    assert cfg.model.n_head == 6  # not in the file: the dataclass default


def test_unknown_key_in_a_config_file_suggests(tmp_path, capsys):
    f = tmp_path / "bad.toml"
    f.write_text("[train]\nweight_decy = 0.1\n")
    with pytest.raises(ScratchLMError, match="unknown config key 'train.weight_decy'; did you mean 'train.weight_decay'"):
        build_config(config_file=str(f))
    assert main(["train", "--config", str(f)]) == 2  # from the command line: one clear line, no traceback
    assert "did you mean 'train.weight_decay'" in capsys.readouterr().err


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
    ("sample.dtype=int3", "one of fp32, bf16, fp16"),
    ("model.n_embd=130", "divisible"),
    ("model.shift_taps=5", "must be 1 to 4"),
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
