"""`scratchlm chat`: talk to a fine-tuned run in the terminal; answers stream as they are generated."""

from __future__ import annotations

import argparse

import torch

from ..errors import ScratchLMError
from ..finetune.chat import Conversation
from ..inference import load_run
from .common import no_extra_args

NAME = "chat"
HELP = "chat with a fine-tuned run (see `scratchlm finetune`); answers stream as they are written"


def add_parser(sub) -> argparse.ArgumentParser:
    p = sub.add_parser(NAME, help=HELP, allow_abbrev=False,
                       description="A terminal chat with a fine-tuned run. Type a message and press Enter; an empty "
                                   "line or Ctrl-D ends the chat, /reset starts a new conversation. The conversation "
                                   "is kept within the model's context: the oldest turns are dropped first.")
    p.add_argument("path", metavar="RUN_DIR_OR_CHECKPOINT")
    p.add_argument("--temperature", type=float, default=0.7, help="0 = always the most likely token (default 0.7)")
    p.add_argument("--top-p", type=float, default=0.95, help="nucleus sampling (default 0.95; 1 = off)")
    p.add_argument("--top-k", type=int, default=0, help="keep the k most likely tokens (default 0 = off)")
    p.add_argument("--seed", type=int, default=1337)
    p.add_argument("--max-new-tokens", type=int, default=64, help="longest answer, in tokens (default 64)")
    p.set_defaults(run=run)
    return p


def run(args, rest: list[str]) -> int:
    no_extra_args(rest)
    if args.temperature < 0 or not 0 < args.top_p <= 1 or args.top_k < 0 or args.max_new_tokens < 1:
        raise ScratchLMError("--temperature must be >= 0, --top-p in (0, 1], --top-k >= 0, --max-new-tokens >= 1")
    r = load_run(args.path)
    conv = Conversation(r.model, r.tokenizer, reply_room=args.max_new_tokens)
    gen = torch.Generator().manual_seed(args.seed)
    print(f"chatting with {r.checkpoint} (context {r.model.config.block_size} tokens). "
          "Empty line or Ctrl-D: quit; /reset: a new conversation.", flush=True)
    while True:
        try:
            text = input("you> ")
        except EOFError:
            print()
            return 0
        if not text.strip():
            return 0
        if text.strip() == "/reset":
            conv.messages.clear()
            print("(new conversation)")
            continue
        # a typed "\n" stands for a line break: a passage and its question fit on one input line
        prompt, dropped, cut = conv.prompt(text.replace("\\n", "\n"))
        if dropped:
            print(f"(the conversation outgrew the context: dropped the oldest {dropped} turn(s))")
        if cut:
            print(f"(your message is longer than the context: its first {cut} token(s) were left out)")
        print("model> ", end="", flush=True)
        for piece in conv.reply(prompt, args.max_new_tokens, args.temperature, args.top_k, args.top_p, gen):
            print(piece, end="", flush=True)
        print(flush=True)
