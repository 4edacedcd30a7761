"""The flat one-token decoder (decode.py) against the model's own forward pass."""

import pytest
import torch

from scratchlm.model.decode import Decoder
from scratchlm.inference.generate import generate_tokens
from scratchlm.model import GPT, GPTConfig


def model_for(bias=True, n_head=2):
    torch.manual_seed(0)
    return GPT(GPTConfig(vocab_size=97, block_size=16, n_layer=2, n_head=n_head, n_embd=32, bias=bias)).eval()


@pytest.mark.parametrize("bias,n_head", [(True, 2), (False, 4)])
def test_step_logits_equal_the_forward_pass(bias, n_head):
    model = model_for(bias, n_head)
    with torch.no_grad():  # make the biases and norms non-trivial so a dropped term would show
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    x = torch.randint(0, 97, (3, 12))
    full, _ = model(x)
    caches = model.new_kv_caches(3)
    decoder = Decoder(model)
    with torch.inference_mode():
        model(x[:, :4], kv_caches=caches)  # the prompt fills the cache through GPT.forward
        steps = [decoder.step(x[:, i : i + 1], caches) for i in range(4, 12)]
    assert caches[0].pos == caches[-1].pos == 12
    torch.testing.assert_close(torch.stack(steps, 1), full[:, 4:], atol=1e-5, rtol=1e-5)


def test_step_from_an_empty_cache_and_a_full_cache_is_refused():
    model = model_for()
    x = torch.randint(0, 97, (1, 16))
    caches = model.new_kv_caches(1)
    decoder = Decoder(model)
    with torch.inference_mode():
        logits = torch.stack([decoder.step(x[:, i : i + 1], caches) for i in range(16)], 1)
        torch.testing.assert_close(logits, model(x)[0], atol=1e-5, rtol=1e-5)
        with pytest.raises(ValueError, match="context"):
            decoder.step(x[:, :1], caches)


def test_decoder_leaves_the_model_untouched():
    model = model_for()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    Decoder(model)  # folds the 1/sqrt(d) scale into a copy of c_attn, not into the model
    Decoder(model, torch.bfloat16)
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), k


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_16_bit_weights_stay_close_to_fp32(dtype):
    model = model_for()
    x = torch.randint(0, 97, (2, 10))
    ref, _ = model(x)
    caches = model.new_kv_caches(2)
    decoder = Decoder(model, dtype)
    with torch.inference_mode():
        model(x[:, :1], kv_caches=caches)
        steps = torch.stack([decoder.step(x[:, i : i + 1], caches) for i in range(1, 10)], 1)
    assert caches[0].k.dtype == torch.float32  # the cache and the scores stay fp32
    assert (steps.float() - ref[:, 1:]).abs().max() < 0.05 * ref.abs().max()


def test_fast_and_forward_generation_give_the_same_tokens_past_the_context():
    model = model_for()
    prompt = torch.randint(0, 97, (2, 5))
    runs = {}
    for name, kw in {"fast": {}, "forward": {"fast": False}, "no cache": {"use_cache": False}}.items():
        g = torch.Generator().manual_seed(3)
        runs[name] = torch.cat(list(generate_tokens(model, prompt, 30, temperature=1.0, top_p=0.9, generator=g, **kw)), 1)
    assert runs["fast"].tolist() == runs["forward"].tolist() == runs["no cache"].tolist()  # 35 > context 16


def test_bf16_generation_runs_and_is_deterministic():
    model = model_for()
    prompt = torch.zeros(1, 1, dtype=torch.long)
    a, b = (torch.cat(list(generate_tokens(model, prompt, 20, temperature=0.0, dtype=torch.bfloat16)), 1) for _ in range(2))
    assert a.tolist() == b.tolist() and a.shape == (1, 20)


def test_capturing_attention_weights_uses_the_forward_path():
    model = model_for()
    for block in model.transformer.h:
        block.attn.capture_weights = True
    list(generate_tokens(model, torch.zeros(1, 3, dtype=torch.long), 4, temperature=0.0))
    # the last step went through GPT.forward with one new token: weights of shape (B, H, 1, t)
    assert model.transformer.h[0].attn.last_weights.shape == (1, 2, 1, 6)


def test_a_model_held_in_bf16_decodes_with_a_bf16_cache():
    model = model_for().to(torch.bfloat16)
    x = torch.randint(0, 97, (1, 8))
    caches = model.new_kv_caches(1)
    decoder = Decoder(model)
    with torch.inference_mode():
        ref, _ = model(x)
        model(x[:, :1], kv_caches=caches)
        steps = torch.stack([decoder.step(x[:, i : i + 1], caches) for i in range(1, 8)], 1)
    assert caches[0].kv.dtype == torch.bfloat16
    assert (steps.float() - ref[:, 1:].float()).abs().max() < 0.05 * ref.float().abs().max()
