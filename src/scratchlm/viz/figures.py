"""The figures: Q/K/V walkthrough, attention grid, attention evolving, curves, sampling, tokens.

Each figure has a `make_*` function that returns a matplotlib Figure (tests and the PDF
guide can place or inspect it) and a function without the prefix that saves it as PNG
and SVG into a folder and returns the paths:

    qkv_walkthrough(run, prompt, layer, head, out_dir)  -> [qkv_projections, qkv_attention, qkv_cube] .png/.svg
    attention_grid(run, prompt, out_dir)                -> attention_grid
    evolution(run_dir, out_dir)                         -> attention_filmstrip, attention_metrics (+ a GIF)
    curves(run_dir, out_dir)                            -> curves
    sampling(run, prompt, out_dir, ...)                 -> sampling
    tokens(tokenizer, text, out_dir, title)             -> tokens
    render_all(run_or_path, out_dir)                    -> all of the above that the run has data for

`run` is what `scratchlm.inference.load_run(path)` returns (.model, .tokenizer, .config,
.run_dir); a path is loaded that way. Heatmaps of vectors use a red-blue map centred on 0
(red positive, blue negative); attention weights (0 to 1) use a light-to-dark map.
"""

from __future__ import annotations

from pathlib import Path

import textwrap

import matplotlib
import numpy as np
import torch

from ..errors import ScratchLMError
from ..inference import filter_logits, load_run
from .capture import attention_maps, qkv_walkthrough as capture_walkthrough, token_labels
from .metrics import METRICS, TITLES
from .snapshots import Snapshots, load_snapshots
from .style import new_figure, run_name, save, symmetric_limits, token_ticks

VEC_CMAP, ATTN_CMAP, METRIC_CMAP = "RdBu_r", "Blues", "magma"


def as_run(run):
    """A loaded run, from a run object or a run/checkpoint folder."""
    return load_run(run) if isinstance(run, (str, Path)) else run


def encode(run, prompt: str) -> list[int]:
    """The prompt's token ids, cut to the model's context; a one-line error when it is empty."""
    ids = run.tokenizer.encode(prompt)
    if not ids:
        raise ScratchLMError("the prompt is empty: give some text with --prompt")
    return ids[: run.config.model.block_size]


def default_prompt(run) -> str:
    """The run's probe prompt (from its snapshots) when it has one, else a line of Shakespeare."""
    try:
        return run.tokenizer.decode([int(i) for i in load_snapshots(run.run_dir).ids])
    except ScratchLMError:
        return "To be, or not to be, that is the question:"


def _heatmap(fig, ax, a, title, cmap=VEC_CMAP, vlim=None, cbar_label="value"):
    vmin, vmax = vlim if vlim is not None else symmetric_limits(a)
    im = ax.imshow(a, cmap=cmap, vmin=vmin, vmax=vmax, aspect="auto", interpolation="nearest")
    ax.set_title(title)
    cb = fig.colorbar(im, ax=ax, fraction=0.046, pad=0.02)
    cb.set_label(cbar_label, fontsize=6.5)
    cb.ax.tick_params(labelsize=6)
    return im


# ---- the Q/K/V walkthrough ---------------------------------------------------------

def _op(w, name: str) -> str:
    """'X·W_q', or 'RoPE(norm(X·W_q))' when the model transforms q/k after the projection (shift: key_shift)."""
    s = f"X·W_{name}"
    if (name == "k" and "key_shift" in w.options) or (name == "q" and "query_shift" in w.options):
        s = f"shift({s})"
    if name in ("q", "k"):
        if "qk_norm" in w.options:
            s = f"norm({s})"
        if "rope" in w.options:
            s = f"RoPE({s})"
    return s


