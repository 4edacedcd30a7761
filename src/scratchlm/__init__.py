"""scratchlm: a GPT-style language model built from scratch, with a look inside.

The core path a learner reads in one sitting:
  tokenizer/  text -> integer ids (byte-level BPE, written out)
  model/      attention, transformer block, GPT
  train/      the training loop, optimizer, schedule, checkpoints
  generate.py sampling with a KV cache
"""

__version__ = "0.1.0"
