"""Bad input gets one line on stderr, exit status 2 and no traceback (unless --debug),
and nothing already on disk is lost. Every case goes through the real command line."""

import errno
import json
import shutil

import numpy as np
import pytest
import torch

from conftest import SMALL_TEXT
from scratchlm.cli import main
from scratchlm.data.dataset import Batches
from scratchlm.errors import ScratchLMError
from scratchlm.train import checkpoint as ckpt

SMALL = ["--data.tokenizer", "char", "--model.n_layer", "1", "--model.n_head", "2", "--model.n_embd", "32",
         "--model.block_size", "32", "--train.batch_size", "4", "--train.eval_tokens", "256", "--train.warmup_steps", "1",
         "--train.dtype", "fp32", "--train.device", "cpu", "--sample.num_samples", "0"]


def train(data, out, *extra):
    return main(["train", "--preset", "tiny", "--data", str(data), "--out", str(out), "--quiet", "--max-steps", "2", *SMALL, *extra])


def one_error_line(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert "Traceback" not in err
    last = err.splitlines()[-1]
    assert last.startswith("error: ")
    return last


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    """A small finished run to sample from and to damage (copies of it)."""
    d = tmp_path_factory.mktemp("bad-input")
    (d / "text.txt").write_text(SMALL_TEXT, encoding="utf-8")
    assert train(d / "text.txt", d / "run") == 0
    return d / "run"


# ---- the corpus ------------------------------------------------------------------

@pytest.mark.parametrize("kind, content, expect", [
    ("empty", b"", "holds no usable UTF-8 text"),
    ("blank", b"  \n\n\t \n", "is empty"),
    ("binary", b"\x7fELF\x02\x01\x01\x00\x00\x00" + bytes(range(256)), "looks binary (NUL bytes)"),
    ("latin-1", "hello world, caf\u00e9 au lait\n".encode("latin-1") * 3, "is not UTF-8: byte 0xe9 at offset 16"),
    ("too short", b"to be or not\n", "too short for one context window of 32 (it needs at least 34)"),
])
def test_unusable_corpus(tmp_path, capsys, kind, content, expect):
    f = tmp_path / "corpus.txt"
    f.write_bytes(content)
    assert train(f, tmp_path / "run") == 2
    line = one_error_line(capsys)
    assert expect in line
    if kind in ("binary", "latin-1"):
        assert str(f) in line  # which file
    assert not (tmp_path / "run" / "checkpoints").exists()


def test_a_split_of_exactly_one_window_is_refused_and_named():
    """block_size + 1 tokens make one window but leave no room to draw one at random."""
    ids = np.arange(33, dtype=np.uint16)
    with pytest.raises(ScratchLMError, match="the validation split has 33 tokens, too short"):
        Batches(ids, 32, "cpu", 0, split="validation")
    x, y = Batches(np.arange(34, dtype=np.uint16), 32, "cpu", 0).get(0, 0, 2)  # one more token: fine
    assert x.shape == (2, 32) and torch.equal(x[:, 1:], y[:, :-1])


def test_no_file_at_the_path(tmp_path, capsys):
    assert train(tmp_path / "nope.txt", tmp_path / "run") == 2
    assert "no files found at --data" in one_error_line(capsys)


# ---- the configuration -----------------------------------------------------------

@pytest.mark.parametrize("args, expect", [
    (["--train.lrr", "1e-3"], "unknown config key 'train.lrr'; did you mean 'train.lr'?"),
    (["--model.n_embed", "64"], "did you mean 'model.n_embd'?"),
    (["--train.lr", "fast"], "bad value for 'train.lr'"),
    (["--train.lr", "-1e-3"], "bad value for 'train.lr': -0.001 (the learning rate must be positive, at most 10)"),
    (["--train.max_steps", "2.5"], "bad value for 'train.max_steps'"),
    (["--sample.top_p", "1.5"], "bad value for 'sample.top_p': 1.5 (must be in (0, 1])"),
    (["--sample.top_p", "0"], "bad value for 'sample.top_p'"),
    (["--sample.temperature", "-0.5"], "bad value for 'sample.temperature': -0.5"),
    (["--train.guard_lr_factor", "2"], "bad value for 'train.guard_lr_factor'"),
    (["--max-stpes", "5"], "did you mean --max-steps?"),
])
def test_bad_config_values(tmp_path, capsys, args, expect):
    rc = main(["train", "--preset", "tiny", "--out", str(tmp_path / "run"), *args])
    assert rc == 2
    assert expect in one_error_line(capsys)
    assert not (tmp_path / "run").exists()  # refused before anything was written


def test_a_freeze_that_matches_no_parameter_is_one_line(tmp_path, capsys):
    data = tmp_path / "text.txt"
    data.write_text(SMALL_TEXT)
    assert train(data, tmp_path / "run", "--train.freeze", "mlp,atn") == 2
    assert "train.freeze: no parameter's name holds 'atn'" in one_error_line(capsys)
    assert train(data, tmp_path / "run2", "--train.freeze", "") == 0  # empty: nothing frozen (not a null)


def test_debug_shows_the_traceback(tmp_path):
    with pytest.raises(ScratchLMError, match="did you mean 'train.lr'"):
        main(["--debug", "train", "--preset", "tiny", "--out", str(tmp_path / "run"), "--train.lrr", "1"])


# ---- sampling ----------------------------------------------------------------------

@pytest.mark.parametrize("args, expect", [
    (["--top-p", "1.5"], "bad value for 'sample.top_p'"),
    (["--top-p", "-0.1"], "bad value for 'sample.top_p'"),
    (["--temperature", "-1"], "bad value for 'sample.temperature'"),
])
def test_bad_sampling_values(run_dir, capsys, args, expect):
    assert main(["sample", str(run_dir), "--max-new-tokens", "5", *args]) == 2
    assert expect in one_error_line(capsys)


def test_a_prompt_longer_than_the_context_is_cropped_from_the_left(run_dir, capsys):
    prompt = "ALL:\nSpeak, speak.\n\n" * 10  # 200 characters, context 32
    assert main(["sample", str(run_dir), "--prompt", prompt, "--max-new-tokens", "5", "--num-samples", "1"]) == 0
    out, err = capsys.readouterr()
    assert "the prompt is 200 tokens, longer than the context (32); keeping its last 32" in err
    assert prompt in out


def test_a_tokenizer_that_does_not_match_the_checkpoint(run_dir, tmp_path, capsys):
    other = shutil.copytree(run_dir, tmp_path / "run")
    tok = json.loads((other / "tokenizer.json").read_text())
    tok["chars"] = tok["chars"] + ["\u00e9"]  # one more character: another vocabulary
    (other / "tokenizer.json").write_text(json.dumps(tok))
    assert main(["sample", str(other), "--max-new-tokens", "5"]) == 2
    assert "is not the tokenizer checkpoint" in one_error_line(capsys)
    assert main(["train", "--resume", str(other), "--quiet"]) == 2
    assert "different tokenizer" in one_error_line(capsys)


@pytest.mark.parametrize("damage, expect", [
    ("truncate", "fails its checksum"),
    ("no manifest", "is incomplete"),
])
def test_a_damaged_checkpoint(run_dir, tmp_path, capsys, damage, expect):
    final = shutil.copytree(run_dir / "checkpoints" / "final", tmp_path / "final")
    if damage == "truncate":
        data = (final / ckpt.MODEL_FILE).read_bytes()
        (final / ckpt.MODEL_FILE).write_bytes(data[:100])
    else:
        (final / ckpt.MANIFEST).unlink()
    assert main(["sample", str(final), "--max-new-tokens", "5"]) == 2
    assert expect in one_error_line(capsys)


# ---- the run folder ----------------------------------------------------------------

def test_a_folder_holding_another_run_is_refused_unless_overwrite(run_dir, tmp_path, capsys):
    theirs = shutil.copytree(run_dir, tmp_path / "theirs")
    before = sorted(p.name for p in (theirs / "checkpoints").iterdir())
    data = tmp_path / "mine.txt"
    data.write_text(SMALL_TEXT.upper())
    assert train(data, theirs, "--model.n_embd", "64") == 2
    assert "already holds a run; use --resume" in one_error_line(capsys)
    assert sorted(p.name for p in (theirs / "checkpoints").iterdir()) == before
    assert ckpt.verify(theirs / "checkpoints" / "final")["config"]["model"]["n_embd"] == 32
    assert train(data, theirs, "--model.n_embd", "64", "--overwrite") == 0
    assert ckpt.verify(theirs / "checkpoints" / "final")["config"]["model"]["n_embd"] == 64


def test_a_full_disk_stops_training_and_the_previous_checkpoint_survives(tmp_path, capsys, monkeypatch):
    data = tmp_path / "text.txt"
    data.write_text(SMALL_TEXT)
    real_save, calls = torch.save, []

    def fills_up(obj, path, *a, **k):  # the 3rd checkpoint write (step 4) runs out of space half-way
        calls.append(path)
        if len(calls) == 3:
            open(path, "wb").write(b"\0" * 4096)
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_save(obj, path, *a, **k)

    monkeypatch.setattr(torch, "save", fills_up)
    run = tmp_path / "run"
    assert train(data, run, "--max-steps", "8", "--train.eval_interval", "2", "--train.keep_best", "false") == 2
    line = one_error_line(capsys)
    assert line.startswith("error: disk full while writing checkpoint") and f"--resume {run}" in line
    ckdir = run / "checkpoints"
    assert sorted(p.name for p in ckdir.iterdir()) == ["step_0000000", "step_0000002"]
    assert ckpt.verify(ckdir / "step_0000002")["step"] == 2
    monkeypatch.setattr(torch, "save", real_save)  # space freed
    assert main(["train", "--resume", str(run), "--quiet"]) == 0
    assert ckpt.verify(ckdir / "final")["step"] == 8


def test_a_full_disk_outside_checkpoints_is_one_line_too(tmp_path, capsys, monkeypatch):
    """A full disk while appending to metrics.jsonl (or writing config.json): an OSError
    with errno ENOSPC becomes one line and exit status 2; the checkpoints stay."""
    from scratchlm.train.loop import Trainer

    data = tmp_path / "text.txt"
    data.write_text(SMALL_TEXT)
    real_log = Trainer.log

    def log(self, record):
        if record.get("step") == 2:
            raise OSError(errno.ENOSPC, "No space left on device", str(self.metrics_path))
        real_log(self, record)

    monkeypatch.setattr(Trainer, "log", log)
    run = tmp_path / "run"
    assert train(data, run, "--max-steps", "4", "--train.eval_interval", "1", "--train.keep_best", "false") == 2
    line = one_error_line(capsys)
    assert line.startswith(f"error: disk full while writing {run / 'metrics.jsonl'}") and "--resume" in line
    assert ckpt.verify(run / "checkpoints" / "step_0000001")["step"] == 1