def make_qkv_projections(w, label: str = ""):
    """Page 1: X and the three projections Q, K, V of one head, rows = tokens."""
    T, C = w.X.shape
    D = w.Q.shape[1]
    fig = new_figure()
    gs = fig.add_gridspec(1, 4, width_ratios=[2.2, 1, 1, 1])
    ax = fig.add_subplot(gs[0])
    _heatmap(fig, ax, w.X, f"X: the layer's input\n{T} tokens × C={C}")
    token_ticks(ax, w.tokens, "y")
    ax.set_ylabel("token (position in the prompt)")
    ax.set_xlabel("model dimension")
    for i, (name, M) in enumerate((("q", w.Q), ("k", w.K), ("v", w.V)), start=1):
        ax = fig.add_subplot(gs[i], sharey=fig.axes[0])
        what = {"q": "queries: what I look for", "k": "keys: what I offer", "v": "values: what I pass on"}[name]
        _heatmap(fig, ax, M, f"{name.upper()} = {_op(w, name)}\n{T} × d_k={D}\n{what}")
        ax.tick_params(labelleft=False)
        ax.set_xlabel("head dimension")
    fig.suptitle(f"Self-attention step 1: project each token's vector X into a query, a key and a value\n"
                 f"layer {w.layer}, head {w.head} (W_q, W_k, W_v: {C}×{D} slices of c_attn) — {label}")
    return fig


def make_qkv_attention(w, label: str = ""):
    """Page 2: scores, causal mask, softmax weights, output — each with token labels."""
    T, D = w.Q.shape
    fig = new_figure((8.3, 7.4))
    axes = fig.subplots(2, 2)
    ax = axes[0, 0]
    _heatmap(fig, ax, w.scores, f"scores = Q·Kᵀ / √d_k   ({T} × {T}, √d_k = {np.sqrt(D):.2f})\n"
                                "how well query i matches key j", cbar_label="score")
    ax = axes[0, 1]
    ax.imshow(w.mask, cmap="Greys_r", vmin=0, vmax=1.4, aspect="auto", interpolation="nearest")
    ax.set_title(f"causal mask ({T} × {T})\nlight: may look; black: the future, its score set to −∞")
    ax = axes[1, 0]
    _heatmap(fig, ax, w.weights, f"weights = softmax(masked scores)  ({T} × {T})\neach row sums to 1",
             cmap=ATTN_CMAP, vlim=(0, 1), cbar_label="attention weight")
    if T <= 16:  # small enough to print the numbers
        for i in range(T):
            for j in range(i + 1):
                v = w.weights[i, j]
                ax.text(j, i, f"{v:.2f}"[1:] if v < 1 else "1", ha="center", va="center", fontsize=4.5,
                        color="white" if v > 0.6 else "black")
    ax = axes[1, 1]
    _heatmap(fig, ax, w.out, f"output = weights · V   ({T} × d_k={D})\neach row: a weighted average of V's rows")
    for ax in axes.flat:
        token_ticks(ax, w.tokens, "y")
        ax.set_ylabel("query token i")
    for ax in (axes[0, 0], axes[0, 1], axes[1, 0]):
        token_ticks(ax, w.tokens, "x")
        ax.set_xlabel("key token j")
    axes[1, 1].set_xlabel("head dimension")
    fig.suptitle(f"Self-attention step 2: compare, mask, normalise, mix — layer {w.layer}, head {w.head}\n{label}")
    return fig


def _cube(ax, A, head: int, title: str):
    """A (heads, T, D) tensor as a stack of slices; head `head`'s slice in colour, the others grey."""
    from matplotlib.colors import Normalize
    from mpl_toolkits.mplot3d.art3d import Poly3DCollection

    H, T, D = A.shape
    vmin, vmax = symmetric_limits(A[head])
    colors = matplotlib.colormaps[VEC_CMAP](Normalize(vmin, vmax)(A[head]))  # (T, D, 4)
    dd, tt = np.meshgrid(np.arange(D + 1), np.arange(T + 1))
    for h in range(H):  # back to front, so nearer slices are drawn over farther ones
        if h == head:
            ax.plot_surface(dd, np.full_like(dd, h, dtype=float), tt, facecolors=colors, shade=False, linewidth=0,
                            rstride=1, cstride=1)
        else:
            quad = [[(0, h, 0), (D, h, 0), (D, h, T), (0, h, T)]]
            ax.add_collection3d(Poly3DCollection(quad, facecolor="0.8", edgecolor="0.35", alpha=0.35, lw=0.6))
    ax.set_xlabel("head dimension", labelpad=-7)
    ax.set_ylabel("head", labelpad=-7)
    ax.set_zlabel("token", labelpad=-9)
    ax.set_yticks(range(H))
    ax.set_xlim(0, D)
    ax.set_ylim(-0.5, H - 0.5)
    ax.set_zlim(T, 0)  # token 0 at the top, as in the heatmaps
    ax.set_box_aspect((1.0, 1.1, 0.9))
    ax.tick_params(labelsize=5, pad=-3)
    ax.set_title(title, pad=0)
    ax.view_init(elev=20, azim=-50)


