"""Fine-tuning data: JSONL conversations → the chat template → token ids with a loss mask → padded batches.

Input is one JSON object per line, in either of the field's two usual shapes:

    {"messages": [{"role": "user", "content": "Who speaks first?"}, {"role": "assistant", "content": "HAMLET"}]}
    {"prompt": "Who speaks first?", "response": "HAMLET"}

The chat template wraps each turn in special tokens that ordinary text can never produce
(the tokenizer encodes a typed "<|end|>" as plain characters):

    <|user|>Who speaks first?<|end|><|assistant|>HAMLET<|end|>

A "system" message, if any, is put in front of the first user message (a blank line between):
a model this small gains nothing from a role of its own.

**The loss mask.** A pretrained model learns to predict every token; a fine-tuned one should
learn to *answer*, not to write questions. So the targets are the next tokens as usual, but
every target that is not an assistant token is set to -100, the `ignore_index` default of
`F.cross_entropy` that `GPT.forward` calls: those positions add nothing to the loss or the
gradient. The `<|end|>` closing an assistant turn is trained, so the model learns to stop.

**Batches.** One conversation per row, right-padded to the longest row of the micro-batch
(pads: targets -100). The causal mask already stops a token from seeing anything to its
right, so a row's real tokens never see its padding, and rows never see each other: there
is no attention across examples. (Packing several conversations into one row would waste
no compute on padding, but then a conversation could attend to the one before it unless the
model took a block-diagonal mask, which it does not.) Batches group conversations of similar
length (`ChatBatches`), so padding to the longest row wastes little.
"""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..errors import ScratchLMError

IGNORE = -100  # F.cross_entropy's default ignore_index: a target that counts for nothing
USER, ASSISTANT, END = "<|user|>", "<|assistant|>", "<|end|>"
CHAT_TOKENS = (USER, ASSISTANT, END)
ROLES = ("system", "user", "assistant")
TEMPLATE_FILE = "chat_template.json"


# ---------------------------------------------------------------- reading JSONL


def parse_record(obj, where: str) -> list[dict]:
    """One JSONL record → [{'role': 'user'|'assistant', 'content': str}, ...], alternating, user first.
    `where` names the record in errors ("data.jsonl line 7")."""
    if not isinstance(obj, dict):
        raise ScratchLMError(f"{where}: expected a JSON object, got {type(obj).__name__}")
    if "messages" in obj:
        messages = obj["messages"]
        if not isinstance(messages, list):
            raise ScratchLMError(f"{where}: 'messages' must be a list of {{'role', 'content'}} objects")
    elif "prompt" in obj or "response" in obj:
        for key in ("prompt", "response"):
            if not isinstance(obj.get(key), str):
                raise ScratchLMError(f"{where}: '{key}' must be a string (a prompt/response record has both)")
        messages = [{"role": "user", "content": obj["prompt"]}, {"role": "assistant", "content": obj["response"]}]
    else:
        raise ScratchLMError(f"{where}: no 'messages' list and no 'prompt'/'response' pair "
                             f"(keys found: {', '.join(map(repr, obj)) or 'none'})")
    if not messages:
        raise ScratchLMError(f"{where}: empty conversation ('messages' is an empty list)")
    out, system = [], []
    for i, m in enumerate(messages):
        if not isinstance(m, dict) or "role" not in m or "content" not in m:
            raise ScratchLMError(f"{where}: message {i + 1} must be an object with 'role' and 'content'")
        role, content = m["role"], m["content"]
        if role not in ROLES:
            raise ScratchLMError(f"{where}: message {i + 1} has unknown role {role!r} (roles: {', '.join(ROLES)})")
        if not isinstance(content, str):
            raise ScratchLMError(f"{where}: message {i + 1} content must be a string, not {type(content).__name__}")
        if role == "system":
            if out:
                raise ScratchLMError(f"{where}: message {i + 1}: a system message must come before the conversation")
            system.append(content)
            continue
        expected = "user" if len(out) % 2 == 0 else "assistant"
        if role != expected:
            raise ScratchLMError(f"{where}: message {i + 1} is from {role!r} but {expected!r} should speak now "
                                 "(turns alternate, the user first)")
        out.append({"role": role, "content": content})
    if not out:
        raise ScratchLMError(f"{where}: empty conversation (only a system message)")
    if system:
        out[0] = {"role": "user", "content": "\n\n".join(system + [out[0]["content"]])}
    return out


