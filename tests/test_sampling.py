"""Sampling: filters, determinism under a seed, prompts longer than the context."""

import torch

from scratchlm.config import SampleConfig
from scratchlm.inference.generate import filter_logits
from scratchlm.model import GPT, GPTConfig
from scratchlm.inference import encode_prompt, sample_text
from scratchlm.tokenizer import CharTokenizer


def test_top_k_keeps_k_tokens():
    logits = torch.tensor([[1.0, 5.0, 3.0, 4.0, 2.0]])
    out = filter_logits(logits, 1.0, top_k=2)
    assert torch.isfinite(out).tolist() == [[False, True, False, True, False]]


def test_top_p_keeps_the_smallest_nucleus():
    probs = torch.tensor([[0.5, 0.3, 0.15, 0.05]])
    out = filter_logits(probs.log(), 1.0, top_p=0.75)  # 0.5 + 0.3 reaches 0.75
    assert torch.isfinite(out).tolist() == [[True, True, False, False]]
    out = filter_logits(probs.log(), 1.0, top_p=0.5)  # the top token alone is enough
    assert torch.isfinite(out).tolist() == [[True, False, False, False]]


def test_temperature_sharpens():
    logits = torch.tensor([[1.0, 2.0]])
    p_cold = torch.softmax(filter_logits(logits, 0.5), -1)[0, 1]
    p_hot = torch.softmax(filter_logits(logits, 2.0), -1)[0, 1]
    assert p_cold > torch.softmax(logits, -1)[0, 1] > p_hot


def _model_and_tok():
    tok = CharTokenizer.train("abcdefghij \n")
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=tok.vocab_size, block_size=8, n_layer=1, n_head=1, n_embd=16))
    return model, tok


def test_same_seed_same_text_different_seed_different_text():
    model, tok = _model_and_tok()
    sc = SampleConfig(prompt="ab", max_new_tokens=30, temperature=1.0, top_p=1.0, seed=3, num_samples=2)
    a = sample_text(model, tok, sc)
    b = sample_text(model, tok, sc)
    assert a == b
    sc.seed = 4
    assert sample_text(model, tok, sc) != a
    assert all(t.startswith("ab") and len(t) == 32 for t in a)


def test_long_prompt_is_cropped_from_the_left_with_a_note():
    _, tok = _model_and_tok()
    notes = []
    ids = encode_prompt(tok, "abcdefghijabc", 8, warn=notes.append)
    assert ids == tok.encode("cdefghijabc"[-8:])
    assert "longer than the context" in notes[0]
