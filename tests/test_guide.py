"""The guide's code (scratchlm.guide) against the library: the same BPE merges as WordBPETokenizer,
the same block output as our TransformerBlock in the `guide` preset's configuration."""

import doctest
from dataclasses import replace

import pytest
import torch

import scratchlm.guide as guide
from scratchlm.config import build_config
from scratchlm.model import GPT, causal_mask, scaled_dot_product_attention
from scratchlm.tokenizer.wordbpe import WordBPETokenizer
from conftest import SMALL_TEXT

TEXT = "low low low low low lower lower newest newest newest newest newest newest widest widest widest " + SMALL_TEXT


@pytest.mark.parametrize("num_merges", [0, 10, 60])
def test_train_bpe_learns_the_word_level_bpe(num_merges):
    merges, vocab = guide.train_bpe(TEXT, num_merges)
    tok = WordBPETokenizer.train(TEXT, num_merges)
    assert merges == tok.merges
    # each word's final spelling in the guide's vocab is how the tokenizer splits it
    counts = {}
    for word in TEXT.split():
        spelled = " ".join(tok.tokenize(word))
        counts[spelled] = counts.get(spelled, 0) + 1
    assert vocab == counts


def test_train_bpe_on_the_classic_example():
    merges, vocab = guide.train_bpe("low " * 5 + "lower " * 2 + "newest " * 6 + "widest " * 3, 4)
    # (e, s) and (s, t) both occur 9 times (newest 6, widest 3): the alphabetically first wins
    assert merges == [("e", "s"), ("es", "t"), ("est", "</w>"), ("l", "o")]
    assert vocab == {"lo w </w>": 5, "lo w e r </w>": 2, "n e w est</w>": 6, "w i d est</w>": 3}


def guide_model(seed=0):
    cfg = build_config("guide", overrides=["model.n_layer=2", "model.n_embd=32", "model.n_head=4", "model.ff_dim=128",
                                           "model.block_size=16", "model.vocab_size=50"]).model
    torch.manual_seed(seed)
    model = GPT(cfg).eval()
    with torch.no_grad():  # non-trivial gains and biases, so a misplaced norm or bias would show
        for p in model.parameters():
            p.add_(0.1 * torch.randn_like(p))
    return model


def test_guide_preset_is_the_guides_block():
    cfg = build_config("guide").model
    assert (cfg.norm_position, cfg.norm, cfg.mlp, cfg.position, cfg.dropout) == ("post", "layernorm", "relu", "learned", 0.1)
    assert cfg.ff_width() == 4 * cfg.n_embd


@pytest.mark.parametrize("mask_dtype", [torch.float32, torch.int64, torch.bool])
def test_guide_block_with_the_same_weights_gives_the_same_output(mask_dtype):
    model = guide_model()
    x = torch.randn(3, 12, 32)
    mask = guide.causal_mask(12).to(mask_dtype)
    for ours in model.transformer.h:
        theirs = guide.from_scratchlm(ours).eval()
        torch.testing.assert_close(theirs(x, mask=mask), ours(x), atol=1e-5, rtol=1e-5)
        ours.attn.fast = False  # the written-out attention too
        torch.testing.assert_close(theirs(x, mask=mask), ours(x), atol=1e-5, rtol=1e-5)


def test_guide_blocks_stacked_give_our_models_logits():
    model = guide_model(1)
    ids = torch.randint(0, 50, (2, 16))
    tr = model.transformer
    assert model.embed_scale == 32 ** 0.5  # the original Transformer scales token embeddings by √d_model
    x = tr.wte(ids) * 32 ** 0.5 + tr.wpe(torch.arange(16))
    for block in tr.h:
        x = guide.from_scratchlm(block).eval()(x, mask=guide.causal_mask(16))
    torch.testing.assert_close(model.lm_head(x), model(ids)[0], atol=1e-5, rtol=1e-5)  # post-norm: no final norm


def test_from_scratchlm_refuses_a_block_of_another_kind():
    cfg = replace(guide_model().config, mlp="gelu")
    with pytest.raises(ValueError, match="guide's configuration"):
        guide.from_scratchlm(GPT(cfg).transformer.h[0])


def test_attention_functions_agree_and_take_the_guides_mask():
    torch.manual_seed(0)
    q, k, v = (torch.randn(2, 3, 7, 8) for _ in range(3))
    out_g, w_g = guide.scaled_dot_product_attention(q, k, v, guide.causal_mask(7))
    for mask in (causal_mask(7, 7), causal_mask(7, 7).float(), causal_mask(7, 7).long()):
        out, w = scaled_dot_product_attention(q, k, v, mask, return_weights=True)
        torch.testing.assert_close(out, out_g)
        torch.testing.assert_close(w, w_g)


def test_multi_head_attention_without_a_mask_sees_everything():
    torch.manual_seed(0)
    mha = guide.MultiHeadAttention(16, 2)
    x = torch.randn(1, 5, 16)
    out = mha(x, x, x)
    assert out.shape == (1, 5, 16)
    assert not torch.allclose(out, mha(x, x, x, guide.causal_mask(5)))  # the mask matters


def test_docstring_example_runs():
    assert doctest.testmod(guide).failed == 0
