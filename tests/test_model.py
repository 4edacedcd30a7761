"""The GPT: initial loss, learning, tied weights, KV cache."""

import math

import torch

from scratchlm.inference.generate import generate_tokens
from scratchlm.model import GPT, GPTConfig

CFG = GPTConfig(vocab_size=97, block_size=16, n_layer=2, n_head=2, n_embd=32)


def test_initial_loss_is_about_ln_vocab():
    torch.manual_seed(0)
    model = GPT(CFG)
    x = torch.randint(0, CFG.vocab_size, (8, 16))
    y = torch.randint(0, CFG.vocab_size, (8, 16))
    _, loss = model(x, y)
    assert abs(loss.item() - math.log(CFG.vocab_size)) < 0.1


def test_tied_head_and_scaled_residual_init():
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=97, block_size=16, n_layer=8, n_head=2, n_embd=64))
    assert model.lm_head.weight is model.transformer.wte.weight
    std_proj = model.transformer.h[0].attn.c_proj.weight.std().item()
    std_fc = model.transformer.h[0].mlp.c_fc.weight.std().item()
    assert abs(std_fc - 0.02) < 0.003
    assert abs(std_proj - 0.02 / math.sqrt(16)) < 0.002


def test_tiny_model_overfits_one_batch():
    torch.manual_seed(0)
    model = GPT(CFG)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    x = torch.randint(0, CFG.vocab_size, (4, 16))
    y = torch.roll(x, -1, dims=1)
    for _ in range(150):
        _, loss = model(x, y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < 0.05


def test_kv_cache_logits_equal_full_forward():
    torch.manual_seed(0)
    model = GPT(CFG).eval()
    x = torch.randint(0, CFG.vocab_size, (2, 12))
    full, _ = model(x)
    caches = model.new_kv_caches(2)
    part1, _ = model(x[:, :5], kv_caches=caches)
    steps = [model(x[:, i : i + 1], kv_caches=caches)[0] for i in range(5, 12)]
    cached = torch.cat([part1] + steps, dim=1)
    torch.testing.assert_close(cached, full, atol=1e-5, rtol=1e-5)


def test_generation_with_cache_equals_without_also_past_the_context():
    torch.manual_seed(0)
    model = GPT(CFG).eval()
    prompt = torch.randint(0, CFG.vocab_size, (1, 5))
    runs = []
    for use_cache in (True, False):
        g = torch.Generator().manual_seed(7)
        runs.append(torch.cat(list(generate_tokens(model, prompt, 40, temperature=1.0, generator=g, use_cache=use_cache)), 1))
    assert runs[0].tolist() == runs[1].tolist()  # 45 tokens > context of 16: the window slides


def test_sequence_longer_than_context_is_refused():
    model = GPT(CFG)
    try:
        model(torch.zeros(1, 17, dtype=torch.long))
    except ValueError as e:
        assert "context" in str(e)
    else:
        raise AssertionError("expected an error")
