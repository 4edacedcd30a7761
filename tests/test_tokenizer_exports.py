"""Exports give our ids: tiktoken (built offline), Hugging Face tokenizers and transformers.

Also checks our trainer against the Hugging Face BPE trainer: with the byte-level
pre-tokenizer and the same split pattern it learns the very same merges.
"""

from __future__ import annotations

import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from scratchlm.data.shakespeare import shakespeare_text
from scratchlm.errors import ScratchLMError
from scratchlm.tokenizer.bpe import BPETokenizer
from scratchlm.tokenizer.bpe_train import bytes_to_unicode
from scratchlm.tokenizer.export import save_huggingface, to_huggingface_json, to_tiktoken, to_transformers

tiktoken = pytest.importorskip("tiktoken")
tokenizers = pytest.importorskip("tokenizers")

EXTRA = (
    "def f(x):\r\n\treturn x ** 2  # ok\n\n東京は日本の首都です。 naïve e\u0301 🤖👩‍👩‍👧 2024-11-22 "
    "'LL 'll 's\x00 end   \n\n\n  trailing  "
)


@pytest.fixture(scope="module")
def corpus() -> tuple[str, str]:
    text = shakespeare_text()
    return text[:400_000] + EXTRA * 20, text[-150_000:] + EXTRA  # train, held out


@pytest.fixture(scope="module", params=["gpt4", "gpt2"])
def tok(request, corpus) -> BPETokenizer:
    return BPETokenizer.train(corpus[0], vocab_size=1200, pattern=request.param)


def test_tiktoken_export_gives_our_ids(tok, corpus):
    enc = to_tiktoken(tok)
    held = corpus[1]
    ours = tok.encode(held)
    assert enc.encode_ordinary(held) == ours
    assert enc.n_vocab == tok.vocab_size
    assert enc.decode(ours) == held
    special = "a<|endoftext|>b"
    assert enc.encode(special, allowed_special="all") == tok.encode(special, allowed_special="all")
    with pytest.raises(ValueError):  # tiktoken refuses injection by default, as we do
        enc.encode(special)


def test_huggingface_tokenizer_json_gives_our_ids(tok, corpus, tmp_path):
    from tokenizers import Tokenizer

    held = corpus[1]
    ours = tok.encode(held)
    path = save_huggingface(tok, tmp_path / "tokenizer.json")
    hf = Tokenizer.from_file(str(path))
    assert hf.encode(held).ids == ours
    assert hf.decode(ours) == held
    assert hf.get_vocab_size() == tok.vocab_size
    assert hf.encode("a<|endoftext|>b").ids == tok.encode("a<|endoftext|>b", allowed_special="all")


def test_transformers_fast_tokenizer_gives_our_ids(tok, corpus, tmp_path):
    transformers = pytest.importorskip("transformers")
    held = corpus[1][:20_000]
    ours = tok.encode(held)
    folder = tmp_path / "hf"
    save_huggingface(tok, folder)
    fast = transformers.PreTrainedTokenizerFast(tokenizer_file=str(folder / "tokenizer.json"))
    assert fast.encode(held) == ours
    auto = transformers.AutoTokenizer.from_pretrained(str(folder))
    assert auto.encode(held) == ours
    assert auto.decode(ours) == held
    assert auto.eos_token == "<|endoftext|>"
    assert to_transformers(tok).encode(held) == ours


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(text=st.lists(st.one_of(st.text(max_size=15), st.sampled_from(["\r\n", "  ", "🤖", "e\u0301", " the", "'S", "123456"])), max_size=20).map("".join))
def test_exports_agree_on_arbitrary_text(tok, text):
    from tokenizers import Tokenizer

    ours = tok.encode(text, disallowed_special=())
    assert to_tiktoken_cached(tok).encode_ordinary(text) == ours
    hf = Tokenizer.from_str(hf_json_cached(tok))
    if "<|endoftext|>" not in text:  # HF always matches added tokens
        assert hf.encode(text).ids == ours


_cache: dict = {}


def to_tiktoken_cached(tok):
    key = ("tt", id(tok))
    if key not in _cache:
        _cache[key] = to_tiktoken(tok)
    return _cache[key]


def hf_json_cached(tok):
    key = ("hf", id(tok))
    if key not in _cache:
        _cache[key] = json.dumps(to_huggingface_json(tok))
    return _cache[key]


@pytest.mark.parametrize("pattern", ["gpt4", "gpt2"])
def test_same_merges_as_the_huggingface_trainer(corpus, pattern):
    from tokenizers import Regex, Tokenizer, models, pre_tokenizers, trainers

    from scratchlm.tokenizer.regex_patterns import PATTERNS

    docs = corpus[0][:200_000].split("\n\n")
    ours = BPETokenizer.train(docs, vocab_size=900, pattern=pattern, special_tokens=())
    hf = Tokenizer(models.BPE())
    hf.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.Split(Regex(PATTERNS[pattern]), behavior="isolated"), pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)]
    )
    trainer = trainers.BpeTrainer(vocab_size=900, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    hf.train_from_iterator(docs, trainer)
    hf_merges = [m.split(" ") if isinstance(m, str) else m for m in json.loads(hf.to_str())["model"]["merges"]]
    b2u = bytes_to_unicode()
    spell = lambda i: "".join(b2u[b] for b in ours.token_bytes(i))  # noqa: E731
    assert [[spell(a), spell(b)] for a, b in ours.merges] == hf_merges


def test_vocabulary_with_duplicate_bytes_cannot_be_exported():
    # "abc" made twice: (ab, c) and (a, bc). Our encoder copes; the byte-keyed formats cannot.
    t = BPETokenizer([(97, 98), (256, 99), (98, 99), (97, 258)], special_tokens=())
    assert t.decode(t.encode("abc")) == "abc"
    with pytest.raises(ScratchLMError, match="same bytes"):
        to_tiktoken(t)
    with pytest.raises(ScratchLMError, match="same bytes"):
        to_huggingface_json(t)
