"""Mixed precision on CPU with a tiny model: bf16 and fp16 autocast keep fp32 master weights
and AdamW state; fp16 scales the loss, unscales before clipping (the logged gradient norm
is the true one), skips an overflowing step without the guard counting it, and keeps its
loss scale across a checkpoint."""

import numpy as np
import pytest
import torch

from scratchlm.config import build_config
from scratchlm.train.loop import Trainer
from scratchlm.train.runtime import Runtime

VOCAB = 48


class UniformTok:
    vocab_size = VOCAB
    special_tokens: dict = {}

    def decode(self, ids):
        return "x" * len(ids)

    def token_bytes(self, token_id):
        return b"x"


def make_trainer(tmp_path, dtype, *overrides):
    cfg = build_config("tiny", overrides=["data.tokenizer=char", f"model.vocab_size={VOCAB}", "model.n_layer=1", "model.n_embd=32",
                                          "model.n_head=2", "model.block_size=16", "train.batch_size=4", "train.grad_clip=1.0",
                                          "train.warmup_steps=1", *overrides])
    rng = np.random.default_rng(0)
    data = {"train": rng.integers(0, VOCAB, 2000).astype(np.uint16), "val": rng.integers(0, VOCAB, 500).astype(np.uint16)}
    torch.manual_seed(0)
    return Trainer(cfg, tmp_path, UniformTok(), "test", data, Runtime(torch.device("cpu"), "test", dtype, "test"))


@pytest.mark.parametrize("dtype", ["bf16", "fp16"])
def test_master_weights_and_adamw_state_stay_fp32(tmp_path, dtype):
    t = make_trainer(tmp_path, dtype)
    assert t.scaler.is_enabled() == (dtype == "fp16")
    out = t.train_step()
    assert np.isfinite(out["loss"]) and not out["skipped"] and not out["overflow"]
    assert all(p.dtype == torch.float32 for p in t.raw_model.parameters())
    moments = [v for s in t.optimizer.state.values() for k, v in s.items() if k in ("exp_avg", "exp_avg_sq")]
    assert moments and all(v.dtype == torch.float32 for v in moments)


def test_fp16_logs_the_unscaled_gradient_norm(tmp_path):
    """The same first step in fp32 and in fp16 (loss scaled by 2^16): the norms agree."""
    ref = make_trainer(tmp_path, "fp32").train_step()["grad_norm"]
    t = make_trainer(tmp_path, "fp16")
    assert t.scaler.get_scale() == 2.0**16
    norm = t.train_step()["grad_norm"]
    assert norm == pytest.approx(ref, rel=0.05)  # not 65536× larger: unscaled before clipping and logging


def test_fp16_overflow_is_skipped_by_the_scaler_not_counted_by_the_guard(tmp_path):
    t = make_trainer(tmp_path, "fp16")
    t.scaler = torch.amp.GradScaler("cpu", init_scale=2.0**40)  # the scaled gradients overflow fp16
    before = [p.detach().clone() for p in t.raw_model.parameters()]
    out = t.train_step()
    assert out["overflow"] and not out["skipped"] and t.guard.streak == 0
    assert t.scaler.get_scale() == 2.0**39  # lowered, as loss scaling does
    assert all(torch.equal(a, b) for a, b in zip(before, t.raw_model.parameters()))  # no update applied
    assert len(t.guard.spikes.losses) == 0  # nor does the step join the guard's windows


def test_fp16_loss_scale_is_checkpointed_and_restored(tmp_path):
    t = make_trainer(tmp_path / "a", "fp16")
    t.scaler = torch.amp.GradScaler("cpu", init_scale=2.0**40)
    t.train_step()
    folder = t.save()
    u = make_trainer(tmp_path / "b", "fp16")
    u.load(folder)
    assert u.scaler.get_scale() == t.scaler.get_scale() == 2.0**39
