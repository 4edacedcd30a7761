"""Muon: an optimizer for weight matrices that orthogonalises its momentum (Newton-Schulz).

`train.optimizer = muon` uses it (`optim.make_optimizer` builds it from `muon_groups`): Muon
for the blocks' 2-D weight matrices, AdamW for embeddings, the head, gains and biases, in one
optimizer.
"""

from __future__ import annotations

import math

import torch

# Muon ("MomentUm Orthogonalized by Newton-Schulz", K. Jordan et al., 2024) changes what
# one step does to a weight matrix W (d_out × d_in). SGD-momentum steps along the momentum
# M; for a matrix, M's few largest singular directions dominate, so a step mostly moves W
# along directions it already moves in. Muon replaces M = U S V^T by its "orthogonal
# part" U V^T: the same directions, every one with size 1. Rare directions get as big a
# step as common ones, and the step's size no longer depends on the gradient's scale
# (so there is nothing for Adam's second moment to normalise).
#
# Computing U V^T with an SVD is slow on a GPU and awkward in bf16; Newton-Schulz gets
# close with five pairs of matrix products (below).

# The quintic iteration X <- a X + b (X X^T) X + c (X X^T)^2 X acts on each singular
# value s of X separately, as s <- p(s) = a s + b s^3 + c s^5. We want p applied a few
# times to send every s in (0, 1] close to 1. The classic cubic (a, b, c) = (1.5, -0.5, 0)
# converges to exactly 1 but slowly for small s (slope 1.5 at 0). These coefficients,
# tuned by Jordan, have slope a = 3.4445 at 0, so small singular values grow ~3.4x per
# iteration, at the price of not converging: after 5 steps the singular values land
# somewhere in about [0.7, 1.2] instead of exactly 1, which training does not mind.
NS_COEFFS = (3.4445, -4.7750, 2.0315)


def newton_schulz(g: torch.Tensor, steps: int = 5, eps: float = 1e-7) -> torch.Tensor:
    """An approximation of U V^T, where g = U S V^T (a 2-D matrix): all singular values ~1."""
    a, b, c = NS_COEFFS
    x = g.float()
    # Work on the wide orientation, so X X^T is the smaller of the two Gram matrices.
    tall = x.size(0) > x.size(1)
    if tall:
        x = x.T
    # p only pushes singular values toward 1 from inside (0, ~1.2]; dividing by the Frobenius
    # norm (always >= the largest singular value) puts all of them in (0, 1].
    x = x / (x.norm() + eps)
    for _ in range(steps):
        gram = x @ x.T
        x = a * x + (b * gram + c * gram @ gram) @ x
    return (x.T if tall else x).to(g.dtype)


