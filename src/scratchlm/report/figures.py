"""Figures the guide draws itself: the GPT stack and its block as a diagram, and the
training curves when the `viz` extra is not there to draw them.

Each function writes an SVG (vector: sharp at any zoom in the PDF) and returns its path.
"""

from __future__ import annotations

from pathlib import Path


def _plt():
    import matplotlib  # heavy, and only needed when a figure is drawn

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def block_diagram(model_cfg: dict, out: Path) -> Path:
    """The GPT stack (left) and one transformer block opened up (right), labelled with
    this run's sizes; a post-LayerNorm block (the guide's classic one) is drawn as such."""
    plt = _plt()
    from matplotlib.patches import FancyBboxPatch

    C, L, H = model_cfg.get("n_embd", 0), model_cfg.get("n_layer", 0), model_cfg.get("n_head", 0)
    V, T = model_cfg.get("vocab_size", 0), model_cfg.get("block_size", 0)
    norm = {"rmsnorm": "RMSNorm"}.get(model_cfg.get("norm", "layernorm"), "LayerNorm")
    mlp = model_cfg.get("mlp", "gelu")
    ff = model_cfg.get("ff_dim") or (8 * C // 3 if mlp == "swiglu" else 4 * C)
    kv = model_cfg.get("n_kv_head") or H
    post = model_cfg.get("norm_position", "pre") == "post"
    rope = model_cfg.get("position", "learned") == "rope"
    tied = model_cfg.get("tie_embeddings", True)

    fig, ax = plt.subplots(figsize=(8.6, 6.4))
    ax.set_xlim(0, 10)
    ax.set_ylim(0, 10.4)
    ax.axis("off")

    def box(x, y, w, h, text, color):
        ax.add_patch(FancyBboxPatch((x - w / 2, y - h / 2), w, h, boxstyle="round,pad=0.05,rounding_size=0.12",
                                    fc=color, ec="#333333", lw=1))
        ax.text(x, y, text, ha="center", va="center", fontsize=8.5)

    def arrow(x0, y0, x1, y1, color="#333333"):
        ax.annotate("", xy=(x1, y1), xytext=(x0, y0), arrowprops=dict(arrowstyle="-|>", color=color, lw=1))

    # the stack, bottom to top
    x, w = 2.3, 3.9
    stack = [
        (0.6, f"token ids  (B, T ≤ {T})", "#ffffff"),
        (1.9, f"token embedding wte ({V} × {C})" + ("" if rope else "\n+ position embedding wpe"), "#dbe9f6"),
        (4.4, f"transformer block × {L}", "#fde6c8"),
        (6.9, f"final {norm}" if not post else "(no final norm: each block\nends with one)", "#e6e6e6"),
        (8.2, "output layer" + (" (= wteᵀ, tied)" if tied else ""), "#dbe9f6"),
        (9.5, f"logits (B, T, {V}) → softmax", "#ffffff"),
    ]
    for y, text, color in stack:
        box(x, y, w, 0.75 if y != 4.4 else 2.6, text, color)
    for (y0, _, _), (y1, _, _) in zip(stack, stack[1:]):
        h0 = 1.3 if y0 == 4.4 else 0.375
        h1 = 1.3 if y1 == 4.4 else 0.375
        arrow(x, y0 + h0 + 0.05, x, y1 - h1 - 0.05)

    # one block, opened up
    bx = 7.3
    attn = (f"multi-head attention\n{H} heads × {C // max(H, 1)} dims" + (f", {kv} K/V heads" if kv != H else "")
            + (", RoPE" if rope else ""))
    ffn = {"gelu": "GELU", "relu": "ReLU", "relu2": "ReLU²", "swiglu": "SwiGLU"}.get(mlp, mlp)
    mlp_text = f"MLP  {C} → {ff} → {C}\n{ffn}"
    if post:
        rows = [(1.0, "x", None), (2.2, attn, "#fbd3d0"), (3.4, "+", "add"), (4.4, norm, "#e6e6e6"),
                (5.6, mlp_text, "#d5efd5"), (6.8, "+", "add"), (7.8, norm, "#e6e6e6"), (9.0, "x'", None)]
        skips = [(1.0, 3.4), (4.4, 6.8)]
        title = "post-LayerNorm block (the guide's classic)"
    else:
        rows = [(1.0, "x", None), (2.0, norm, "#e6e6e6"), (3.1, attn, "#fbd3d0"), (4.3, "+", "add"),
                (5.3, norm, "#e6e6e6"), (6.4, mlp_text, "#d5efd5"), (7.6, "+", "add"), (9.0, "x'", None)]
        skips = [(1.0, 4.3), (4.3, 7.6)]
        title = "pre-LayerNorm block (ours, GPT-2 style)"
    heights = {}
    for y, text, color in rows:
        if color is None:
            ax.text(bx, y, text, ha="center", va="center", fontsize=10, style="italic")
            heights[y] = 0.2
        elif color == "add":
            ax.add_patch(plt.Circle((bx, y), 0.22, fc="white", ec="#333333"))
            ax.text(bx, y, "+", ha="center", va="center", fontsize=11)
            heights[y] = 0.22
        else:
            hh = 0.8 if "\n" in text else 0.55
            box(bx, y, 3.2, hh, text, color)
            heights[y] = hh / 2
    for (y0, _, _), (y1, _, _) in zip(rows, rows[1:]):
        arrow(bx, y0 + heights[y0] + 0.03, bx, y1 - heights[y1] - 0.03)
    for y0, y1 in skips:  # residual connections go around the sub-layer
        sx = bx + 1.95
        ax.plot([bx + 0.1, sx, sx], [y0 + 0.35, y0 + 0.35, y1], color="#1f5fa8", lw=1.2)
        arrow(sx, y1, bx + 0.24, y1, color="#1f5fa8")
    ax.text(bx + 2.05, (skips[0][0] + skips[0][1]) / 2, "residual", rotation=90, va="center", fontsize=7.5,
            color="#1f5fa8")
    ax.text(bx, 10.1, title, ha="center", fontsize=9.5, weight="bold")
    ax.text(x, 10.1, f"the GPT stack: {L} blocks, width {C}", ha="center", fontsize=9.5, weight="bold")
    # the stack's block box opens into the right-hand drawing
    ax.plot([x + w / 2, bx - 1.6], [5.7, 9.0], color="#999999", lw=0.8, ls="--")
    ax.plot([x + w / 2, bx - 1.6], [3.1, 1.0], color="#999999", lw=0.8, ls="--")
    fig.savefig(out, bbox_inches="tight")
    plt.close(fig)
    return out


def training_curves(steps: list[dict], evals: list[dict], run_name: str, out: Path) -> Path:
    """Train and validation loss, bits per byte and the learning rate against the step."""
    plt = _plt()
    fig, axes = plt.subplots(1, 3, figsize=(10, 3.2))
    s = [r["step"] for r in steps]
    ax = axes[0]
    ax.plot(s, [r["loss"] for r in steps], lw=0.8, label="train (per step)")
    if evals:
        ax.plot([e["step"] for e in evals], [e["val_loss"] for e in evals], "o-", ms=3, label="validation")
    ax.set(xlabel="step", ylabel="loss (nats / token)", title="loss")
    ax.legend(fontsize=8)
    ax = axes[1]
    if evals:
        ax.plot([e["step"] for e in evals], [e["val_bpb"] for e in evals], "o-", ms=3, color="C1")
    ax.set(xlabel="step", ylabel="bits per byte", title="validation bits per byte")
    ax = axes[2]
    ax.plot(s, [r.get("lr", float("nan")) for r in steps], color="C2")
    ax.set(xlabel="step", ylabel="learning rate", title="learning-rate schedule")
    ax.ticklabel_format(axis="y", style="sci", scilimits=(-3, 3))
    for ax in axes:
        ax.grid(alpha=0.3)
    fig.suptitle(run_name, fontsize=9, x=0.99, ha="right")
    fig.tight_layout()
    fig.savefig(out)
    plt.close(fig)
    return out
