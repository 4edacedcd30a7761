"""Will it fit, and how fast? Training memory by formula and by measurement (behind `scratchlm memory`).

First an estimate by formula, before anything is allocated:

    weights      N × 4 bytes            (fp32 master weights, also under bf16 autocast)
    gradients    N × 4 bytes
    AdamW        N × 8 bytes            (two fp32 moments per parameter)
    activations  ≈ B·T·L·17·C values    kept for backward per micro-batch (see below)
                 + B·T·V logits         (and their fp32 copy for the loss)
    KV cache     2·L·T·C per sequence   (generation only: keys and values of every layer)

Activations per token and layer, with flash attention (no T×T matrix kept): the block
input and LayerNorm outputs (3·C), q, k, v (3·C), the attention output and its
projection input (2·C), the MLP's 4·C hidden layer before and after GELU (8·C),
and the residual (C): ≈ 17·C values. With activation checkpointing only each block's
input (C per token and layer) is kept, plus one block's worth while it is recomputed.

Then a measurement: a few real training steps (the trainer's own `train_step`) of each
variant — fp32, bf16 (fp16 on GPUs without bf16), bf16 + activation checkpointing,
bf16 with a 4× smaller micro-batch and 4 accumulation steps — each in a fresh
process so peaks do not mix. Peak memory is the process's resident set size on a
CPU (above the idle process after `import torch`) and `max_memory_allocated` on CUDA.
Data are random tokens: memory and speed do not depend on what the text says.
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from dataclasses import replace

import numpy as np
import torch

from ..config import from_dict, to_dict
from ..errors import ScratchLMError
from ..model import GPT
from .loop import Trainer
from .runtime import pick_device, pick_dtype, set_threads, setup_runtime

GIB = 1024**3
MIB = 1024**2


def fmt_bytes(n: float) -> str:
    return f"{n / GIB:.2f} GiB" if n >= GIB else f"{n / MIB:.1f} MiB"


def vocab_for(cfg) -> tuple[int, str]:
    """The vocabulary the run would get from its tokenizer, without training one."""
    if cfg.data.tokenizer in ("bpe", "wordbpe"):
        return cfg.data.vocab_size, f"data.vocab_size={cfg.data.vocab_size}"
    return 256, "char tokenizer: assumed ≤256 symbols (the real count depends on the text)"


def activation_values(m) -> int:
    """Values kept for backward per token and layer (17·C for GPT-2's block): the block input and two
    norm outputs (3·C), q, k, v (C + 2·C_kv, C_kv = n_kv_head·head_dim), the attention output and the
    projection input (2·C), the MLP hidden layer before and after its activation (2·F; SwiGLU: gate and
    up, silu(gate), the product: 4·F), the residual (C); RoPE and qk-norm keep another q and k each."""
    C, F = m.n_embd, m.ff_width()
    kv = m.kv_heads() * (C // m.n_head)
    qk_copies = (m.position == "rope") + bool(m.qk_norm)
    return 3 * C + (C + 2 * kv) + 2 * C + (4 if m.mlp == "swiglu" else 2) * F + C + qk_copies * (C + kv)


def estimate(cfg, world: int = 1) -> dict:
    """Bytes per component by formula; see the module docstring."""
    m, tc = cfg.model, cfg.train
    with torch.device("meta"):  # shapes only: no memory is allocated
        n_params = sum(p.numel() for p in GPT(m).parameters())
    dtype, _ = pick_dtype(tc.dtype, pick_device(tc.device)[0])  # what the trainer would pick ("auto": per device)
    half = dtype in ("bf16", "fp16")
    act_bytes = 2 if half else 4
    micro = tc.micro_batch_size or tc.batch_size // world
    tokens = micro * m.block_size
    C, L, V = m.n_embd, m.n_layer, m.vocab_size
    if tc.activation_checkpointing == "none":
        per_layer = activation_values(m) * act_bytes + 2 * C * 4  # the residual stream and norm inputs stay fp32
        acts = tokens * L * per_layer
    else:
        # checkpointed blocks, as the trainer picks them: all, or every k-th from the first
        ckpt = L if tc.activation_checkpointing == "blocks" else len(range(0, L, int(tc.activation_checkpointing[6:])))
        recompute = activation_values(m) * act_bytes + 2 * C * 4
        acts = tokens * ((L - ckpt) * recompute + ckpt * C * 4 + recompute)
    logits = tokens * V * (act_bytes + 4 + 4)  # logits, their fp32 copy for the loss, its gradient
    shard = world if tc.fsdp else 1
    return {
        "parameters": n_params,
        "weights": n_params * 4 / shard,
        "gradients": n_params * 4 / shard,
        "adamw": n_params * 8 / shard,
        "activations": acts + logits,
        "kv_cache": 2 * L * m.block_size * m.kv_heads() * (C // m.n_head) * (2 if half else 4),
        "micro_batch": micro,
    }


def device_memory(device) -> tuple[int, str]:
    """(bytes, what they are) of the memory a training run on `device` can use at most."""
    if device.type == "cuda":
        return torch.cuda.get_device_properties(device).total_memory, f"{torch.cuda.get_device_name(device)} memory"
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"), "this machine's RAM"


def check_fits(cfg, device, world: int = 1) -> dict:
    """Refuse, before anything is allocated, a training run whose estimate (weights, gradients,
    AdamW, one micro-batch's activations) is larger than the device's whole memory; returns the estimate.
    (A run that fits by this formula may still not fit: `scratchlm memory` measures.)"""
    est = estimate(cfg, world)
    need = est["weights"] + est["gradients"] + est["adamw"] + est["activations"]
    have, what = device_memory(device)
    if need > have:
        m, tc = cfg.model, cfg.train
        raise ScratchLMError(
            f"this run needs about {fmt_bytes(need)} (weights, gradients and AdamW "
            f"{fmt_bytes(need - est['activations'])}"
            f" for {est['parameters'] / 1e6:,.0f}M parameters, activations {fmt_bytes(est['activations'])} for a "
            f"micro-batch of {est['micro_batch']} × {m.block_size} tokens) but {what} is {fmt_bytes(have)}; "
            "use a smaller "
            f"model or context, --train.micro_batch_size, or --train.activation_checkpointing blocks "
            f"(batch {tc.batch_size}; `scratchlm memory` shows the parts)")
    return est


def rss_now() -> int:
    """Resident memory of this process now, from /proc (Linux), else the peak so far."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except OSError:
        return rss_peak()


def rss_peak() -> int:
    """Peak resident memory of this process. On Linux VmHWM from /proc, because
    getrusage's ru_maxrss survives exec(): a child started by a big parent would
    report the parent's peak."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024  # bytes on macOS, KiB on Linux


class _UniformTok:
    """Stands in for a tokenizer (the trainer asks how many bytes each token stands for)."""

    special_tokens: dict = {}

    def __init__(self, vocab_size: int):
        self.vocab_size = vocab_size

    def decode(self, ids):  # one byte of text per token
        return "x" * len(ids)

    def token_bytes(self, token_id: int) -> bytes:
        return b"x"


def measure_variant(cfg, steps: int) -> dict:
    """Peak memory and tokens/s of `steps` training steps; runs in the calling process."""
    rt = setup_runtime(cfg.train)
    set_threads(cfg.train.threads)
    idle = rss_now()
    n = cfg.model.block_size * cfg.train.batch_size * 4 + cfg.model.block_size + 2
    rng = np.random.default_rng(0)
    data = {s: rng.integers(0, cfg.model.vocab_size, n).astype(np.uint32) for s in ("train", "val")}
    with tempfile.TemporaryDirectory() as tmp:
        trainer = Trainer(cfg, tmp, _UniformTok(cfg.model.vocab_size), "memory", data, rt)
        cuda = rt.device.type == "cuda"
        if cuda:
            torch.cuda.reset_peak_memory_stats(rt.device)
        trainer.train_step()  # warm-up: allocations, kernel choice
        if cuda:
            torch.cuda.synchronize(rt.device)
        t0 = time.perf_counter()
        for _ in range(steps):
            trainer.train_step()
        if cuda:
            torch.cuda.synchronize(rt.device)
        dt = time.perf_counter() - t0
    tokens = steps * cfg.train.batch_size * cfg.model.block_size
    peak = torch.cuda.max_memory_allocated(rt.device) if cuda else rss_peak() - idle
    return {"peak_bytes": peak, "tokens_per_s": tokens / dt, "device": str(rt.device), "dtype": rt.dtype,
            "accum": trainer.accum_steps, "micro": trainer.micro_batch_size}


def variants(cfg, emulated_half: bool = True) -> list[tuple[str, object]]:
    """(label, config) for each measured variant. Without native half precision (an AVX2 CPU)
    bf16 is emulated, ~30× slower than fp32: `emulated_half=False` then measures checkpointing
    and accumulation in fp32 and leaves bf16 out (the guide's choice, to keep the main job short)."""
    device, _ = pick_device(cfg.train.device)
    half, _ = pick_dtype("auto", device)
    if half == "fp32" and not emulated_half:
        half = None
    elif half == "fp32":
        half = "bf16"  # no native half precision: still show what bf16 does
    tc = cfg.train
    micro = tc.micro_batch_size or tc.batch_size
    small = max(1, micro // 4)
    while tc.batch_size % small:
        small -= 1
    base = half or "fp32"
    out = [("fp32", replace(tc, dtype="fp32", activation_checkpointing="none"))]
    if half:
        out.append((half, replace(tc, dtype=half, activation_checkpointing="none")))
    out += [(f"{base} + act. ckpt", replace(tc, dtype=base, activation_checkpointing="blocks")),
            (f"{base}, micro {small} × {tc.batch_size // small} accum",
             replace(tc, dtype=base, activation_checkpointing="none", micro_batch_size=small))]
    return [(label, replace(cfg, train=t)) for label, t in out]


def measure_in_subprocess(cfg, steps: int) -> dict:
    """A fresh process per variant, so one variant's peak cannot hide another's."""
    payload = json.dumps({"config": to_dict(cfg), "steps": steps})
    proc = subprocess.run([sys.executable, "-m", "scratchlm.train.memory", "--_worker"], input=payload,
                          capture_output=True, text=True, env={**os.environ, "WORLD_SIZE": "1", "RANK": "0"})
    if proc.returncode != 0:
        last = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        return {"error": last}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _worker() -> int:
    job = json.loads(sys.stdin.read())
    print(json.dumps(measure_variant(from_dict(job["config"]), job["steps"])))
    return 0


if __name__ == "__main__":  # the measuring subprocess: python -m scratchlm.train.memory --_worker
    sys.exit(_worker())
