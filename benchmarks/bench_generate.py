"""Generation speed: scratchlm's KV-cached sampler vs Hugging Face `GPT2LMHeadModel.generate`.

Batch 1, a one-token prompt, N new tokens (default 500), random weights (speed does not
depend on them), greedy decoding for all so they do the same work, same shapes:
  small       4 layers, 4 heads, 128 wide
  shakespeare 6 layers, 6 heads, 384 wide
All models get a context of 512 so 500 new tokens fit (HF's GPT-2 cannot slide past it).

Each contender runs in fp32 and with bf16 and fp16 weights, on 1 and 2 threads; rounds are
interleaved (this VM's speed drifts) and each keeps its best round. The ratios compare
like with like (same dtype) and each side at its best setting. "scratchlm, forward"
is our sampler without the flat decoder (`fast=False`): every token through `GPT.forward`.

    python benchmarks/bench_generate.py [--new-tokens 500] [--rounds 3] [--shapes small,shakespeare]
"""

from __future__ import annotations

import argparse
import time

import torch

from scratchlm.inference.generate import generate_tokens
from scratchlm.model import GPT, GPTConfig

SHAPES = {"small": (4, 4, 128), "shakespeare": (6, 6, 384)}
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--new-tokens", type=int, default=500)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--vocab", type=int, default=65)
    ap.add_argument("--shapes", default="small,shakespeare")
    ap.add_argument("--threads", default="1,2", help="thread counts to try, comma-separated")
    args = ap.parse_args()
    from transformers import GPT2Config, GPT2LMHeadModel
    from transformers.utils import logging

    logging.set_verbosity_error()
    n = args.new_tokens
    threads = [int(t) for t in args.threads.split(",")]
    print(f"torch {torch.__version__}; batch 1, {n} new tokens, greedy; threads {threads}; best of {args.rounds} rounds")
    for name in args.shapes.split(","):
        L, H, C = SHAPES[name]
        torch.manual_seed(0)
        ours = GPT(GPTConfig(vocab_size=args.vocab, block_size=512, n_layer=L, n_head=H, n_embd=C)).eval()
        hf32 = GPT2LMHeadModel(GPT2Config(vocab_size=args.vocab, n_positions=512, n_layer=L, n_head=H, n_embd=C,
                                          bos_token_id=0, eos_token_id=None, pad_token_id=0)).eval()
        hf_models = {d: hf32 if d == "fp32" else GPT2LMHeadModel(hf32.config).eval().to(dt) for d, dt in DTYPES.items()}
        prompt = torch.zeros(1, 1, dtype=torch.long)

        def ours_run(dtype, fast=True):
            def run():
                for _ in generate_tokens(ours, prompt, n, temperature=0.0, fast=fast, dtype=dtype):
                    pass
            return run

        def hf_run(model):
            def run():
                with torch.inference_mode():
                    out = model.generate(prompt, max_new_tokens=n, min_new_tokens=n, do_sample=False, use_cache=True,
                                         attention_mask=torch.ones_like(prompt))
                assert out.shape[1] == n + 1
            return run

        contenders = {("scratchlm", d): ours_run(dt) for d, dt in DTYPES.items()}
        contenders[("scratchlm, forward", "fp32")] = ours_run(None, fast=False)
        contenders.update({("transformers", d): hf_run(m) for d, m in hf_models.items()})
        best: dict[tuple, float] = {}
        for r in range(args.rounds + 1):  # round 0 warms up
            for th in threads:
                torch.set_num_threads(th)
                for key, run in contenders.items():
                    t0 = time.perf_counter()
                    run()
                    if r:
                        best[key + (th,)] = max(best.get(key + (th,), 0.0), n / (time.perf_counter() - t0))
        print(f"\n{name} shape ({L} layers, {H} heads, {C} wide), tokens/s:")
        print(f"  {'contender':<20} {'dtype':<6}" + "".join(f" {f'{t} thr':>9}" for t in threads))
        for key in contenders:
            print(f"  {key[0]:<20} {key[1]:<6}" + "".join(f" {best[key + (t,)]:>9.0f}" for t in threads))

        def top(who, dtypes=tuple(DTYPES)):
            return max((best[(who, d, t)], d, t) for d in dtypes for t in threads)

        for d in DTYPES:
            o, h = top("scratchlm", (d,)), top("transformers", (d,))
            print(f"  {d} vs {d}: {o[0]:.0f} vs {h[0]:.0f} tok/s = {o[0] / h[0]:.2f}x")
        o, h = top("scratchlm"), top("transformers")
        print(f"  best vs best: scratchlm {o[0]:.0f} ({o[1]}, {o[2]} thr) vs transformers {h[0]:.0f} "
              f"({h[1]}, {h[2]} thr) = {o[0] / h[0]:.2f}x (target 3x)", flush=True)


if __name__ == "__main__":
    main()
