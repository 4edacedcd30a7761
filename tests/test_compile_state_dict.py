"""torch.compile wraps the model (`_orig_mod.` prefixes in its state dict); checkpoints
must hold the plain names so compiled and uncompiled runs load each other's files.

Wrapping is lazy (nothing compiles until the first forward), so the prefix checks are
cheap; the test that actually compiles is marked slow (a minute on a 2-core CPU)."""

import pytest
import torch

from scratchlm.train import checkpoint as ckpt
from test_accumulation import make_trainer


def test_compiled_trainer_saves_plain_names(tmp_path):
    trainer = make_trainer(tmp_path / "a", ["train.compile=true"])
    assert isinstance(trainer.model, torch._dynamo.eval_frame.OptimizedModule)
    assert any(k.startswith("_orig_mod.") for k in trainer.model.state_dict())  # what we must not save
    folder = trainer.save("x")
    _, model_sd, _ = ckpt.load_checkpoint(folder)
    assert not [k for k in model_sd if "_orig_mod." in k or k.startswith("module.")]
    assert set(model_sd) == set(ckpt.plain_state_dict(make_trainer(tmp_path / "b", []).raw_model))


@pytest.mark.parametrize("src_compiled", [True, False])
def test_cross_loading(tmp_path, src_compiled):
    src = make_trainer(tmp_path / "src", [f"train.compile={str(src_compiled).lower()}", "train.seed=1"])
    dst = make_trainer(tmp_path / "dst", [f"train.compile={str(not src_compiled).lower()}", "train.seed=2"])
    folder = src.save("x")
    dst.load(folder)
    for (n, a), (_, b) in zip(src.raw_model.state_dict().items(), dst.raw_model.state_dict().items()):
        torch.testing.assert_close(a, b, rtol=0, atol=0, msg=n)


@pytest.mark.slow
def test_compiled_model_runs_and_matches(tmp_path):
    """A compiled model, loaded from an uncompiled run's checkpoint, computes the same loss."""
    plain = make_trainer(tmp_path / "p", ["model.n_layer=1"])
    compiled = make_trainer(tmp_path / "c", ["model.n_layer=1", "train.compile=true", "train.seed=7"])
    compiled.load(plain.save("x"))
    x, y = plain.train_batches.get(0, 0, 2)
    with torch.no_grad():
        _, a = plain.model(x, y)
        _, b = compiled.model(x, y)
    torch.testing.assert_close(b, a, atol=1e-5, rtol=1e-5)
    folder = compiled.save("y")
    assert not [k for k in ckpt.load_checkpoint(folder)[1] if "_orig_mod." in k]
