"""The snapshot recorder on a real (tiny) training run: files, shapes, and a run that trains exactly the same."""

import json

import numpy as np
import pytest

from scratchlm.config import build_config
from scratchlm.train import run_training
from scratchlm.train.events import Events
from scratchlm.viz import live
from scratchlm.viz.snapshots import drop_after, load_snapshots, snapshot_files

SMALL = {"data.tokenizer": "char", "model.n_layer": 2, "model.n_head": 2, "model.n_embd": 32, "model.block_size": 32,
         "train.batch_size": 4, "train.eval_tokens": 512, "train.warmup_steps": 2, "train.max_steps": 12,
         "train.eval_interval": 6, "train.keep_last": 1, "sample.num_samples": 0, "viz.figures": False}


def train(tmp_path, name, corpus, attach=True, **overrides):
    cfg = build_config("tiny", overrides={**SMALL, "data.path": str(corpus), **overrides})
    events = Events()
    said = []
    if attach:
        live.attach(events, cfg.viz, say=said.append)
    run_training(cfg, tmp_path / name, overwrite=True, events=events)
    return tmp_path / name, said


def losses(run_dir):
    return [json.loads(line)["loss"] for line in (run_dir / "metrics.jsonl").read_text().splitlines()
            if '"loss"' in line]


def test_recorder_writes_snapshots_and_changes_nothing(tmp_path, small_corpus):
    on, said = train(tmp_path, "on", small_corpus, **{"viz.tensorboard": True})
    assert not said, said  # no internal error switched it off
    assert [s for s, _ in snapshot_files(on)] == [0, 6, 12]
    snaps = load_snapshots(on)
    T = 24  # viz.prompt_tokens
    assert snaps.maps.shape == (3, 2, 2, T, T)
    np.testing.assert_allclose(snaps.maps.sum(-1), 1.0, atol=2e-2)  # float16 on disk
    for name, values in snaps.metrics.items():
        assert values.shape == (3, 2, 2) and np.all((values >= 0) & (values <= 1)), name
    assert np.isnan(snaps.val_loss[0]) and np.all(np.isfinite(snaps.val_loss[1:]))
    assert list((on / "tensorboard").glob("events.out.tfevents.*"))
    off, _ = train(tmp_path, "off", small_corpus, attach=False)
    assert not (off / "attention").exists()
    assert losses(on) == losses(off)  # the probe takes no random numbers and leaves the model as it was


def test_every_and_off(tmp_path, small_corpus):
    run, _ = train(tmp_path, "every", small_corpus, **{"viz.every": 2, "viz.tensorboard": False})
    assert [s for s, _ in snapshot_files(run)] == [0, 12]
    events = live.attach(Events(), build_config(overrides={"viz.snapshots": False, "viz.tensorboard": False}).viz)
    assert not any(events._handlers.values())  # off: nothing subscribed, nothing to pay


def test_custom_prompt_and_bad_prompt(tmp_path, small_corpus):
    run, _ = train(tmp_path, "prompt", small_corpus, **{"viz.prompt": "ALL:\nSpeak", "viz.tensorboard": False,
                                                          "train.max_steps": 6})
    assert "".join(load_snapshots(run).tokens) == "ALL:↵Speak"
    run, said = train(tmp_path, "bad", small_corpus, **{"viz.prompt": "A", "viz.tensorboard": False,
                                                         "train.max_steps": 6})
    assert len(said) == 1 and "at least 2" in said[0]  # a warning; training went on
    assert (run / "checkpoints" / "final").exists()


def test_drop_after(tmp_path):
    folder = tmp_path / "attention"
    folder.mkdir()
    for s in (0, 5, 10, 15):
        (folder / f"step_{s:07d}.npz").write_bytes(b"")
    assert drop_after(tmp_path, 9) == 2
    assert [s for s, _ in snapshot_files(tmp_path)] == [0, 5]


def test_config_checks():
    from scratchlm.errors import ScratchLMError

    with pytest.raises(ScratchLMError, match="viz.every"):
        build_config(overrides={"viz.every": 0})
