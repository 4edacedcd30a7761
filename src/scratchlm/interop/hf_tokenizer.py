"""Read a Hugging Face byte-level BPE tokenizer (GPT-2 style) into our `BPETokenizer`.

Two formats are read, both from a local folder (nothing is downloaded):

* `tokenizer.json` (the `tokenizers` library's file), and
* GPT-2's original pair `vocab.json` (token -> id) + `merges.txt` (one merge per line).

Both describe the same thing we do: text split by a regex into chunks, each chunk as
UTF-8 bytes spelled in GPT-2's printable alphabet (`bytes_to_unicode`), then merges
applied lowest rank first. So the conversion is a relabelling, not an approximation:

    our id of byte b          = b
    our id of merge number r  = 256 + r          (the token that merge builds)
    our id of special token k = 256 + n_merges + k

Hugging Face files are free to number tokens differently (GPT-2 puts the printable
bytes first; a `tokenizers`-trained vocabulary starts with its special tokens), so the
conversion also returns `ids`: Hugging Face id -> our id. When a vocabulary is already
in our order (any tokenizer we exported) that list is the identity and the ids are
identical; otherwise importing a model permutes its embedding rows by it, so the same
text still gives the same logits. An id no token uses becomes a reserved special token.

What cannot be expressed as our BPE is refused with a one-line reason: another model
type (WordPiece, Unigram), a normaliser, a prefix space, a pre-tokenizer other than a
regex split followed by the byte-level step, merges that use a token before it exists.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from ..errors import ScratchLMError
from ..tokenizer.bpe import BPETokenizer
from ..tokenizer.bpe_train import bytes_to_unicode
from ..tokenizer.regex_patterns import GPT2_PATTERN


@dataclass
class ConvertedTokenizer:
    """Our tokenizer and `ids[hf_id] = our_id` (a permutation of range(vocab_size))."""

    tokenizer: BPETokenizer
    ids: list[int]
    source: str  # which file(s) it came from, for messages

    @property
    def identity(self) -> bool:
        return all(i == j for i, j in enumerate(self.ids))


def _read_json(path: Path):
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ScratchLMError(f"{path} is not valid JSON ({e})") from None


def _split_pattern(pre, where: str) -> str:
    """The regex a `tokenizer.json` pre-tokenizer splits with; refuse anything we cannot reproduce."""
    if not isinstance(pre, dict):
        raise ScratchLMError(f"{where}: no pre-tokenizer; scratchlm reads byte-level BPE tokenizers only")
    steps = pre.get("pretokenizers", []) if pre.get("type") == "Sequence" else [pre]
    kinds = [s.get("type") for s in steps]
    byte_level = steps[-1] if kinds and kinds[-1] == "ByteLevel" else None
    if byte_level is None:
        raise ScratchLMError(f"{where}: the pre-tokenizer ({' + '.join(map(str, kinds))}) is not byte-level; "
                             "scratchlm reads byte-level BPE tokenizers (GPT-2 style) only")
    if byte_level.get("add_prefix_space"):
        raise ScratchLMError(f"{where}: add_prefix_space=true (a space is added before the text) is not supported")
    if kinds == ["ByteLevel"] and byte_level.get("use_regex", True):
        return GPT2_PATTERN  # the ByteLevel step's own regex is GPT-2's
    if (len(steps) == 2 and kinds[0] == "Split" and not byte_level.get("use_regex", True)
            and steps[0].get("behavior") == "Isolated" and not steps[0].get("invert")
            and isinstance(steps[0].get("pattern"), dict) and "Regex" in steps[0]["pattern"]):
        return steps[0]["pattern"]["Regex"]
    raise ScratchLMError(f"{where}: the pre-tokenizer ({' + '.join(map(str, kinds))}) is not a regex split followed "
                         "by the byte-level step; scratchlm cannot reproduce it")


def _read_tokenizer_json(path: Path) -> tuple[dict[str, int], list[tuple[str, str]], dict[str, int], str]:
    d = _read_json(path)
    model = d.get("model") if isinstance(d, dict) else None
    if not isinstance(model, dict) or model.get("type") != "BPE":
        kind = model.get("type") if isinstance(model, dict) else None
        raise ScratchLMError(f"{path}: a {kind or 'unknown'} tokenizer model; scratchlm reads BPE tokenizers only")
    for key in ("continuing_subword_prefix", "end_of_word_suffix"):
        if model.get(key):
            raise ScratchLMError(f"{path}: {key}={model[key]!r} is not byte-level BPE; not supported")
    if model.get("byte_fallback"):
        raise ScratchLMError(f"{path}: byte_fallback (SentencePiece-style BPE) is not supported; only byte-level BPE")
    if d.get("normalizer"):
        raise ScratchLMError(f"{path}: it normalises text first ({d['normalizer'].get('type')}); scratchlm does not")
    pattern = _split_pattern(d.get("pre_tokenizer"), str(path))
    # merges: "left right" strings (older files) or [left, right] pairs (newer ones)
    merges = [tuple(m.split(" ")) if isinstance(m, str) else tuple(m) for m in model.get("merges", [])]
    added = {t["content"]: t["id"] for t in d.get("added_tokens") or []}
    return dict(model.get("vocab") or {}), merges, added, pattern


def _read_vocab_merges(folder: Path) -> tuple[dict[str, int], list[tuple[str, str]], dict[str, int], str]:
    vocab = _read_json(folder / "vocab.json")
    if not isinstance(vocab, dict):
        raise ScratchLMError(f"{folder / 'vocab.json'} is not a token -> id object")
    lines = (folder / "merges.txt").read_text(encoding="utf-8").splitlines()
    merges = []
    for n, line in enumerate(lines, 1):
        if not line.strip() or (n == 1 and line.startswith("#version")):
            continue
        parts = line.split(" ")
        if len(parts) != 2:
            raise ScratchLMError(f"{folder / 'merges.txt'} line {n} is not 'left right': {line[:40]!r}")
        merges.append((parts[0], parts[1]))
    added = {}
    extra = folder / "added_tokens.json"
    if extra.exists():
        added = _read_json(extra)
    return vocab, merges, added, GPT2_PATTERN


def convert(vocab: dict[str, int], merges: list[tuple[str, str]], added: dict[str, int], pattern: str,
            where: str) -> ConvertedTokenizer:
    """Build our tokenizer from a byte-level vocabulary and merge list (see the module docstring)."""
    b2u = bytes_to_unicode()
    ours: dict[str, int] = {}  # token (in the byte alphabet) -> our id
    for b in range(256):
        if b2u[b] not in vocab:
            raise ScratchLMError(f"{where}: the vocabulary has no token for byte {b} ({b2u[b]!r}); "
                                 "a byte-level BPE needs all 256")
        ours[b2u[b]] = b
    pairs = []
    for r, (left, right) in enumerate(merges):
        if left not in ours or right not in ours:
            raise ScratchLMError(f"{where}: merge {r} ({left} {right}) uses a token no earlier merge builds")
        token = left + right
        if token not in vocab:
            raise ScratchLMError(f"{where}: merge {r} builds {token!r}, which is not in the vocabulary")
        if token in ours:
            raise ScratchLMError(f"{where}: merge {r} builds {token!r} a second time")
        ours[token] = 256 + r
        pairs.append((ours[left], ours[right]))
    everything = {**vocab, **added}
    if len(set(everything.values())) != len(everything):
        raise ScratchLMError(f"{where}: two tokens share an id")
    # Ids nobody uses (cl100k has a hole at 100256) become reserved special tokens, so every
    # id up to the largest keeps its place (and its embedding row on import).
    used = set(everything.values())
    for i in range(max(used) + 1):
        if i not in used:
            everything[f"<|reserved_{i}|>"] = i
    # Whatever no byte or merge makes is a special token (GPT-2's <|endoftext|>), kept in id order.
    specials = sorted((i, s) for s, i in everything.items() if s not in ours)
    tok = BPETokenizer(pairs, pattern=pattern, special_tokens=[s for _, s in specials])
    for s, our_id in tok.special_tokens.items():
        ours[s] = our_id
    if min(used) < 0 or len(everything) != tok.vocab_size:
        raise ScratchLMError(f"{where}: token ids are not 0..{len(everything) - 1}, each used once")
    ids = [0] * len(everything)
    for s, i in everything.items():
        ids[i] = ours[s]
    return ConvertedTokenizer(tok, ids, where)


def read_hf_tokenizer(folder: str | Path) -> ConvertedTokenizer:
    """Our tokenizer from a folder's `tokenizer.json`, else its `vocab.json` + `merges.txt`."""
    folder = Path(folder)
    if (folder / "tokenizer.json").exists():
        where = str(folder / "tokenizer.json")
        return convert(*_read_tokenizer_json(folder / "tokenizer.json"), where=where)
    if (folder / "vocab.json").exists() and (folder / "merges.txt").exists():
        return convert(*_read_vocab_merges(folder), where=str(folder / "vocab.json + merges.txt"))
    raise ScratchLMError(f"{folder} has no tokenizer (tokenizer.json, or vocab.json + merges.txt)")