def make_qkv_cube(w, label: str = ""):
    """Q, K, V of one layer as (heads × tokens × head-dimension) cubes, one head's slice highlighted."""
    H, T, D = w.Q_all.shape
    fig = new_figure((8.3, 3.8), layout=None)
    for i, (name, A) in enumerate((("Q", w.Q_all), ("K", w.K_all), ("V", w.V_all))):
        ax = fig.add_subplot(1, 3, i + 1, projection="3d")
        _cube(ax, A, w.head, f"{name}: {H} heads × {T} tokens × {D}")
    fig.suptitle(f"Layer {w.layer}'s queries, keys and values are cubes: one {T} × {D} slice per head.\n"
                 f"Head {w.head} (coloured) is the slice drawn on the other pages; each head attends on its own — "
                 f"{label}")
    fig.subplots_adjust(left=0.0, right=1.0, wspace=0.0)
    return fig


def walkthrough(run, prompt: str, layer: int = 0, head: int = 0):
    run = as_run(run)
    ids = encode(run, prompt)
    cfg = run.config.model
    if not 0 <= layer < cfg.n_layer:
        raise ScratchLMError(f"--layer {layer}: the model has layers 0..{cfg.n_layer - 1}")
    if not 0 <= head < cfg.n_head:
        raise ScratchLMError(f"--head {head}: the model has heads 0..{cfg.n_head - 1}")
    return capture_walkthrough(run.model, ids, layer, head, token_labels(run.tokenizer, ids))


def qkv_walkthrough(run, prompt: str, layer: int = 0, head: int = 0, out_dir: str | Path = "figures") -> list[Path]:
    """The three walkthrough figures for one head on `prompt`: projections, attention, cube."""
    run = as_run(run)
    w = walkthrough(run, prompt, layer, head)
    label = run_name(run)
    paths = save(make_qkv_projections(w, label), out_dir, "qkv_projections")
    paths += save(make_qkv_attention(w, label), out_dir, "qkv_attention")
    paths += save(make_qkv_cube(w, label), out_dir, "qkv_cube")
    return paths


# ---- attention maps: the layers × heads grid ------------------------------------------

