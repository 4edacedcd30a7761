"""Training-step throughput: scratchlm against two references, same process, same data.

    python benchmarks/bench_train.py                 # both shapes, all contenders
    python benchmarks/bench_train.py --shape small --rounds 3

Contenders (same width, depth, heads, context, batch; AdamW; random tokens, vocab 65):
  ours          scratchlm's GPT with its best CPU settings: bf16 autocast (auto dtype),
                fused AdamW, the trainer's allocator setting, flash SDPA
  nanogpt       a plain nanoGPT-style GPT written below (the reference), fp32 and with
                bf16 autocast added
  transformers  Hugging Face GPT2LMHeadModel (SDPA attention), fp32 and bf16 autocast

Each contender runs `--steps` timed steps after a warm-up step; rounds alternate the
contenders so a noisy neighbour on the machine hurts them alike, and each keeps its
best round. MFU = tokens/s × (6N + 12·L·C·T) / the matmul peak measured in this
run. Peak memory is measured separately, one fresh process per contender (resident
memory above the idle process), because a process's peak cannot be reset.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import time

import torch
import torch.nn as nn
import torch.nn.functional as F

SHAPES = {
    "shakespeare": dict(n_layer=6, n_head=6, n_embd=384, block_size=256, batch=64),
    "small": dict(n_layer=4, n_head=4, n_embd=128, block_size=64, batch=12),
}
VOCAB = 65  # Shakespeare's characters


# ---- the reference: a plain nanoGPT-style GPT (fp32, no tricks) -------------------------
class RefAttention(nn.Module):
    def __init__(self, C, H):
        super().__init__()
        self.c_attn, self.c_proj, self.H = nn.Linear(C, 3 * C), nn.Linear(C, C), H

    def forward(self, x):
        B, T, C = x.shape
        q, k, v = self.c_attn(x).split(C, dim=2)
        q, k, v = (t.view(B, T, self.H, C // self.H).transpose(1, 2) for t in (q, k, v))
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        return self.c_proj(y.transpose(1, 2).contiguous().view(B, T, C))


class RefBlock(nn.Module):
    def __init__(self, C, H):
        super().__init__()
        self.ln_1, self.attn, self.ln_2 = nn.LayerNorm(C), RefAttention(C, H), nn.LayerNorm(C)
        self.mlp = nn.Sequential(nn.Linear(C, 4 * C), nn.GELU(approximate="tanh"), nn.Linear(4 * C, C))

    def forward(self, x):
        x = x + self.attn(self.ln_1(x))
        return x + self.mlp(self.ln_2(x))


class RefGPT(nn.Module):
    def __init__(self, n_layer, n_head, n_embd, block_size):
        super().__init__()
        self.wte, self.wpe = nn.Embedding(VOCAB, n_embd), nn.Embedding(block_size, n_embd)
        self.h = nn.ModuleList(RefBlock(n_embd, n_head) for _ in range(n_layer))
        self.ln_f = nn.LayerNorm(n_embd)
        self.lm_head = nn.Linear(n_embd, VOCAB, bias=False)
        self.lm_head.weight = self.wte.weight

    def forward(self, idx, targets):
        x = self.wte(idx) + self.wpe(torch.arange(idx.size(1)))
        for b in self.h:
            x = b(x)
        logits = self.lm_head(self.ln_f(x))
        return F.cross_entropy(logits.view(-1, VOCAB), targets.view(-1))


# ---- contenders -------------------------------------------------------------------------
def build(name: str, shape: dict):
    """(step function, parameter count for 6N) for one contender."""
    torch.manual_seed(0)
    s = shape
    if name.startswith("ours"):
        from scratchlm.model import GPT
        from scratchlm.model.gpt import GPTConfig
        from scratchlm.train.optim import make_optimizer
        from scratchlm.train.runtime import Runtime, pick_dtype

        model = GPT(GPTConfig(vocab_size=VOCAB, block_size=s["block_size"], n_layer=s["n_layer"], n_head=s["n_head"], n_embd=s["n_embd"]))
        opt, _ = make_optimizer(model, 1e-3, 0.1, (0.9, 0.95), "cpu")
        dtype = "fp32" if name == "ours-fp32" else pick_dtype("auto", torch.device("cpu"))[0]
        rt = Runtime(torch.device("cpu"), "", dtype, "")
        n = model.num_params()

        def loss_fn(x, y):
            with rt.autocast():
                return model(x, y)[1]
    elif name.startswith("nanogpt"):
        model = RefGPT(s["n_layer"], s["n_head"], s["n_embd"], s["block_size"])
        opt = torch.optim.AdamW(model.parameters(), lr=1e-3, betas=(0.9, 0.95), weight_decay=0.1)
        n = sum(p.numel() for p in model.parameters()) - model.wpe.weight.numel()
        bf16 = name.endswith("bf16")

        def loss_fn(x, y):
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                return model(x, y)
    else:
        from transformers import GPT2Config, GPT2LMHeadModel

        conf = GPT2Config(vocab_size=VOCAB, n_positions=s["block_size"], n_embd=s["n_embd"], n_layer=s["n_layer"],
                          n_head=s["n_head"], resid_pdrop=0, embd_pdrop=0, attn_pdrop=0)
        try:  # SDPA attention: transformers' fastest on a CPU
            model = GPT2LMHeadModel._from_config(conf, attn_implementation="sdpa")
        except (TypeError, ValueError, ImportError):  # older transformers: eager attention only
            model = GPT2LMHeadModel(conf)
        opt = torch.optim.AdamW(model.parameters(), lr=1e-3, betas=(0.9, 0.95), weight_decay=0.1)
        n = sum(p.numel() for p in model.parameters()) - model.transformer.wpe.weight.numel()
        bf16 = name.endswith("bf16")

        def loss_fn(x, y):
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                return model(input_ids=x, labels=x).loss  # HF shifts labels inside

    model.train()

    def step(x, y):
        loss = loss_fn(x, y)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        return loss

    return step, n


CONTENDERS = ["ours", "ours-fp32", "nanogpt-fp32", "nanogpt-bf16", "transformers-fp32", "transformers-bf16"]


def batch(shape, seed=0):
    g = torch.Generator().manual_seed(seed)
    xy = torch.randint(0, VOCAB, (shape["batch"], shape["block_size"] + 1), generator=g)
    return xy[:, :-1].contiguous(), xy[:, 1:].contiguous()


def flops_per_token(shape, n):
    return 6 * n + 12 * shape["n_layer"] * shape["n_embd"] * shape["block_size"]


def PEAK_DTYPE():
    """The dtype 'ours' trains in here (auto): bf16 where the CPU has it natively, else fp32."""
    from scratchlm.train.runtime import pick_dtype

    return pick_dtype("auto", torch.device("cpu"))[0]


def matmul_peak(seconds=1.0):
    """Measured matmul FLOP/s in the dtype 'ours' uses: the MFU denominator."""
    from scratchlm.train.flops import measure_matmul_peak

    measure_matmul_peak.cache_clear()
    return measure_matmul_peak(torch.bfloat16 if PEAK_DTYPE() == "bf16" else torch.float32, "cpu", 2048, seconds)


def memory_child(name: str, shape_name: str) -> int:
    """Runs in a fresh process: resident bytes added by building and running 2 steps."""
    def rss():
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    if not os.environ.get("BENCH_NO_TUNE"):
        from scratchlm.train.runtime import tune_cpu_allocator

        tune_cpu_allocator()
    idle = rss()
    shape = SHAPES[shape_name]
    step, _ = build(name, shape)
    x, y = batch(shape)
    step(x, y)
    step(x, y)
    from scratchlm.train.memory import rss_peak  # VmHWM: ru_maxrss would carry the parent's peak

    return rss_peak() - idle


def run_shape(shape_name, contenders, steps, rounds, memory):
    shape = SHAPES[shape_name]
    tokens = shape["batch"] * shape["block_size"]
    built = {c: build(c, shape) for c in contenders}
    x, y = batch(shape)
    for c in contenders:  # warm-up: allocator, oneDNN kernel choice
        built[c][0](x, y)
    best = {c: 0.0 for c in contenders}
    peak = matmul_peak()
    for _ in range(rounds):
        for c in contenders:
            t = time.perf_counter()
            for _ in range(steps):
                built[c][0](x, y)
            best[c] = max(best[c], tokens * steps / (time.perf_counter() - t))
        peak = max(peak, matmul_peak(0.5))
    mem = {}
    if memory:
        for c in contenders:
            out = subprocess.run([sys.executable, __file__, "--_memory", c, shape_name], capture_output=True, text=True)
            mem[c] = int(out.stdout.strip().splitlines()[-1]) if out.returncode == 0 else float("nan")
    s = shape
    print(f"\n== {shape_name}: {s['n_layer']} layers, {s['n_head']} heads, {s['n_embd']} wide, context {s['block_size']}, "
          f"batch {s['batch']} ({tokens:,} tokens/step); {torch.get_num_threads()} threads; "
          f"{PEAK_DTYPE()} matmul peak measured {peak / 1e12:.2f} TFLOP/s")
    print(f"{'contender':<20}{'tokens/s':>10}{'vs nanogpt-fp32':>17}{'MFU':>17}{'peak memory':>13}")
    base = best.get("nanogpt-fp32")
    rows = {}
    for c in contenders:
        m = best[c] * flops_per_token(s, built[c][1]) / peak
        ratio = f"{best[c] / base:.2f}×" if base else "-"
        mm = f"{mem[c] / 2**20:.0f} MiB" if c in mem and not math.isnan(mem[c]) else "-"
        print(f"{c:<20}{best[c]:>10,.0f}{ratio:>17}{m:>16.0%}{mm:>13}")
        rows[c] = {"tokens_per_s": best[c], "mfu": m, "peak_memory": mem.get(c)}
    if "ours" in best:
        others = {c: v for c, v in best.items() if not c.startswith("ours")}
        for c, v in others.items():
            print(f"ours / {c}: {best['ours'] / v:.2f}×")
    return {"shape": shape_name, "peak_flops": peak, "rows": rows}


def main():
    if sys.argv[1:2] == ["--_memory"]:
        print(memory_child(sys.argv[2], sys.argv[3]))
        return
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--shape", choices=[*SHAPES, "all"], default="all")
    p.add_argument("--contenders", default=",".join(CONTENDERS))
    p.add_argument("--steps", type=int, default=3)
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--no-memory", action="store_true")
    p.add_argument("--no-allocator-tuning", action="store_true",
                   help="leave glibc's allocator as it is (the setting is process-wide: it speeds up every contender)")
    p.add_argument("--json", help="also write the results here")
    a = p.parse_args()
    if a.no_allocator_tuning:
        os.environ["BENCH_NO_TUNE"] = "1"  # for the memory subprocesses
    else:
        from scratchlm.train.runtime import tune_cpu_allocator

        print("allocator:", tune_cpu_allocator())
    from scratchlm.train.runtime import set_threads

    set_threads(0)
    contenders = a.contenders.split(",")
    from scratchlm.train.runtime import cpu_has_bf16

    if not cpu_has_bf16() and a.contenders == p.get_default("contenders"):
        # without AVX512-BF16/AMX, bf16 autocast runs emulated kernels many times slower than
        # fp32: no one would train that way here, and 'ours' (dtype auto) picks fp32 itself
        contenders = [c for c in contenders if not c.endswith("bf16")]
        print("this CPU has no native bf16 (no AVX512-BF16/AMX): the bf16 contenders are left out")
    results = [run_shape(s, contenders, a.steps, a.rounds, not a.no_memory)
               for s in (SHAPES if a.shape == "all" else [a.shape])]
    if a.json:
        with open(a.json, "w") as f:
            json.dump(results, f, indent=1)


if __name__ == "__main__":
    main()