class Muon(torch.optim.Optimizer):
    """Muon for the hidden weight matrices, AdamW for everything else, as one optimizer.

    Each parameter group says which rule it follows ("muon": True or False), so one
    `state_dict` holds both kinds of state (checkpoints and exact resume need nothing more),
    and the trainer's schedule sets every group's "lr" as for AdamW (times the group's
    "lr_scale", if it has one). A Muon group scales that lr by its "lr_ratio".

    Muon step for a matrix W of shape (d_out, d_in), gradient G:
        M <- momentum * M + (1 - momentum) * G          (a running mean of gradients)
        U <- G + momentum * (M - G) (Nesterov) or M
        W <- W * (1 - lr * weight_decay) - lr * lr_ratio * 0.2 * sqrt(max(d_out, d_in)) * NS(U)
    The scale 0.2 * sqrt(max(d_out, d_in)) gives the update an RMS of about 0.2 per entry
    (an orthogonal d_out × d_in matrix has entries of RMS 1/sqrt(max(d_out, d_in))), which
    is the typical RMS of an AdamW update; so the AdamW learning rate and weight decay carry
    over, and matrices of any shape get steps of the same size (Liu et al., 2025, "Muon is
    scalable for LLM training").
    """

    def __init__(self, groups: list[dict], lr: float = 1e-3, weight_decay: float = 0.0, momentum: float = 0.95,
                 nesterov: bool = True, ns_steps: int = 5, betas: tuple[float, float] = (0.9, 0.95),
                 eps: float = 1e-8, lr_ratio: float = 1.0):
        defaults = dict(lr=lr, weight_decay=weight_decay, momentum=momentum, nesterov=nesterov, ns_steps=ns_steps,
                        betas=betas, eps=eps, lr_ratio=lr_ratio, muon=False)
        super().__init__(groups, defaults)
        for group in self.param_groups:
            if group["muon"] and any(p.dim() != 2 for p in group["params"]):
                raise ValueError("Muon groups hold 2-D weight matrices only")

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            if group["muon"]:
                self._muon_step(group)
            else:
                self._adamw_step(group)
        return loss

    def _muon_step(self, group: dict) -> None:
        lr, wd, beta = group["lr"] * group["lr_ratio"], group["weight_decay"], group["momentum"]
        for p in group["params"]:
            if p.grad is None:
                continue
            state = self.state[p]
            if not state:
                state["momentum_buffer"] = torch.zeros_like(p)
            buf = state["momentum_buffer"]
            buf.lerp_(p.grad, 1 - beta)
            update = p.grad.lerp(buf, beta) if group["nesterov"] else buf
            ortho = newton_schulz(update, group["ns_steps"])
            p.mul_(1 - lr * wd)  # decoupled weight decay, as in AdamW
            p.add_(ortho, alpha=-lr * 0.2 * math.sqrt(max(p.shape)))

    def _adamw_step(self, group: dict) -> None:
        lr, wd, (beta1, beta2), eps = group["lr"], group["weight_decay"], group["betas"], group["eps"]
        for p in group["params"]:
            if p.grad is None:
                continue
            state = self.state[p]
            if not state:
                state["step"] = torch.zeros((), dtype=torch.float32)
                state["exp_avg"] = torch.zeros_like(p)
                state["exp_avg_sq"] = torch.zeros_like(p)
            state["step"] += 1
            t = state["step"].item()
            m, v = state["exp_avg"], state["exp_avg_sq"]
            m.lerp_(p.grad, 1 - beta1)
            v.mul_(beta2).addcmul_(p.grad, p.grad, value=1 - beta2)
            # the moments start at zero; dividing by (1 - beta^t) removes that bias early on
            denom = (v / (1 - beta2**t)).sqrt_().add_(eps)
            p.mul_(1 - lr * wd)
            p.addcdiv_(m, denom, value=-lr / (1 - beta1**t))


def muon_groups(model: torch.nn.Module, weight_decay: float) -> list[dict]:
    """Parameter groups: Muon for the blocks' 2-D weight matrices; AdamW for embeddings, the head,
    gains and biases.

    Why not Muon everywhere: an embedding table is not a linear map but a list of vectors,
    one per token, and its gradient only touches the rows of the tokens in the batch;
    orthogonalising it would give a token seen once the same step as one seen a thousand
    times. The head's gradient is dominated by the frequent tokens' rows in the same way,
    and Adam's per-entry scaling is what it wants (Muon's authors found AdamW better there).
    Gains and biases are vectors: there is no matrix to orthogonalise.
    """
    params = [p for p in model.parameters() if p.requires_grad]
    io = {id(p) for m in model.modules() if isinstance(m, torch.nn.Embedding) for p in m.parameters()}
    head = getattr(model, "lm_head", None)
    if isinstance(head, torch.nn.Module):
        io |= {id(p) for p in head.parameters()}  # tied to the embedding: the same tensor, still AdamW
    hidden = [p for p in params if p.dim() == 2 and id(p) not in io]
    other_matrices = [p for p in params if p.dim() >= 2 and (id(p) in io or p.dim() > 2)]
    vectors = [p for p in params if p.dim() < 2]
    groups = [{"params": hidden, "muon": True, "weight_decay": weight_decay},
              {"params": other_matrices, "muon": False, "weight_decay": weight_decay},
              {"params": vectors, "muon": False, "weight_decay": 0.0}]
    return [g for g in groups if g["params"]]