def make_attention_grid(maps: np.ndarray, tokens: list[str], title: str):
    """maps (L, H, T, T): one panel per head, layers down, heads across; tokens on the outer axes."""
    L, H, T, _ = maps.shape
    size = min(1.9, 7.0 / H, 4.8 / L)  # inches per panel: the grid fits half an A4 page ...
    size = min(1.9, max(size, T * 3.5 / (72 * 0.8)))  # ... unless token labels (3.5 pt at least) need more room
    fig = new_figure((max(4.0, size * H + 1.3), size * L + 0.9))
    axes = np.atleast_2d(fig.subplots(L, H, squeeze=False))
    fs = min(6.0, size * 72 / T * 0.8)  # token labels as large as the rows allow
    labelled = fs >= 3.5
    for layer in range(L):
        for head in range(H):
            ax = axes[layer, head]
            im = ax.imshow(maps[layer, head], cmap=ATTN_CMAP, vmin=0, vmax=1, interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if layer == 0:
                ax.set_title(f"head {head}", fontsize=7)
            if head == 0:
                ax.set_ylabel(f"layer {layer}\nquery", fontsize=7)
                if labelled:
                    token_ticks(ax, tokens, "y", size=fs, max_len=6)
            if layer == L - 1:
                ax.set_xlabel("key", fontsize=6)
                if labelled:
                    token_ticks(ax, tokens, "x", size=fs, max_len=6)
    cb = fig.colorbar(im, ax=axes, fraction=0.025, pad=0.02)
    cb.set_label("attention weight (each row sums to 1)", fontsize=7)
    fig.suptitle(title)
    return fig


def attention_grid(run, prompt: str, out_dir: str | Path = "figures") -> list[Path]:
    """Every layer's and head's attention map on `prompt`."""
    run = as_run(run)
    ids = encode(run, prompt)
    maps = attention_maps(run.model, ids)
    shown = prompt.replace("\n", "↵") if len(prompt) <= 60 else prompt[:59].replace("\n", "↵") + "…"
    title = (f"Where each token looks: attention of every head — {run_name(run)}\n"
             f"prompt “{shown}” ({len(ids)} tokens): row i = query token i, column j = key token j")
    return save(make_attention_grid(maps, token_labels(run.tokenizer, ids), title), out_dir, "attention_grid")


# ---- attention during training -----------------------------------------------------

def _mosaic(maps: np.ndarray, gap: int = 1) -> np.ndarray:
    """(L, H, T, T) -> one image, layers down and heads across, NaN gaps between maps."""
    L, H, T, _ = maps.shape
    out = np.full((L * (T + gap) - gap, H * (T + gap) - gap), np.nan)
    for layer in range(L):
        for head in range(H):
            out[layer * (T + gap): layer * (T + gap) + T, head * (T + gap): head * (T + gap) + T] = maps[layer, head]
    return out


def _frame_axes(ax, L, H, T, gap=1):
    ax.set_xticks([h * (T + gap) + T / 2 - 0.5 for h in range(H)])
    ax.set_xticklabels([str(h) for h in range(H)], fontsize=5.5)
    ax.set_yticks([la * (T + gap) + T / 2 - 0.5 for la in range(L)])
    ax.set_yticklabels([str(la) for la in range(L)], fontsize=5.5)
    ax.tick_params(length=0, pad=1)
    for s in ax.spines.values():
        s.set_visible(False)


def _pick(n: int, k: int) -> list[int]:
    """k indices spread evenly over range(n), first and last included."""
    return sorted(set(np.linspace(0, n - 1, min(n, k)).round().astype(int).tolist()))


def _step_label(snaps: Snapshots, i: int) -> str:
    v = snaps.val_loss[i]
    if np.isfinite(v):
        return f"step {snaps.steps[i]} · val loss {v:.2f}"
    return f"step {snaps.steps[i]}" + (" · untrained" if snaps.steps[i] == 0 else "")


def make_filmstrip(snaps: Snapshots, title: str, max_frames: int = 8):
    """The attention grid at (up to `max_frames`) recorded steps, left to right, top to bottom."""

    idx = _pick(len(snaps.steps), max_frames)
    cols = min(4, len(idx))
    rows = -(-len(idx) // cols)
    L, H, T = snaps.n_layer, snaps.n_head, snaps.maps.shape[-1]
    fig = new_figure((8.3, 0.6 + rows * 8.3 / cols * L / H * 0.95))
    axes = np.atleast_1d(fig.subplots(rows, cols, squeeze=False)).ravel()
    cmap = matplotlib.colormaps[ATTN_CMAP].with_extremes(bad="white")  # the gaps between maps
    for ax, i in zip(axes, idx):
        im = ax.imshow(_mosaic(snaps.maps[i]), cmap=cmap, vmin=0, vmax=1, interpolation="nearest")
        _frame_axes(ax, L, H, T)
        ax.set_title(_step_label(snaps, i), fontsize=7)
        ax.set_xlabel("head", fontsize=6, labelpad=1)
        ax.set_ylabel("layer", fontsize=6, labelpad=1)
    for ax in axes[len(idx):]:
        ax.axis("off")
    cb = fig.colorbar(im, ax=list(axes), fraction=0.02, pad=0.01)
    cb.set_label("attention weight", fontsize=7)
    fig.suptitle(title)
    return fig


def make_metrics_heatmaps(snaps: Snapshots, title: str):
    """One heads × steps heatmap per metric: when do previous-token and induction heads form?"""
    S, L, H = snaps.metrics["entropy"].shape
    fig = new_figure((8.3, max(5.0, 2.2 + 0.22 * L * H)))
    axes = fig.subplots(2, 2).ravel()
    heads = [f"L{la} H{h}" for la in range(L) for h in range(H)]
    xt = _pick(S, 10)
    for ax, name in zip(axes, METRICS):
        a = snaps.metrics[name].reshape(S, L * H).T  # rows: heads, columns: snapshots
        im = ax.imshow(a, cmap=METRIC_CMAP, vmin=0, vmax=1, aspect="auto", interpolation="nearest")
        ax.set_title(TITLES[name])
        ax.set_xticks(xt)
        ax.set_xticklabels([str(snaps.steps[i]) for i in xt], rotation=60)
        ax.set_xlabel("training step (one column per snapshot)")
        ax.set_yticks(range(L * H))
        ax.set_yticklabels(heads, fontsize=5 if L * H > 24 else 6)
        ax.set_ylabel("layer, head")
        for la in range(1, L):  # a line between layers
            ax.axhline(la * H - 0.5, color="white", lw=0.6)
        cb = fig.colorbar(im, ax=ax, fraction=0.046, pad=0.02)
        cb.set_label("fraction of log(i+1)" if name == "entropy" else "share of attention", fontsize=6)
    fig.suptitle(title)
    return fig


def evolution_gif(snaps: Snapshots, path: Path, title: str, fps: float = 2.0) -> Path:
    """An animated GIF: the attention grid at every recorded step, one frame each."""
    from matplotlib.animation import FuncAnimation, PillowWriter

    L, H, T = snaps.n_layer, snaps.n_head, snaps.maps.shape[-1]
    fig = new_figure((5.0, 0.9 + 4.2 * L / H))
    ax = fig.add_subplot()
    cmap = matplotlib.colormaps[ATTN_CMAP].with_extremes(bad="white")  # the gaps between maps
    im = ax.imshow(_mosaic(snaps.maps[0]), cmap=cmap, vmin=0, vmax=1, interpolation="nearest")
    _frame_axes(ax, L, H, T)
    ax.set_xlabel("head")
    ax.set_ylabel("layer")
    cb = fig.colorbar(im, ax=ax, fraction=0.04, pad=0.02)
    cb.set_label("attention weight")
    fig.suptitle(title, fontsize=8)
    label = ax.set_title(_step_label(snaps, 0))

    def frame(i):
        im.set_data(_mosaic(snaps.maps[i]))
        label.set_text(_step_label(snaps, i))
        return im, label

    anim = FuncAnimation(fig, frame, frames=len(snaps.steps), blit=False)
    path.parent.mkdir(parents=True, exist_ok=True)
    anim.save(path, writer=PillowWriter(fps=fps), dpi=90)
    import matplotlib.pyplot as plt

    plt.close(fig)
    return path


def evolution(run_dir: str | Path, out_dir: str | Path = "figures") -> list[Path]:
    """Film strip, metric heatmaps and GIF from a run's attention snapshots."""
    run_dir = Path(getattr(run_dir, "run_dir", run_dir))
    snaps = load_snapshots(run_dir)
    name = run_name(run_dir)
    probe = "".join(snaps.tokens).replace("␣", " ").replace("↵", " ")
    probe = probe if len(probe) <= 50 else probe[:49] + "…"
    paths = save(make_filmstrip(snaps, f"Attention on the probe “{probe}” as training goes — {name}\n"
                                       "each block: one head's map (query rows × key columns)"),
                 out_dir, "attention_filmstrip")
    paths += save(make_metrics_heatmaps(snaps, f"What each head does, at each snapshot — {name}"),
                  out_dir, "attention_metrics")
    gif = Path(out_dir) / "attention_evolution.gif"
    paths.append(evolution_gif(snaps, gif, f"Attention during training — {name}"))
    return paths


# ---- training curves ---------------------------------------------------------------

def _smooth(y: np.ndarray, n: int) -> np.ndarray:
    if n <= 1 or len(y) < n:
        return y
    k = np.ones(n) / n
    return np.convolve(np.pad(y, (n - 1, 0), mode="edge"), k, mode="valid")


def read_curves(run_dir: str | Path) -> dict:
    """Step records, eval records and doctor findings of a run folder (rewound steps dropped)."""
    from ..doctor.records import read_records  # the doctor's reader: same handling of resumes/rollbacks

    rec = read_records(run_dir)
    if not rec["steps"]:
        raise ScratchLMError(f"{run_dir}/metrics.jsonl has no training steps yet")
    return rec


def make_curves(rec: dict, title: str):
    """Loss, bits per byte, learning rate, gradient norm, tokens/s against step; findings marked."""
    steps = rec["steps"]
    s = np.array([r["step"] for r in steps])

    def col(key):
        return np.array([r.get(key) if r.get(key) is not None else np.nan for r in steps], dtype=float)

    ev = rec["evals"]
    es = np.array([r["step"] for r in ev])
    fig = new_figure((8.3, 5.8))
    axes = fig.subplots(2, 3).ravel()
    n = max(1, len(s) // 50)
    ax = axes[0]
    ax.plot(s, col("loss"), color="C0", alpha=0.3, lw=0.7, label="train (each step)")
    ax.plot(s, _smooth(col("loss"), n), color="C0", lw=1.2, label=f"train (mean of {n})" if n > 1 else None)
    if len(ev):
        ax.plot(es, [r["val_loss"] for r in ev], "o-", color="C3", ms=3, lw=1, label="validation")
    ax.set(title="loss", xlabel="step", ylabel="cross-entropy (nats per token)")
    ax.legend(frameon=False)
    ax = axes[1]
    if len(ev):
        ax.plot(es, [r["val_bpb"] for r in ev], "o-", color="C3", ms=3, lw=1)
    else:
        ax.text(0.5, 0.5, "no evaluation yet", ha="center", va="center", transform=ax.transAxes)
    ax.set(title="validation bits per byte", xlabel="step", ylabel="bits per byte of text")
    ax = axes[2]
    ax.plot(s, col("lr"), color="C2")
    ax.set(title="learning rate (schedule)", xlabel="step", ylabel="learning rate")
    ax.ticklabel_format(axis="y", style="sci", scilimits=(-2, 2))
    ax = axes[3]
    ax.plot(s, col("grad_norm"), color="C4", lw=0.7)
    clip = rec["config"].get("train", {}).get("grad_clip")
    if clip:
        ax.axhline(clip, color="0.4", ls=":", lw=0.8, label=f"clip = {clip:g}")
        ax.legend(frameon=False)
    ax.set(title="gradient norm (before clipping)", xlabel="step", ylabel="‖gradient‖ (L2)")
    ax.set_yscale("log")
    ax = axes[4]
    tps = col("tokens_per_s")
    ax.plot(s, tps / 1e3, color="C1", lw=0.7, alpha=0.5)
    ax.plot(s, _smooth(tps, n) / 1e3, color="C1", lw=1.2)
    ax.set(title="throughput", xlabel="step", ylabel="thousand tokens per second")
    ax.set_ylim(bottom=0)
    findings = rec.get("findings", [])
    ax = axes[5]
    ax.axis("off")
    ax.set_title("the doctor's findings")
    if findings:
        lines = [f"{i + 1}. step {f['step']}: {f['symptom']}" for i, f in enumerate(findings[:8])]
        for a in axes[:5]:
            for i, f in enumerate(findings[:8]):
                a.axvline(f["step"], color="red", ls="--", lw=0.7, alpha=0.7)
                a.annotate(str(i + 1), (f["step"], 1), xycoords=("data", "axes fraction"), color="red", fontsize=6,
                           ha="center", va="bottom")
        text = "\n".join(_wrap(line, 48) for line in lines)
    elif (Path(rec.get("run_dir", "")) / "diagnostics.jsonl").exists() or rec.get("doctor_ran"):
        text = "none: the live doctor saw no problem"
    else:
        text = "no doctor records\n(`scratchlm doctor RUN` checks a run)"
    ax.text(0, 1, text, va="top", ha="left", fontsize=6.5, transform=ax.transAxes, color="red" if findings else "0.3")
    fig.suptitle(title)
    return fig


def _wrap(text: str, width: int) -> str:
    return "\n   ".join(textwrap.wrap(text, width))


def curves(run_dir: str | Path, out_dir: str | Path = "figures") -> list[Path]:
    """Training curves of a run folder (metrics.jsonl), with the doctor's findings marked."""
    run_dir = Path(getattr(run_dir, "run_dir", run_dir))
    rec = read_curves(run_dir)
    rec["run_dir"] = str(run_dir)
    rec["doctor_ran"] = (run_dir / "probes.jsonl").exists()
    return save(make_curves(rec, f"Training curves — {run_name(run_dir)}"), out_dir, "curves")


# ---- sampling: the next-token distribution ------------------------------------------

@torch.no_grad()
def next_token_logits(run, prompt: str) -> np.ndarray:
    ids = encode(run, prompt)
    device = next(run.model.parameters()).device
    was_training = run.model.training
    run.model.eval()
    logits, _ = run.model(torch.tensor([ids], device=device))
    run.model.train(was_training)
    return logits[0, -1].float().cpu()


def make_sampling(logits: torch.Tensor, labels: list[str], temperatures, top_k: int, top_p: float, title: str,
                  n_show: int = 24):
    """One panel per temperature: the most likely next tokens' probabilities, with the tokens
    top-k and top-p would cut shaded, and the cumulative probability top-p reads."""
    fig = new_figure((8.3, 1.2 + 1.55 * len(temperatures)))
    axes = np.atleast_1d(fig.subplots(len(temperatures), 1, sharey=True))  # one scale: flatter is visibly flatter
    order = torch.argsort(logits, descending=True)[:n_show]  # the same tokens in every panel
    x = np.arange(len(order))
    for ax, t in zip(axes, temperatures):
        p = torch.softmax(logits / t, dim=-1)[order].numpy()
        kept_k = torch.isfinite(filter_logits(logits[None], t, top_k, 1.0)[0])[order].numpy()
        in_nucleus = torch.isfinite(filter_logits(logits[None], t, 0, top_p)[0])
        kept_p = in_nucleus[order].numpy()
        colors = ["C0" if a and b else ("0.75" if not a else "C1") for a, b in zip(kept_k, kept_p)]
        ax.bar(x, p, color=colors, edgecolor="0.3", lw=0.3)
        n_p = int(in_nucleus.sum())
        if n_p < len(order):  # top-p's cut-off is inside the picture: shade what it removes
            ax.axvspan(n_p - 0.5, len(order) - 0.5, color="C1", alpha=0.10, lw=0)
            ax.axvline(n_p - 0.5, color="C1", ls="--", lw=1)
        if top_k and top_k < len(order):
            ax.axvspan(top_k - 0.5, len(order) - 0.5, color="0.5", alpha=0.12, lw=0)
            ax.axvline(top_k - 0.5, color="0.3", ls="-", lw=0.8)
            ax.text(top_k - 0.2, 0.55, f"← top-k = {top_k} keeps these | cuts these →", fontsize=6, va="center",
                    ha="center", transform=ax.get_xaxis_transform(), bbox=dict(fc="white", ec="none", alpha=0.8))
        ax2 = ax.twinx()
        ax2.plot(x, np.cumsum(p), color="C3", lw=1, marker=".", ms=2)
        ax2.axhline(top_p, color="C3", ls=":", lw=0.8)
        ax2.text(len(order) - 0.5, top_p, f"p = {top_p:g}", color="C3", fontsize=6, ha="right", va="bottom")
        ax2.set_ylim(0, 1.08)
        ax2.set_ylabel("cumulative\nprobability", color="C3", fontsize=6.5)
        ax2.tick_params(axis="y", colors="C3", labelsize=6)
        ax2.spines["right"].set_visible(True)
        ax.set_title(f"temperature {t:g}: the top token has {p[0]:.0%}; top-p = {top_p:g} keeps {n_p} token(s)"
                     + (" (dashed line)" if n_p < len(order) else " (all shown)" if n_p == len(order)
                        else f", more than the {len(order)} shown")
                     + f"; top-k keeps {top_k or 'all'}", loc="left")
        ax.set_xticks(x)
        ax.set_xticklabels([labels[i] for i in order.tolist()], rotation=90, fontsize=6.5, fontfamily="monospace")
        ax.set_ylabel("probability")
        ax.set_xlim(-0.6, len(order) - 0.4)
    axes[-1].set_xlabel(f"the {len(order)} most likely next tokens (the same in every panel). Blue: may be drawn; "
                        "orange: cut by top-p; grey: cut by top-k")
    fig.suptitle(title)
    return fig


def sampling(run, prompt: str, out_dir: str | Path = "figures", temperatures=(0.5, 1.0, 1.5),
             top_k: int | None = None, top_p: float | None = None) -> list[Path]:
    """The next-token distribution after `prompt` at several temperatures, top-k / top-p shaded.
    top_k / top_p default to the run's [sample] settings (top-k 10 when the run has it off)."""
    run = as_run(run)
    sc = run.config.sample
    top_k = (sc.top_k or 10) if top_k is None else top_k
    top_p = sc.top_p if top_p is None else top_p
    if not 0 < top_p <= 1:
        raise ScratchLMError(f"top-p must be in (0, 1], got {top_p}")
    if any(t <= 0 for t in temperatures):
        raise ScratchLMError("temperatures must be positive (0 means greedy: no distribution to draw)")
    logits = next_token_logits(run, prompt)
    labels = token_labels(run.tokenizer, range(logits.numel()))
    shown = prompt if len(prompt) <= 40 else "…" + prompt[-39:]
    title = f"What comes after “{shown}”? Next-token probabilities — {run_name(run)}"
    return save(make_sampling(logits, labels, temperatures, top_k, top_p, title), out_dir, "sampling")


# ---- tokens: the text with token boundaries ------------------------------------------

def make_tokens(tok, text: str, title: str, width: int = 96):
    """The text as coloured boxes, one per token, with each token's id under it."""
    from matplotlib.patches import Rectangle

    ids = tok.encode(text)
    if not ids:
        raise ScratchLMError("the text is empty: give some text with --text")
    labels = token_labels(tok, ids)
    # lay the tokens out on a grid of monospace character cells, wrapping at `width`
    placed, row, col = [], 0, 0
    for i, lab in zip(ids, labels):
        n = max(len(lab), len(str(i)))
        if col + n > width and col > 0:
            row, col = row + 1, 0
        placed.append((row, col, n, lab, i))
        col += n + 0.6
        if lab.endswith("↵"):
            row, col = row + 1, 0
    rows = row + 1
    fig = new_figure((8.3, 0.9 + 0.36 * rows), layout=None)
    ax = fig.add_axes([0.01, 0.01, 0.98, 0.8])
    fs = 0.9 * 8.1 * 72 / (width * 0.6)  # points: a monospace character is about 0.6 em wide
    cw, rh = 1.0, 2.2  # a character cell is 1 wide; a row 2.2 high (text + id)
    for k, (r, c, n, lab, i) in enumerate(placed):
        y = -r * rh
        ax.add_patch(Rectangle((c * cw - 0.1, y - 0.55), n * cw + 0.2, 1.1, facecolor=f"C{k % 4}", alpha=0.25,
                               edgecolor=f"C{k % 4}", lw=0.6))
        ax.text(c * cw + n * cw / 2, y, lab, ha="center", va="center", fontsize=fs, fontfamily="monospace")
        ax.text(c * cw + n * cw / 2, y - 0.95, str(i), ha="center", va="center", fontsize=fs * 0.62, color="0.35",
                fontfamily="monospace")
    ax.set_xlim(-0.5, width + 0.5)
    ax.set_ylim(-(rows - 1) * rh - 1.4, 0.8)
    ax.axis("off")
    n_chars, n_bytes = len(text), len(text.encode("utf-8"))
    fig.suptitle(f"{title}\n{len(ids)} tokens for {n_chars} characters ({n_bytes} bytes): "
                 f"{n_bytes / len(ids):.2f} bytes per token. Each box is one token, its id below; "
                 "␣ = space, ↵ = newline",
                 fontsize=8.5)
    return fig


def tokens(tok, text: str, out_dir: str | Path = "figures",
           title: str = "How the tokenizer cuts the text") -> list[Path]:
    """The text with its token boundaries (`make_tokens`), saved."""
    return save(make_tokens(tok, text, title), out_dir, "tokens")


# ---- everything ------------------------------------------------------------------------

def render_all(run, out_dir: str | Path | None = None, prompt: str | None = None, layer: int = 0, head: int = 0,
               say=lambda message: None) -> list[Path]:
    """Every figure the run has data for, into out_dir (default RUN/figures). The attention
    figures use `prompt` (default: the run's probe prompt); evolution needs snapshots."""
    run = as_run(run)
    out_dir = Path(out_dir) if out_dir is not None else Path(run.run_dir) / "figures"
    prompt = prompt or default_prompt(run)
    paths = []
    if (Path(run.run_dir) / "metrics.jsonl").exists():
        paths += curves(run.run_dir, out_dir)
    try:
        paths += evolution(run.run_dir, out_dir)
    except ScratchLMError as e:
        say(f"viz: no evolution figures ({e})")
    paths += attention_grid(run, prompt, out_dir)
    paths += qkv_walkthrough(run, prompt, layer, head, out_dir)
    paths += sampling(run, prompt, out_dir)
    paths += tokens(run.tokenizer, prompt, out_dir, f"How {run_name(run)}'s tokenizer cuts the probe prompt")
    return paths
