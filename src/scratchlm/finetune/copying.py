"""Which heads copy the answer from the passage: attention from the answer's positions to its source.

An answer to a reading question is copied: "Who speaks first?" → HORATIO, a name that stands
in the passage. While the model writes the answer, the heads doing the copying look at where
it stands. For one answered question this measures, for every layer and head, the share of
attention that the positions writing the answer (from `<|assistant|>` to the answer's last
token) put on the passage tokens that spell the answer, and draws it: a layers × heads map,
and the strongest head's attention over the prompt from the position that writes the answer's
first token. The maps come from `viz.capture.attention_maps` (the written-out attention with
its weights kept), so the figure shows the weights the model really used.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..viz.capture import attention_maps, token_labels
from ..viz.style import new_figure, save
from .data import encode_conversation, prompt_ids


def source_tokens(tok, ids: list[int], passage: str, answer: str) -> np.ndarray:
    """Bool mask over `ids`: tokens of the user turn whose characters overlap an occurrence of
    `answer` inside `passage` (the user's content up to the question)."""
    spans, start = [], passage.find(answer)
    while start >= 0 and answer:
        spans.append((start, start + len(answer)))
        start = passage.find(answer, start + 1)
    mask = np.zeros(len(ids), dtype=bool)
    pos = 0  # characters of the user's content decoded so far (ids[0] is <|user|>)
    for i, t in enumerate(ids[1:], 1):
        piece = tok.decode([t])
        end = pos + len(piece)
        mask[i] = any(a < end and pos < b for a, b in spans)
        pos = end
        if pos >= len(passage):
            break
    return mask


def copy_scores(model, tok, question: str, answer: str) -> dict:
    """Attention on the answer's source, per layer and head, for a user `question` (passage, a blank
    line, the question) and the `answer` the model gave."""
    messages = [{"role": "user", "content": question}, {"role": "assistant", "content": answer}]
    prompt = prompt_ids(tok, messages[:1])
    ids, _ = encode_conversation(tok, messages)
    ids = ids[: model.config.block_size]
    passage = question.rsplit("\n\n", 1)[0]
    source = source_tokens(tok, ids, passage, answer)
    maps = attention_maps(model, ids)  # (L, H, T, T)
    writers = list(range(len(prompt) - 1, len(ids) - 1))  # positions whose next token is an answer token
    share = maps[:, :, writers][..., source].sum(-1).mean(-1) if source.any() else np.zeros(maps.shape[:2])
    return {"ids": ids, "prompt_len": len(prompt), "source": source, "maps": maps, "share": share}


def copy_figure(model, tok, question: str, answer: str, out_dir: str | Path, title: str = "") -> list[Path]:
    """Draw `copy_scores` for one answered question; returns the PNG and SVG paths."""
    s = copy_scores(model, tok, question, answer)
    share, L, H = s["share"], *s["share"].shape
    layer, head = np.unravel_index(int(share.argmax()), share.shape)
    fig = new_figure()
    grid = fig.add_gridspec(1, 2, width_ratios=[1, 3])
    ax = fig.add_subplot(grid[0])
    im = ax.imshow(share, cmap="viridis", vmin=0, vmax=1, aspect="auto")
    ax.set(xticks=range(H), yticks=range(L), xlabel="head", ylabel="layer",
           title="attention on the answer\nin the passage, while writing it")
    for (i, j), v in np.ndenumerate(share):
        ax.text(j, i, f"{v:.2f}", ha="center", va="center", fontsize=6, color="w" if v < 0.6 else "k")
    fig.colorbar(im, ax=ax, shrink=0.6, label="share of attention")
    ax = fig.add_subplot(grid[1])
    p = s["prompt_len"]
    row = s["maps"][layer, head, p - 1, :p]  # from <|assistant|>: the position that writes the first answer token
    colors = np.where(s["source"][:p], "#d62728", "#7f7f7f")
    ax.bar(range(p), row, color=colors, width=0.9)
    labels = token_labels(tok, s["ids"][:p])
    ax.set_xticks(range(p), labels, rotation=90, fontsize=4.5)
    ax.set(ylabel="attention weight", xlim=(-0.8, p - 0.2),
           title=f"layer {layer}, head {head}: attention from <|assistant|>, the position that writes the "
                 f"answer's first token\n(red: the answer's tokens in the passage)")
    fig.suptitle(title or f"answer {answer!r}: which heads copy it from the passage")
    return save(fig, out_dir, "copying_heads")
