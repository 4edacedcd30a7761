"""Activation checkpointing recomputes a block's activations in backward instead of
storing them: less memory, the same numbers. Loss and every gradient must match the
plain model's, dropout included (the RNG state is replayed for the recomputation)."""

import pytest
import torch

from scratchlm.model import GPT
from scratchlm.model.gpt import GPTConfig
from test_accumulation import make_trainer


def loss_and_grads(model, x, y, seed=0):
    torch.manual_seed(seed)  # same dropout masks for both models
    _, loss = model(x, y)
    loss.backward()
    return loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters()}


@pytest.mark.parametrize("dropout", [0.0, 0.2])
@pytest.mark.parametrize("blocks", [{0, 1, 2}, {1}])
def test_same_loss_and_grads(dropout, blocks):
    cfg = GPTConfig(vocab_size=50, block_size=16, n_layer=3, n_head=2, n_embd=32, dropout=dropout)
    torch.manual_seed(0)
    plain = GPT(cfg)
    ckpt = GPT(cfg)
    ckpt.load_state_dict(plain.state_dict())
    ckpt.checkpoint_blocks = blocks
    x, y = torch.randint(0, 50, (4, 16)), torch.randint(0, 50, (4, 16))
    loss_a, grads_a = loss_and_grads(plain, x, y)
    loss_b, grads_b = loss_and_grads(ckpt, x, y)
    torch.testing.assert_close(loss_b, loss_a, atol=1e-6, rtol=0)
    for name in grads_a:
        torch.testing.assert_close(grads_b[name], grads_a[name], atol=1e-6, rtol=1e-5, msg=f"gradient of {name}")


def test_checkpointing_saves_memory_in_autograd_graph():
    """Fewer saved activations: count the bytes autograd keeps for backward."""
    cfg = GPTConfig(vocab_size=50, block_size=64, n_layer=4, n_head=2, n_embd=64)
    x, y = torch.randint(0, 50, (8, 64)), torch.randint(0, 50, (8, 64))

    def saved_bytes(blocks):
        model = GPT(cfg)
        model.checkpoint_blocks = blocks
        total = 0

        def pack(t):
            nonlocal total
            total += t.numel() * t.element_size()
            return t

        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            model(x, y)
        return total

    assert saved_bytes(set(range(4))) < 0.5 * saved_bytes(None)


@pytest.mark.parametrize("mode,expected", [("blocks", {0, 1}), ("every_2", {0}), ("none", None)])
def test_trainer_modes(tmp_path, mode, expected):
    trainer = make_trainer(tmp_path, [f"train.activation_checkpointing={mode}"])
    assert trainer.raw_model.checkpoint_blocks == expected
