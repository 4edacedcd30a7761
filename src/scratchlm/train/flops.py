"""How much arithmetic training costs, and how much of the hardware's peak we use (MFU).

Training a decoder-only transformer costs about

    6·N  +  12·L·C·T   floating-point operations per token

  - 6·N: every parameter takes part in one multiply-add (2 FLOPs) in the forward
    pass and two in the backward pass (the gradient w.r.t. the input and w.r.t. the
    weight), 2 + 4 = 6. N counts the matrices (and the tied output layer), not the
    position embeddings, which are looked up rather than multiplied.
  - 12·L·C·T: attention's QKᵀ and (weights)·V, which have no parameters: per layer
    and token 2·2·C·T FLOPs forward, ×3 with backward (as in PaLM, appendix B, and
    nanoGPT; the causal mask's saving of half is not subtracted).

Model FLOPs utilisation (MFU) = tokens/s × FLOPs per token / peak FLOP/s. The peak
comes from a table of common GPUs (dense tensor-core figures, no sparsity) or, on a
CPU, from timing a large matrix multiply in this process: a CPU's "peak" depends on
cores, clocks and instruction sets no table can know.
"""

from __future__ import annotations

import functools
import time

import torch

# Dense peak TFLOP/s per GPU: (bf16/fp16 tensor cores, tf32 tensor cores for fp32 matmuls).
# Substrings of torch.cuda.get_device_name(); the first match wins, so specific names first.
GPU_PEAK_TFLOPS: list[tuple[str, float, float]] = [
    ("H200", 989.0, 494.0),
    ("H100 PCIe", 756.0, 378.0),
    ("H100", 989.0, 494.0),  # SXM
    ("GH200", 989.0, 494.0),
    ("B200", 2250.0, 1100.0),
    ("A100", 312.0, 156.0),
    ("A800", 312.0, 156.0),
    ("L40S", 362.0, 183.0),
    ("L40", 181.0, 90.5),
    ("L4", 121.0, 60.0),
    ("A10G", 70.0, 35.0),
    ("A10", 125.0, 62.5),
    ("A6000", 155.0, 77.4),
    ("RTX 4090", 165.0, 82.6),
    ("RTX 3090", 71.0, 35.6),
    ("V100", 125.0, 15.7),  # fp16 only; no bf16, no tf32
    ("T4", 65.0, 8.1),  # fp16 only
]


def flops_per_token(cfg, n_params: int) -> float:
    """Training FLOPs per token: 6·N + 12·L·C·T (see the module docstring)."""
    return 6.0 * n_params + 12.0 * cfg.n_layer * cfg.n_embd * cfg.block_size


@functools.lru_cache(maxsize=None)
def measure_matmul_peak(dtype: torch.dtype = torch.bfloat16, device: str = "cpu", n: int = 2048,
                        seconds: float = 0.6) -> float:
    """FLOP/s of an n×n @ n×n matrix multiply on this device, the best of repeated timings.

    This is what the hardware actually sustains on a friendly shape with this
    PyTorch build and thread count: the honest denominator for MFU on a CPU.
    """
    dev = torch.device(device)
    a = torch.randn(n, n, device=dev).to(dtype)
    b = torch.randn(n, n, device=dev).to(dtype)
    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)
    a @ b  # warm up: thread pools, kernel selection
    sync()
    best, start = 0.0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        t = time.perf_counter()
        a @ b
        sync()
        best = max(best, 2.0 * n**3 / (time.perf_counter() - t))
    return best


def peak_flops(device: torch.device, dtype: str) -> tuple[float, str]:
    """(peak FLOP/s for matmuls in `dtype` on `device`, where the figure comes from)."""
    half = dtype in ("bf16", "fp16")
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
        for key, tf_half, tf_32 in GPU_PEAK_TFLOPS:
            if key in name:
                return (tf_half if half else tf_32) * 1e12, f"{name}: {'bf16/fp16' if half else 'tf32'} table value"
        torch_dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(dtype, torch.float32)
        return measure_matmul_peak(torch_dtype, str(device), 4096), f"{name}: not in the table, measured matmul"
    torch_dtype = torch.bfloat16 if dtype == "bf16" else torch.float32  # fp16 on CPU: compare with fp32
    label = "bf16" if dtype == "bf16" else "fp32"
    return measure_matmul_peak(torch_dtype, str(device)), f"measured {label} matmul on this {device.type}"


def mfu(tokens_per_s: float, flops_per_tok: float, peak: float) -> float:
    return tokens_per_s * flops_per_tok / peak if peak > 0 else 0.0


def mfu_hint(value: float, device_type: str) -> str | None:
    """A one-line nudge when utilisation is low, naming the usual causes."""
    low = 0.25 if device_type == "cuda" else 0.15
    if value >= low:
        return None
    if device_type == "cuda":
        return (f"MFU {value:.0%} is low: try --train.dtype bf16, --train.compile true, a larger micro-batch "
                "(--train.micro_batch_size), and check the data loader is not the bottleneck")
    return (f"MFU {value:.0%} is low: on a CPU try --train.dtype bf16 (if the CPU has AVX512-BF16/AMX), "
            "one process per machine, and a model wide enough for matmuls to dominate")
