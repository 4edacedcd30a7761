"""Gradient accumulation: N micro-batches must give the gradient of one N× batch.

The trainer divides each micro-batch's mean loss by N before backward, so the summed
gradients equal the gradient of the mean loss over all N·micro sequences. We capture
the gradients the trainer hands to the optimizer and compare them with the gradient
of one big batch made of the very same windows, computed directly.
"""

import numpy as np
import pytest
import torch

from scratchlm.config import build_config
from scratchlm.model import GPT
from scratchlm.train.loop import Trainer
from scratchlm.train.runtime import Runtime

VOCAB = 48


class UniformTok:
    """Stands in for a tokenizer: every token stands for one byte of text."""

    vocab_size = VOCAB
    special_tokens: dict = {}

    def decode(self, ids):  # one byte of text per token
        return "x" * len(ids)

    def token_bytes(self, token_id):
        return b"x"


def make_trainer(tmp_path, overrides, dtype="fp32"):
    cfg = build_config("tiny", overrides=["data.tokenizer=char", f"model.vocab_size={VOCAB}", "model.n_layer=2",
                                          "model.n_embd=64", "model.block_size=32", "train.grad_clip=0", *overrides])
    rng = np.random.default_rng(0)
    data = {"train": rng.integers(0, VOCAB, 4000).astype(np.uint16), "val": rng.integers(0, VOCAB, 1000).astype(np.uint16)}
    rt = Runtime(torch.device("cpu"), "test", dtype, "test")
    return Trainer(cfg, tmp_path, UniformTok(), "test", data, rt)


def captured_grads(trainer):
    """Run one train_step and return the gradients as the optimizer saw them."""
    seen = {}
    step = trainer.optimizer.step

    def spy(*a, **k):
        seen.update({n: p.grad.detach().clone() for n, p in trainer.raw_model.named_parameters()})
        return step(*a, **k)

    trainer.optimizer.step = spy
    out = trainer.train_step()
    return out, seen


@pytest.mark.parametrize("micro", [1, 2, 4])
def test_micro_batches_equal_one_big_batch(tmp_path, micro):
    batch = 8
    trainer = make_trainer(tmp_path, [f"train.batch_size={batch}", f"train.micro_batch_size={micro}"])
    assert trainer.accum_steps == batch // micro
    # the reference: the same initial weights, one batch made of every micro-batch's windows
    ref = GPT(trainer.cfg.model)
    ref.load_state_dict(trainer.raw_model.state_dict())
    xs, ys = zip(*(trainer.train_batches.get(0, m, micro) for m in range(trainer.accum_steps)))
    _, ref_loss = ref(torch.cat(xs), torch.cat(ys))
    ref_loss.backward()

    out, grads = captured_grads(trainer)
    assert out["loss"] == pytest.approx(ref_loss.item(), abs=1e-5)
    for name, p in ref.named_parameters():
        torch.testing.assert_close(grads[name], p.grad, atol=1e-5, rtol=1e-5, msg=f"gradient of {name}")


def test_accumulation_steps_derived_and_printed(tmp_path):
    trainer = make_trainer(tmp_path, ["train.batch_size=12", "train.micro_batch_size=3"])
    assert (trainer.micro_batch_size, trainer.accum_steps) == (3, 4)
    assert any("3 per micro-batch × 4 accumulation step(s)" in line for line in trainer.describe())
