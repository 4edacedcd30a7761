"""The learning-rate schedules and the optimizer's parameter groups."""

import math

import pytest
import torch

from scratchlm.config import TrainConfig
from scratchlm.model import GPT, GPTConfig
from scratchlm.train.optim import lr_at, make_optimizer

LR, MIN_RATIO, WARMUP = 1e-3, 0.1, 10


def tc(**kw):
    return TrainConfig(lr=LR, min_lr_ratio=MIN_RATIO, warmup_steps=WARMUP, **kw)


def test_linear_warmup():
    c = tc()
    assert [lr_at(s, 0.0, 0.0, c) for s in (0, 4, 9)] == pytest.approx([LR / 10, LR / 2, LR])


@pytest.mark.parametrize("warmup_end", [0.0, 0.2])
def test_cosine_starts_at_lr_passes_the_midpoint_and_ends_at_the_floor(warmup_end):
    c, floor = tc(schedule="cosine"), LR * MIN_RATIO
    mid = warmup_end + (1 - warmup_end) / 2  # halfway through the decay (after warmup)
    assert lr_at(WARMUP, warmup_end, warmup_end, c) == pytest.approx(LR)
    assert lr_at(500, mid, warmup_end, c) == pytest.approx((LR + floor) / 2)
    assert lr_at(999, 1.0, warmup_end, c) == pytest.approx(floor)
    assert lr_at(2000, 1.7, warmup_end, c) == pytest.approx(floor)  # never below the floor
    # a quarter of the way: cos(π/4) of the way between floor and lr
    assert lr_at(250, warmup_end + (1 - warmup_end) / 4, warmup_end, c) == pytest.approx(
        floor + (LR - floor) * 0.5 * (1 + math.cos(math.pi / 4)))


def test_wsd_is_constant_then_cools_down_linearly():
    c, floor = tc(schedule="wsd", cooldown_frac=0.2), LR * MIN_RATIO
    for p in (0.0, 0.5, 0.8):  # the stable phase: the last 20% is the cool-down
        assert lr_at(100, p, 0.0, c) == pytest.approx(LR)
    assert lr_at(100, 0.9, 0.0, c) == pytest.approx((LR + floor) / 2)  # halfway down, linearly
    assert lr_at(100, 0.85, 0.0, c) == pytest.approx(LR + (floor - LR) * 0.25)
    assert lr_at(100, 1.0, 0.0, c) == pytest.approx(floor)


def small_gpt():
    torch.manual_seed(0)
    return GPT(GPTConfig(vocab_size=32, block_size=8, n_layer=2, n_head=2, n_embd=16))


def test_weight_decay_only_on_matrices():
    model = small_gpt()
    opt, _ = make_optimizer(model, LR, 0.1, (0.9, 0.95), "cpu")
    decay, no_decay = opt.param_groups
    assert decay["weight_decay"] == 0.1 and no_decay["weight_decay"] == 0.0
    names = {id(p): n for n, p in model.named_parameters()}  # the tied head appears once
    decayed = {names[id(p)] for p in decay["params"]}
    plain = {names[id(p)] for p in no_decay["params"]}
    assert decayed == {n for n, p in model.named_parameters() if p.dim() >= 2}
    assert "transformer.wte.weight" in decayed and "transformer.h.0.attn.c_attn.weight" in decayed
    assert all(n.endswith(".bias") or ".ln_" in n for n in plain)  # biases and LayerNorm gains
    assert any(n.endswith(".bias") for n in plain) and any(".ln_" in n and n.endswith(".weight") for n in plain)
    assert len(decayed) + len(plain) == len(list(model.parameters()))


def test_fused_or_foreach_on_cpu():
    model = small_gpt()
    opt, kind = make_optimizer(model, LR, 0.1, (0.9, 0.95), "cpu")
    assert kind in ("fused", "foreach")
    assert opt.defaults[kind] is True
    before = model.transformer.wte.weight.detach().clone()
    _, loss = model(torch.randint(0, 32, (2, 8)), torch.randint(0, 32, (2, 8)))
    loss.backward()
    opt.step()  # the chosen implementation runs on this machine
    assert not torch.equal(before, model.transformer.wte.weight)


@pytest.mark.parametrize("kind,taps", [("adamw", 1), ("muon", 1), ("muon", 2)])
def test_key_shift_weights_get_a_group_of_their_own_with_a_scaled_lr(kind, taps):
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=32, block_size=8, n_layer=2, n_head=2, n_embd=16, key_shift=True,
                          shift_taps=taps))
    names = {id(p): n for n, p in model.named_parameters()}
    plain, _ = make_optimizer(model, LR, 0.1, (0.9, 0.95), "cpu", kind)
    opt, _ = make_optimizer(model, LR, 0.1, (0.9, 0.95), "cpu", kind, key_shift_lr_ratio=10.0)
    shift = {n for n in names.values() if "shift" in n}
    assert len(shift) == 2 * (1 if taps == 1 else 3)  # k_shift; with 2 taps also k_shift_far and q_shift
    apart = [g for g in opt.param_groups if "lr_scale" in g]
    assert len(apart) == 1 and apart[0]["lr_scale"] == 10.0 and apart[0]["weight_decay"] == 0.0
    assert {names[id(p)] for p in apart[0]["params"]} == shift
    # every other parameter keeps its group and settings; each parameter is in exactly one group
    assert len(opt.param_groups) == len(plain.param_groups) + 1
    for old, new in zip(plain.param_groups, opt.param_groups):
        assert {names[id(p)] for p in old["params"]} - shift == {names[id(p)] for p in new["params"]}
        assert old["weight_decay"] == new["weight_decay"] and old.get("muon") == new.get("muon")
    assert sum(len(g["params"]) for g in opt.param_groups) == len(names)
    # a ratio of 1, or a model without a key shift: the groups as before
    assert len(make_optimizer(model, LR, 0.1, (0.9, 0.95), "cpu", kind, key_shift_lr_ratio=1.0)[0].param_groups) \
        == len(plain.param_groups)
    assert all("lr_scale" not in g for g in make_optimizer(small_gpt(), LR, 0.1, (0.9, 0.95), "cpu", kind,
                                                           key_shift_lr_ratio=10.0)[0].param_groups)
