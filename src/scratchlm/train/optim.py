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
from ..model import SHIFT_WEIGHTS
from .muon import Muon, muon_groups


def key_shift_apart(model: torch.nn.Module, groups: list[dict], ratio: float) -> list[dict]:
    """The groups with the key-shift weights (`model.key_shift`) moved to a group of their own whose
    learning rate is × `ratio` (its "lr_scale", which the trainer's schedule applies); unchanged
    when the model has none or the ratio is 1.

    Why they may want more: each is a vector that starts at zero, and Adam moves an entry by at most
    about lr per step. At fine-tuning's lr of 3e-3 a shift needs hundreds of steps to reach the size
    of a key, and until it does the copying heads it enables cannot form (docs/finetuning.md)."""
    shift = {id(p) for n, p in model.named_parameters() if n.endswith(SHIFT_WEIGHTS)}
    if not shift or ratio == 1.0:
        return groups
    home = next(g for g in groups if any(id(p) in shift for p in g["params"]))  # the vectors' group: its settings
    out = [{**g, "params": [p for p in g["params"] if id(p) not in shift]} for g in groups]
    apart = [p for g in groups for p in g["params"] if id(p) in shift]  # from every group: none is dropped
    return [g for g in out if g["params"]] + [{**home, "params": apart, "weight_decay": 0.0, "lr_scale": ratio}]


def freeze(model: torch.nn.Module, parts: str) -> None:
    """Stop training every parameter whose name holds one of the comma-separated `parts` (`train.freeze`;
    "mlp": the blocks' MLPs). They get no gradient and no optimizer state, so a step costs less: fine-tuning
    freezes the MLPs, the copying the answers need is attention's work (docs/finetuning.md)."""
    names = dict(model.named_parameters())
    for part in filter(None, (s.strip() for s in parts.split(","))):
        hit = [p for n, p in names.items() if part in n]
        if not hit:
            raise ScratchLMError(f"train.freeze: no parameter's name holds {part!r} (names look like "
                                 "transformer.h.0.mlp.c_fc.weight, transformer.h.1.attn.c_attn.weight)")
        for p in hit:
            p.requires_grad_(False)


def make_optimizer(model: torch.nn.Module, lr: float, weight_decay: float, betas: tuple[float, float],
                   device_type: str, kind: str = "adamw", muon_lr_ratio: float = 1.0, key_shift_lr_ratio: float = 1.0):
    """(optimizer, implementation): AdamW ("fused" or "foreach"), or with kind="muon" our `Muon` ("muon")."""
    if kind == "muon":
        if device_type == "fsdp":  # Newton-Schulz needs whole matrices; FSDP gives each rank a slice
            raise ScratchLMError("train.optimizer=muon does not work with train.fsdp=true; use DDP (fsdp false)")
        groups = key_shift_apart(model, muon_groups(model, weight_decay), key_shift_lr_ratio)
        return Muon(groups, lr=lr, betas=betas, lr_ratio=muon_lr_ratio), "muon"
    params = [p for p in model.parameters() if p.requires_grad]
    decay = [p for p in params if p.dim() >= 2]  # matmul weights and embeddings
    no_decay = [p for p in params if p.dim() < 2]  # biases and LayerNorm gains
    groups = [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    groups = key_shift_apart(model, groups, key_shift_lr_ratio)
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

