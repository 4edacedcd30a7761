"""Supervised fine-tuning (an extra): teach a pretrained model to answer in a chat format.

    data.py       JSONL conversations → the chat template → token ids with a loss mask → padded batches
    questions.py  the built-in reading-question task, generated from the plays
    sft.py        the fine-tuning job: grow the vocabulary, then the core Trainer on the new batches
    evaluate.py   exact-match accuracy on a question set, with baselines
    chat.py       a conversation that stays within the model's context, streamed answers

The core (`scratchlm.train`, `scratchlm.model`, ...) never imports this package.
"""
