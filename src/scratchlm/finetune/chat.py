"""A conversation with a fine-tuned model that stays within its context.

The model sees at most `block_size` tokens: the whole conversation in the chat template, plus
room for the answer it is writing. When the conversation grows past that, the oldest turns
are dropped first (a user turn together with the answer to it), and the caller is told how
many, so the screen can say so. A single message too long for the context keeps its end.
The answer is generated token by token and handed back as text as soon as each piece is
complete (a byte-level token may end halfway through a character), stopping at `<|end|>`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from ..errors import ScratchLMError
from ..inference import generate_tokens
from .data import ASSISTANT, END, chat_ids, encode_conversation


@dataclass
class Conversation:
    """The turns so far, and the model and tokenizer that answer them."""
    model: object
    tok: object
    reply_room: int = 64  # tokens kept free for the answer (at most a quarter of the context)
    messages: list[dict] = field(default_factory=list)

    def __post_init__(self):
        self.ids = chat_ids(self.tok)  # a clear error for a run that was not fine-tuned
        self.reply_room = max(1, min(self.reply_room, self.model.config.block_size // 4))

    def prompt(self, text: str) -> tuple[list[int], int, int]:
        """(prompt ids, turns dropped, tokens cut) for a new user message: the newest turns that fit, then
        <|assistant|>. Tokens are cut only from the start of a single message longer than the context."""
        self.messages.append({"role": "user", "content": text})
        budget = self.model.config.block_size - self.reply_room - 1  # -1: the <|assistant|> opener
        dropped = 0
        while True:
            ids, _ = encode_conversation(self.tok, self.messages)
            if len(ids) <= budget or len(self.messages) == 1:
                break
            self.messages = self.messages[2:]  # the oldest exchange: a user turn and its answer
            dropped += 2
        cut = max(0, len(ids) - budget)
        if cut:  # one message longer than the context: keep its opener and its end (the question)
            ids = [ids[0]] + ids[cut + 1:]
        return ids + [self.ids[ASSISTANT]], dropped, cut

    def reply(self, prompt: list[int], max_new_tokens: int, temperature: float, top_k: int, top_p: float,
              generator: torch.Generator):
        """Yield the answer's text piece by piece; the finished answer is added to the conversation."""
        room = self.model.config.block_size - len(prompt)
        if room < 1:
            raise ScratchLMError("no room left in the context for an answer")
        device = next(self.model.parameters()).device
        decoder = self.tok.stream_decoder()
        end, out = self.ids[END], []
        for nxt in generate_tokens(self.model, torch.tensor([prompt], device=device), min(max_new_tokens, room),
                                   temperature, top_k, top_p, generator):
            t = int(nxt[0, 0])
            if t == end:
                break
            out.append(t)
            piece = decoder.feed([t])
            if piece:
                yield piece
        tail = decoder.flush()
        if tail:
            yield tail
        self.messages.append({"role": "assistant", "content": self.tok.decode(out)})
