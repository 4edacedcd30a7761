"""`scratchlm memory`: the formula estimate against what PyTorch actually holds, and the
measured table end to end."""

import pytest
import torch

from scratchlm.cli import main as scratchlm_main
from scratchlm.config import build_config
from scratchlm.model import GPT
from scratchlm.train import memory
from scratchlm.train.optim import make_optimizer

SMALL = ["model.n_layer=2", "model.n_embd=64", "model.n_head=2", "model.block_size=32", "model.vocab_size=100",
         "train.batch_size=4", "data.tokenizer=char"]


def test_weights_grads_adamw_match_real_tensors():
    cfg = build_config("tiny", overrides=SMALL + ["train.dtype=fp32"])
    est = memory.estimate(cfg)
    model = GPT(cfg.model)
    n = sum(p.numel() for p in model.parameters())
    assert est["parameters"] == n
    assert est["weights"] == sum(p.numel() * p.element_size() for p in model.parameters())
    opt, _ = make_optimizer(model, 1e-3, 0.1, (0.9, 0.95), "cpu")
    x = torch.randint(0, 100, (4, 32))
    model(x, x)[1].backward()
    assert est["gradients"] == sum(p.grad.numel() * p.grad.element_size() for p in model.parameters())
    opt.step()
    moments = sum(t.numel() * t.element_size() for s in opt.state.values() for k, t in s.items() if k != "step")
    assert est["adamw"] == moments


@pytest.mark.parametrize("checkpointing", ["none", "blocks"])
def test_activation_estimate_close_to_what_autograd_saves(checkpointing):
    """fp32: count the bytes autograd keeps for backward; the formula should be within 35%."""
    cfg = build_config("tiny", overrides=SMALL + ["train.dtype=fp32", f"train.activation_checkpointing={checkpointing}"])
    model = GPT(cfg.model)
    if checkpointing == "blocks":
        model.checkpoint_blocks = set(range(cfg.model.n_layer))
    seen: dict[int, int] = {}  # by storage, so a tensor saved by two ops counts once

    def pack(t):
        seen[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
        return t

    x = torch.randint(0, 100, (4, 32))
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        logits, loss = model(x, x)
    kept = sum(v for k, v in seen.items() if k not in {p.untyped_storage().data_ptr() for p in model.parameters()})
    kept += logits.numel() * 4  # the logits' gradient, made in backward
    est = memory.estimate(cfg)["activations"]
    if checkpointing == "blocks":  # the formula adds one block's recomputation, which the forward never holds
        est -= 4 * 32 * (17 * 64 * 4 + 2 * 64 * 4)
    assert 0.65 * kept < est < 1.35 * kept, (est, kept)


def test_every_k_checkpointing_estimates_less_than_none():
    """every_k checkpoints blocks 0, k, 2k, ...: every_1 is all of them (= blocks)."""
    def acts(mode):
        over = SMALL + ["model.n_layer=6", "train.dtype=fp32", f"train.activation_checkpointing={mode}"]
        return memory.estimate(build_config("tiny", overrides=over))["activations"]

    assert acts("every_1") == acts("blocks") < acts("every_3") < acts("none")


def test_auto_dtype_is_estimated_as_the_trainer_would_pick_it(monkeypatch):
    from scratchlm.train import runtime

    def acts(dtype):
        return memory.estimate(build_config("tiny", overrides=SMALL + ["train.device=cpu", f"train.dtype={dtype}"]))["activations"]

    monkeypatch.setattr(runtime, "cpu_has_bf16", lambda: False)  # auto -> fp32 on this CPU
    assert acts("auto") == acts("fp32") > acts("bf16")
    monkeypatch.setattr(runtime, "cpu_has_bf16", lambda: True)  # auto -> bf16
    assert acts("auto") == acts("bf16")


def test_measure_variant_in_a_fresh_process():
    """As `scratchlm memory` runs it: in this process the allocator would reuse memory
    freed by earlier tests, and the resident set would hardly grow."""
    cfg = build_config("tiny", overrides=SMALL + ["train.dtype=fp32", "train.device=cpu"])
    r = memory.measure_in_subprocess(cfg, steps=1)
    # at least the fp32 weights (plus gradients, AdamW moments and activations) above the idle process
    assert r["tokens_per_s"] > 0 and r["peak_bytes"] > memory.estimate(cfg)["weights"] and (r["micro"], r["accum"]) == (4, 1)


def test_no_measure_cli(capsys):
    assert scratchlm_main(["memory", "tiny", "--no-measure", "--model.n_layer", "2", "--data.tokenizer=char"]) == 0
    out = capsys.readouterr().out
    assert "AdamW moments" in out and "KV cache" in out and "measured" not in out


@pytest.mark.slow
def test_full_table(capsys):
    assert scratchlm_main(["memory", "tiny", "--steps", "1", *[f"--{o}" for o in SMALL]]) == 0
    out = capsys.readouterr().out
    for label in ("fp32", "act. ckpt", "accum"):
        assert label in out
    assert "failed" not in out
