"""The optimizers and the learning-rate schedule.

AdamW with weight decay on matrices only: decaying biases, LayerNorm gains and
embeddings' scale pulls them toward zero for no benefit. Or (`train.optimizer = muon`)
Muon for the blocks' weight matrices and AdamW for the rest (written out in muon.py). The schedule warms up
linearly (Adam's early updates are noisy), then decays: a cosine to a floor, or
"WSD" — warmup, stable (constant), then a linear cool-down at the end.
"""

from __future__ import annotations

import inspect
import math

import torch

from ..errors import ScratchLMError
from .muon import make_muon


def make_optimizer(model: torch.nn.Module, lr: float, weight_decay: float, betas: tuple[float, float],
                   device_type: str, kind: str = "adamw", muon_lr_ratio: float = 1.0):
    """(optimizer, implementation): AdamW ("fused" or "foreach"), or with kind="muon" our `Muon` ("muon")."""
    if kind == "muon":
        if device_type == "fsdp":  # Newton-Schulz needs whole matrices; FSDP gives each rank a slice
            raise ScratchLMError("train.optimizer=muon does not work with train.fsdp=true; use DDP (fsdp false)")
        return make_muon(model, lr, weight_decay, betas, muon_lr_ratio), "muon"
    params = [p for p in model.parameters() if p.requires_grad]
    decay = [p for p in params if p.dim() >= 2]  # matmul weights and embeddings
    no_decay = [p for p in params if p.dim() < 2]  # biases and LayerNorm gains
    groups = [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    # The fused kernel does the whole update in one pass over memory (CUDA and, in
    # recent PyTorch, CPU); foreach batches the per-tensor ops. Either beats a Python loop.
    fused_ok = "fused" in inspect.signature(torch.optim.AdamW).parameters and device_type in ("cuda", "cpu")
    kind = "fused" if fused_ok else "foreach"
    extra = {"fused": True} if fused_ok else {"foreach": True}
    return torch.optim.AdamW(groups, lr=lr, betas=betas, **extra), kind


def lr_at(step: int, progress: float, warmup_end_progress: float, tc) -> float:
    """Learning rate for `step`, where `progress` in [0, 1] is how much of the budget
    (steps or time, whichever runs out first) is used."""
    if step < tc.warmup_steps:
        return tc.lr * (step + 1) / tc.warmup_steps
    floor = tc.lr * tc.min_lr_ratio
    q = min(1.0, max(0.0, (progress - warmup_end_progress) / max(1e-9, 1.0 - warmup_end_progress)))
    if tc.schedule == "cosine":
        return floor + (tc.lr - floor) * 0.5 * (1.0 + math.cos(math.pi * q))
    # wsd: constant, then linear cool-down over the last `cooldown_frac` of training
    start = 1.0 - tc.cooldown_frac
    if q <= start:
        return tc.lr
    return tc.lr + (floor - tc.lr) * (q - start) / max(1e-9, tc.cooldown_frac)

