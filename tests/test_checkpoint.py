"""Checkpoints: a complete round trip, atomic replacement, and one clear line for every
way a checkpoint can be bad (incomplete, corrupt, truncated, unsafe pickle, other shape)."""

import errno
import json
import random
import shutil

import numpy as np
import pytest
import torch
from safetensors import SafetensorError

from scratchlm.config import build_config
from scratchlm.errors import ScratchLMError
from scratchlm.model import GPT, GPTConfig
from scratchlm.train import checkpoint as ckpt
from scratchlm.train import run_training
from scratchlm.train.optim import make_optimizer

SHAPE = GPTConfig(vocab_size=40, block_size=16, n_layer=2, n_head=2, n_embd=32)


def _trained(cfg=SHAPE, steps=2):
    """A model and an AdamW with real state (moments, step counts)."""
    torch.manual_seed(0)
    model = GPT(cfg)
    opt, _ = make_optimizer(model, 1e-3, 0.1, (0.9, 0.95), "cpu")
    for _ in range(steps):
        x = torch.randint(0, cfg.vocab_size, (4, cfg.block_size))
        _, loss = model(x, x)
        loss.backward()
        opt.step()
        opt.zero_grad()
    return model, opt


def _write(folder, model, opt, step=7):
    return ckpt.save_checkpoint(folder, ckpt.plain_state_dict(model), opt.state_dict(),
                                {"step": step, "config": {"hello": 1}, "tokenizer_hash": "abc"})


def _error_line(fn) -> str:
    with pytest.raises(ScratchLMError) as e:
        fn()
    msg = str(e.value)
    assert "\n" not in msg and "Traceback" not in msg
    return msg


def test_round_trip_restores_weights_optimizer_and_every_rng(tmp_path):
    model, opt = _trained()
    random.seed(1), np.random.seed(2), torch.manual_seed(3)
    folder = _write(tmp_path / "checkpoints" / "step_0000007", model, opt)
    expect = (random.random(), np.random.rand(), torch.rand(1))  # draws right after saving
    assert sorted(p.name for p in folder.iterdir()) == sorted([ckpt.MODEL_FILE, ckpt.TRAINER_FILE, ckpt.STATE_FILE, ckpt.MANIFEST])
    assert not list(folder.parent.glob(".tmp-*"))

    state, sd, trainer = ckpt.load_checkpoint(folder)
    assert state["step"] == 7 and state["code_version"] and state["tokenizer_hash"] == "abc"
    model2, opt2 = _trained(steps=0)
    ckpt.load_model_weights(model2, sd, str(folder))
    for (k, a), b in zip(model.state_dict().items(), model2.state_dict().values()):
        assert torch.equal(a, b), k
    opt2.load_state_dict(trainer["optimizer"])
    for s1, s2 in zip(opt.state_dict()["state"].values(), opt2.state_dict()["state"].values()):
        assert all(torch.equal(s1[k], s2[k]) for k in ("exp_avg", "exp_avg_sq", "step"))
    random.seed(9), np.random.seed(9), torch.manual_seed(9)
    ckpt.set_rng_state(state["rng"], trainer["rng"])
    assert (random.random(), np.random.rand()) == expect[:2] and torch.equal(torch.rand(1), expect[2])


def test_replacing_a_checkpoint_is_atomic_and_a_crash_between_renames_is_recovered(tmp_path):
    model, opt = _trained()
    best = _write(tmp_path / "best", model, opt, step=1)
    _write(tmp_path / "best", model, opt, step=2)
    assert ckpt.verify(best)["step"] == 2 and not list(tmp_path.glob(".old-*"))
    # a crash after the old folder was moved aside and before the new one took its place
    best.rename(tmp_path / ".old-best-999999")
    ckpt.recover(tmp_path)
    assert ckpt.verify(tmp_path / "best")["step"] == 2