def read_jsonl(path: str | Path) -> list[list[dict]]:
    """Every conversation in a JSONL file, each checked; the first bad line is an error naming it."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ScratchLMError(f"data file not found: {path}") from None
    except IsADirectoryError:
        raise ScratchLMError(f"{path} is a folder; --data takes a .jsonl file") from None
    except UnicodeDecodeError as e:
        raise ScratchLMError(f"{path} is not UTF-8 text ({e.reason} at byte {e.start})") from None
    conversations = []
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue  # blank lines are allowed (a trailing newline, spacing)
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as e:
            raise ScratchLMError(f"{path} line {n}: not valid JSON ({e.msg} at column {e.colno})") from None
        conversations.append(parse_record(obj, f"{path} line {n}"))
    if not conversations:
        raise ScratchLMError(f"{path} holds no conversations (one JSON object per line expected)")
    return conversations


# ---------------------------------------------------------------- the template


def with_chat_tokens(tok):
    """(tokenizer, added names): the tokenizer with <|user|>, <|assistant|>, <|end|> added as special
    tokens after the existing ones. Every old id keeps its meaning, so the model's old embedding rows
    stay valid and only new rows are needed. A tokenizer that has them already is returned as it is."""
    specials = dict(getattr(tok, "special_tokens", None) or {})
    missing = [t for t in CHAT_TOKENS if t not in specials]
    if not missing:
        return tok, []
    if getattr(tok, "type", None) != "bpe":
        raise ScratchLMError(f"fine-tuning needs a byte-level BPE tokenizer (special tokens for the chat template); "
                             f"this run has a {getattr(tok, 'type', type(tok).__name__)!r} tokenizer")
    # ids after the merges, in order: the old specials first, so they keep their ids
    grown = type(tok)(tok.merges, pattern=tok.pattern, special_tokens=list(specials) + missing, meta=tok.meta)
    return grown, missing


def chat_ids(tok) -> dict[str, int]:
    """{'<|user|>': id, '<|assistant|>': id, '<|end|>': id}; a clear error for a tokenizer without them."""
    specials = getattr(tok, "special_tokens", None) or {}
    missing = [t for t in CHAT_TOKENS if t not in specials]
    if missing:
        raise ScratchLMError(f"the tokenizer has no chat tokens ({', '.join(missing)}): this run was not fine-tuned "
                             "with `scratchlm finetune`")
    return {t: specials[t] for t in CHAT_TOKENS}


def encode_plain(tok, texts: list[str]) -> list[list[int]]:
    """Token ids of each text as plain text: special-token names typed in it stay characters."""
    if hasattr(tok, "encode_ordinary_batch"):  # BPE: all texts' new chunks merged together (fast)
        return tok.encode_ordinary_batch(texts)
    return [tok.encode(t, disallowed_special=()) for t in texts]


def render(messages: list[dict]) -> str:
    """The template as text (for reading; training encodes the specials as single tokens)."""
    opener = {"user": USER, "assistant": ASSISTANT}
    return "".join(f"{opener[m['role']]}{m['content']}{END}" for m in messages)


def encode_conversation(tok, messages: list[dict], content_ids: list[list[int]] | None = None
                        ) -> tuple[list[int], list[bool]]:
    """(ids, trained): the conversation in the template, and for each token whether the model is
    trained to predict it (the assistant's content and the <|end|> after it)."""
    sp = chat_ids(tok)
    content_ids = content_ids if content_ids is not None else encode_plain(tok, [m["content"] for m in messages])
    ids, trained = [], []
    for m, c in zip(messages, content_ids):
        answer = m["role"] == "assistant"
        opener = sp[ASSISTANT] if answer else sp[USER]
        ids += [opener, *c, sp[END]]
        trained += [False] + [answer] * (len(c) + 1)
    return ids, trained


def prompt_ids(tok, messages: list[dict]) -> list[int]:
    """Ids that ask the model for the next assistant turn: the conversation, then <|assistant|>."""
    if not messages or messages[-1]["role"] != "user":
        raise ScratchLMError("a prompt for the assistant must end with a user message")
    ids, _ = encode_conversation(tok, messages)
    return ids + [chat_ids(tok)[ASSISTANT]]


def decode_conversation(tok, ids) -> list[dict]:
    """Token ids in the template → messages (the inverse of `encode_conversation`)."""
    sp = chat_ids(tok)
    role_of = {sp[USER]: "user", sp[ASSISTANT]: "assistant"}
    messages, role, content = [], None, []
    for i in (ids.tolist() if hasattr(ids, "tolist") else ids):
        if role is None:
            if i not in role_of:
                raise ScratchLMError(f"token {i} outside a turn: a turn starts with {USER} or {ASSISTANT}")
            role, content = role_of[i], []
        elif i == sp[END]:
            messages.append({"role": role, "content": tok.decode(content)})
            role = None
        elif i in role_of:
            raise ScratchLMError(f"a new turn starts before {END} closed the {role}'s turn")
        else:
            content.append(i)
    if role is not None:
        messages.append({"role": role, "content": tok.decode(content)})  # an unfinished last turn
    return messages


def template_description(tok, added: list[str], old_vocab_size: int) -> dict:
    """What chat_template.json in a fine-tuned run folder says."""
    return {
        "format": "scratchlm-chat-template", "version": 1,
        "template": f"{USER}{{user}}{END}{ASSISTANT}{{assistant}}{END} ... (turns alternate, the user first)",
        "token_ids": chat_ids(tok),
        "added_tokens": added,
        "embedding_rows": (f"rows 0..{old_vocab_size - 1} kept from the base model; rows {old_vocab_size}.."
                           f"{tok.vocab_size - 1} (the added tokens) start as the mean of the old rows"
                           if added else "the base model's tokenizer had the chat tokens already"),
        "system_messages": "put in front of the first user message, a blank line between",
        "loss_on": f"the assistant's tokens and the {END} that closes each assistant turn",
        "content_encoding": "plain text: special-token names typed in a message are ordinary characters",
    }


# ---------------------------------------------------------------- examples and batches


@dataclass
class Examples:
    """Encoded conversations ready for training: each row's inputs and targets (targets -100 where
    not trained), and how many conversations were dropped for not fitting in the context."""
    inputs: list[np.ndarray]
    targets: list[np.ndarray]
    dropped: int = 0
    no_answer: int = 0  # conversations with no assistant turn: nothing to learn from them (dropped)

    def __len__(self) -> int:
        return len(self.inputs)

    @property
    def n_tokens(self) -> int:
        return int(sum(len(x) for x in self.inputs))

    @property
    def n_trained(self) -> int:
        return int(sum(int((y != IGNORE).sum()) for y in self.targets))


def make_examples(tok, conversations: list[list[dict]], block_size: int) -> Examples:
    """Encode conversations; one longer than the context (block_size + 1 tokens: inputs and the
    targets shifted by one) is dropped and counted, never cut, so no answer is trained half-seen."""
    contents = encode_plain(tok, [m["content"] for conv in conversations for m in conv])
    inputs, targets, dropped, no_answer, k = [], [], 0, 0, 0
    for conv in conversations:
        ids, trained = encode_conversation(tok, conv, contents[k : k + len(conv)])
        k += len(conv)
        if not any(trained):
            no_answer += 1
            continue
        if len(ids) > block_size + 1:
            dropped += 1
            continue
        ids_arr = np.asarray(ids, dtype=np.int64)
        y = ids_arr[1:].copy()
        y[~np.asarray(trained[1:], dtype=bool)] = IGNORE  # target j is token j+1: trained if token j+1 is
        inputs.append(ids_arr[:-1])
        targets.append(y)
    return Examples(inputs, targets, dropped, no_answer)


def collate(rows_x: list[np.ndarray], rows_y: list[np.ndarray], pad_id: int,
            device) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-pad rows to the longest: inputs with `pad_id` (any real id: no target looks at it),
    targets with -100."""
    T = max(len(x) for x in rows_x)
    x = np.full((len(rows_x), T), pad_id, dtype=np.int64)
    y = np.full((len(rows_x), T), IGNORE, dtype=np.int64)
    for r, (xr, yr) in enumerate(zip(rows_x, rows_y)):
        x[r, : len(xr)], y[r, : len(yr)] = xr, yr
    device = torch.device(device)
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    if device.type == "cuda":
        return xt.pin_memory().to(device, non_blocking=True), yt.pin_memory().to(device, non_blocking=True)
    return xt.to(device), yt.to(device)


class ChatBatches:
    """Padded batches of conversations: the fine-tuning batch source for the core Trainer, with the
    interface of `data.dataset.Batches` (`get` for training, `eval_windows` for evaluation).

    Training walks the examples in epochs, each a fresh shuffle seeded by (seed, epoch): every
    example is seen once per epoch. Sequence k of the run is example perm(k // N)[k % N], and the
    k of a row follows from (step, micro-batch, row) alone, so resuming at a step draws exactly
    what the uninterrupted run would have, on any number of ranks.

    The shuffle groups by length (as `group_by_length` does in other trainers): the shuffled
    examples are cut into windows of GROUP batches, each window is sorted by length and cut into
    batches, and the batches are shuffled. A batch then holds conversations of similar length and
    pads little; a step costs what its longest row costs, so more steps fit in the same time."""

    GROUP = 32  # batches per window sorted by length: large enough to match lengths, small enough to mix

    def __init__(self, examples: Examples, batch_size: int, pad_id: int, device, seed: int, split: str = "training"):
        if len(examples) == 0:
            raise ScratchLMError(f"no {split} conversations fit in the model's context"
                                 + (f" ({examples.dropped} were too long)" if examples.dropped else ""))
        self.examples, self.batch_size, self.pad_id = examples, batch_size, pad_id
        self.device, self.seed = torch.device(device), seed
        self.lengths = np.array([len(x) for x in examples.inputs])
        self._perms: dict[int, np.ndarray] = {}

    def __len__(self) -> int:
        return len(self.examples)

    @property
    def num_tokens(self) -> int:  # BatchSource: tokens in the split, for the start-up summary
        return self.examples.n_tokens

    @functools.cached_property
    def data(self) -> np.ndarray:  # BatchSource: the conversations' tokens end to end (the doctor's statistics)
        return np.concatenate(self.examples.inputs)

    def _perm(self, epoch: int) -> np.ndarray:
        if epoch not in self._perms:
            if len(self._perms) > 4:
                self._perms.clear()
            rng = np.random.default_rng([self.seed, epoch])
            perm, B = rng.permutation(len(self.examples)), self.batch_size
            W = B * self.GROUP
            windows = [perm[i: i + W] for i in range(0, len(perm), W)]
            batches = [w[j: j + B] for w in (w[np.argsort(self.lengths[w], kind="stable")] for w in windows)
                       for j in range(0, len(w), B)]
            self._perms[epoch] = np.concatenate([batches[i] for i in rng.permutation(len(batches))])
        return self._perms[epoch]

    def indices(self, step: int, micro: int, micro_batch_size: int) -> list[int]:
        """The examples of micro-batch `micro` (numbered over all ranks) of step `step`."""
        n = len(self.examples)
        first = step * self.batch_size + micro * micro_batch_size
        return [int(self._perm(k // n)[k % n]) for k in range(first, first + micro_batch_size)]

    def get(self, position: int, micro_step: int, micro_batch_size: int) -> tuple[torch.Tensor, torch.Tensor]:
        ix = self.indices(position, micro_step, micro_batch_size)
        return collate([self.examples.inputs[i] for i in ix], [self.examples.targets[i] for i in ix],
                       self.pad_id, self.device)

    def eval_windows(self, n_tokens: int, micro_batch_size: int, rank: int = 0, world: int = 1):
        """The first conversations, in file order, up to about n_tokens tokens (the same every
        evaluation); with several ranks each takes its share."""
        count, total = 0, 0
        for x in self.examples.inputs:
            if total >= n_tokens:
                break
            count, total = count + 1, total + len(x)
        ix = list(range(count))[rank::world]
        for i in range(0, len(ix), micro_batch_size):
            part = ix[i : i + micro_batch_size]
            yield collate([self.examples.inputs[j] for j in part], [self.examples.targets[j] for j in part],
                          self.pad_id, self.device)
