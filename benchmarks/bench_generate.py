"""Generation speed: scratchlm's KV-cached sampler vs Hugging Face `GPT2LMHeadModel.generate`.

Batch 1, a one-token prompt, N new tokens (default 500), random weights (speed does not
depend on them), greedy decoding for both so they do the same work, same shapes:
  small       4 layers, 4 heads, 128 wide
  shakespeare 6 layers, 6 heads, 384 wide
Both models get a context of 512 so 500 new tokens fit (HF's GPT-2 cannot slide past it).

    python benchmarks/bench_generate.py [--new-tokens 500] [--repeats 3]
"""

from __future__ import annotations

import argparse
import time

import torch

from scratchlm.generate import generate_tokens
from scratchlm.model import GPT, GPTConfig

SHAPES = {"small": (4, 4, 128), "shakespeare": (6, 6, 384)}


def time_best(fn, repeats: int) -> float:
    fn()  # warm-up
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--new-tokens", type=int, default=500)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--vocab", type=int, default=65)
    ap.add_argument("--threads", type=int, default=0)
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    from transformers import GPT2Config, GPT2LMHeadModel
    from transformers.utils import logging

    logging.set_verbosity_error()
    n = args.new_tokens
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; batch 1, {n} new tokens, greedy")
    print(f"{'shape':<12} {'scratchlm tok/s':>16} {'transformers tok/s':>19} {'ratio':>7}")
    for name, (L, H, C) in SHAPES.items():
        torch.manual_seed(0)
        ours = GPT(GPTConfig(vocab_size=args.vocab, block_size=512, n_layer=L, n_head=H, n_embd=C)).eval()
        hf = GPT2LMHeadModel(GPT2Config(vocab_size=args.vocab, n_positions=512, n_layer=L, n_head=H, n_embd=C,
                                        bos_token_id=0, eos_token_id=None, pad_token_id=0)).eval()
        prompt = torch.zeros(1, 1, dtype=torch.long)

        def run_ours():
            for _ in generate_tokens(ours, prompt, n, temperature=0.0):
                pass

        def run_hf():
            with torch.inference_mode():
                out = hf.generate(prompt, max_new_tokens=n, min_new_tokens=n, do_sample=False, use_cache=True,
                                  attention_mask=torch.ones_like(prompt))
            assert out.shape[1] == n + 1

        t_ours, t_hf = time_best(run_ours, args.repeats), time_best(run_hf, args.repeats)
        print(f"{name:<12} {n / t_ours:>16.0f} {n / t_hf:>19.0f} {t_hf / t_ours:>6.2f}x", flush=True)


if __name__ == "__main__":
    main()