def test_incomplete_corrupt_and_truncated_checkpoints_are_named_clearly(tmp_path):
    model, opt = _trained()
    good = _write(tmp_path / "good", model, opt)

    no_manifest = shutil.copytree(good, tmp_path / "interrupted")
    (no_manifest / ckpt.MANIFEST).unlink()
    assert "is incomplete" in _error_line(lambda: ckpt.load_checkpoint(no_manifest))

    flipped = shutil.copytree(good, tmp_path / "flipped")
    raw = bytearray((flipped / ckpt.MODEL_FILE).read_bytes())
    raw[-10] ^= 0xFF
    (flipped / ckpt.MODEL_FILE).write_bytes(bytes(raw))
    assert "model.safetensors fails its checksum" in _error_line(lambda: ckpt.load_checkpoint(flipped))

    truncated = shutil.copytree(good, tmp_path / "truncated")
    data = (truncated / ckpt.TRAINER_FILE).read_bytes()
    (truncated / ckpt.TRAINER_FILE).write_bytes(data[: len(data) // 2])
    assert "trainer.pt fails its checksum" in _error_line(lambda: ckpt.load_checkpoint(truncated))

    # truncated *and* a manifest that matches (written by something else): the reader's error, in one line
    rewritten = shutil.copytree(truncated, tmp_path / "rewritten")
    files = {n: ckpt._sha256(rewritten / n) for n in (ckpt.MODEL_FILE, ckpt.TRAINER_FILE, ckpt.STATE_FILE)}
    (rewritten / ckpt.MANIFEST).write_text(json.dumps({"files": files}))
    assert "trainer.pt cannot be read" in _error_line(lambda: ckpt.load_checkpoint(rewritten))

    (flipped / ckpt.MANIFEST).write_text("{not json")
    assert "corrupt manifest.json" in _error_line(lambda: ckpt.verify(flipped))


class _RunsCode:
    """Unpickling this calls open(path, 'w'): a stand-in for any code a pickle could run."""

    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return (open, (self.path, "w"))


def test_a_pickle_that_would_run_code_is_refused_not_executed(tmp_path):
    model, opt = _trained()
    folder = _write(tmp_path / "evil", model, opt)
    marker = tmp_path / "code-ran"
    torch.save({"optimizer": _RunsCode(marker), "rng": {}}, folder / ckpt.TRAINER_FILE)
    files = {n: ckpt._sha256(folder / n) for n in (ckpt.MODEL_FILE, ckpt.TRAINER_FILE, ckpt.STATE_FILE)}
    (folder / ckpt.MANIFEST).write_text(json.dumps({"files": files}))  # checksums agree: only weights_only stands guard
    msg = _error_line(lambda: ckpt.load_checkpoint(folder))
    assert "holds objects other than tensors" in msg
    assert not marker.exists()


def test_a_checkpoint_of_another_model_shape_is_refused(tmp_path):
    model, opt = _trained()
    folder = _write(tmp_path / "ck", model, opt)
    _, sd, _ = ckpt.load_checkpoint(folder)
    wider = GPT(GPTConfig(vocab_size=40, block_size=16, n_layer=2, n_head=2, n_embd=64))
    msg = _error_line(lambda: ckpt.load_model_weights(wider, sd, str(folder)))
    assert "different model shape" in msg and "(40, 32)" in msg and "(40, 64)" in msg
    deeper = GPT(GPTConfig(vocab_size=40, block_size=16, n_layer=3, n_head=2, n_embd=32))
    assert "missing ['transformer.h.2" in _error_line(lambda: ckpt.load_model_weights(deeper, sd, str(folder)))


def test_latest_good_checkpoint_skips_a_corrupt_newer_one(tmp_path):
    model, opt = _trained()
    _write(tmp_path / "step_0000010", model, opt, step=10)
    newer = _write(tmp_path / "step_0000020", model, opt, step=20)
    (newer / ckpt.STATE_FILE).write_text("{}")
    warnings = []
    assert ckpt.latest_good_checkpoint(tmp_path, warn=warnings.append) == tmp_path / "step_0000010"
    assert len(warnings) == 1 and "step_0000020" in warnings[0]


def test_full_disk_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    model, opt = _trained()
    _write(tmp_path / "checkpoints" / "step_0000005", model, opt, step=5)

    def out_of_space(obj, path):  # half a file lands on disk, then the write fails
        open(path, "wb").write(b"\0" * 1000)
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(torch, "save", out_of_space)
    msg = _error_line(lambda: _write(tmp_path / "checkpoints" / "step_0000010", model, opt, step=10))
    assert msg.startswith("disk full while writing checkpoint") and "kept: step_0000005" in msg and "--resume" in msg
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == ["step_0000005"]  # no half-written folder
    assert ckpt.verify(tmp_path / "checkpoints" / "step_0000005")["step"] == 5


def test_full_disk_inside_safetensors_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    """safetensors reports a full disk as its own SafetensorError (not an OSError)."""
    model, opt = _trained()
    _write(tmp_path / "checkpoints" / "step_0000005", model, opt, step=5)

    def out_of_space(tensors, path, *a, **k):
        open(path, "wb").write(b"\0" * 1000)
        raise SafetensorError(f'Error while serializing: I/O error: No space left on device (os error 28) at path "{path}"')

    monkeypatch.setattr(ckpt, "save_file", out_of_space)
    msg = _error_line(lambda: _write(tmp_path / "checkpoints" / "step_0000010", model, opt, step=10))
    assert msg.startswith("disk full while writing checkpoint") and "kept: step_0000005" in msg
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == ["step_0000005"]
    assert ckpt.verify(tmp_path / "checkpoints" / "step_0000005")["step"] == 5


def test_training_keeps_the_last_k_best_and_final(tmp_path, small_corpus):
    over = {"data.path": str(small_corpus), "data.tokenizer": "char", "model.n_layer": 1, "model.n_embd": 32, "model.n_head": 2,
            "model.block_size": 32, "train.batch_size": 4, "train.max_steps": 8, "train.eval_interval": 2, "train.eval_tokens": 256,
            "train.warmup_steps": 1, "train.keep_last": 2, "train.dtype": "fp32", "train.device": "cpu", "sample.num_samples": 0}
    run_training(build_config("tiny", overrides=over), tmp_path / "a")
    assert sorted(p.name for p in (tmp_path / "a" / "checkpoints").iterdir()) == ["best", "final", "step_0000006", "step_0000008"]
    metrics = [json.loads(line) for line in (tmp_path / "a" / "metrics.jsonl").read_text().splitlines()]
    best_val = min(r["val_loss"] for r in metrics if r.get("event") == "eval")
    assert ckpt.verify(tmp_path / "a" / "checkpoints" / "best")["best_val"] == best_val
    run_training(build_config("tiny", overrides={**over, "train.keep_best": False, "train.keep_last": 1}), tmp_path / "b")
    assert sorted(p.name for p in (tmp_path / "b" / "checkpoints").iterdir()) == ["final", "step_0000008"]
