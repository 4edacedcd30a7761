"""The tokenizer comparison written out: a Markdown table and panel, CSV, JSON and a plot.

Everything here turns a `compare.tokenizers.Comparison` into text or files; nothing is
measured again and nothing is printed (the command prints the strings it gets).
"""

from __future__ import annotations

import csv
import json
import textwrap
from pathlib import Path

from .tokenizers import KINDS, ONCE, PROBE_LINE, Comparison, Row

COLUMNS = ["tokenizer", "vocab", "ids used", "train s", "encode MB/s", "bytes/token", "tokens/word",
           "unknown tokens", "unseen words", "exact round trip"]


def _pct(x: float | None) -> str:
    if x is None:
        return "—"
    if x == 0:
        return "0"  # exactly zero, not a rounded small number
    return f"{100 * x:.3g}%"


def _cell(s: str) -> str:
    return s.replace("|", "\\|")


def ordered(rows: list[Row]) -> list[Row]:
    """By vocabulary size, then in the order of `KINDS`; the rows built once come last."""
    order = {k: i for i, k in enumerate(KINDS)}
    return sorted(rows, key=lambda r: (r.requested_vocab is None, r.requested_vocab or 0, order[r.key]))


def row_notes(rows: list[Row]) -> dict[str, int]:
    """Each distinct row note -> its footnote number."""
    notes: dict[str, int] = {}
    for r in ordered(rows):
        if r.note and r.note not in notes:
            notes[r.note] = len(notes) + 1
    return notes


def markdown_table(comp: Comparison) -> str:
    """The results as one Markdown table, a section per vocabulary size, footnotes below."""
    rows = ordered(comp.rows)
    foot = row_notes(rows)
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "|".join(["---"] + ["---:"] * 8 + ["---"]) + "|"]
    for r in rows:
        name = r.tokenizer + (f" [{foot[r.note]}]" if r.note else "")
        size = f"{r.vocab_size:,}"
        if r.requested_vocab is not None:
            name = f"{r.requested_vocab:,}: {name}"
        used = f"{r.used_ids:,} ({r.used_ids / max(1, r.vocab_size):.0%})"
        train = "pretrained" if r.train_seconds is None else f"{r.train_seconds:.1f}"
        rt = "yes" if r.round_trip else f"no: `{r.round_trip_failure.replace('`', 'ˋ')}`"
        cells = [name, size, used, train, f"{r.encode_mb_s:.2f}", f"{r.bytes_per_token:.2f}",
                 f"{r.tokens_per_word:.2f}", _pct(r.unk_rate), _pct(r.unseen_words), rt]
        lines.append("| " + " | ".join(_cell(c) for c in cells) + " |")
    for note, k in foot.items():
        lines.append(f"\n[{k}] {note}")
    return "\n".join(lines)


def header(comp: Comparison) -> str:
    s = comp.settings
    return (f"Tokenizers trained on {s['train_chars']:,} characters of {s['source'] or 'the corpus'}, measured on "
            f"{s['heldout_bytes']:,} bytes of held-out text ({s['heldout_words']:,} words; "
            f"{_pct(s['unseen_word_share'])} of them never occur in the training text).")


def legend() -> str:
    return (
        "Columns: *ids used*: distinct ids in the held-out encoding; *encode MB/s*: one call on the whole "
        "held-out text; *unknown tokens*: share of held-out tokens that are `<unk>`; *unseen words*: share of "
        "held-out words never seen in training (a property of the split); *exact round trip*: "
        "decode(encode(text)) == text on the held-out text and on the probe line "
        f"`{PROBE_LINE!r}`, with the first failing line."
    )


def _token_cell(tokens: list[str]) -> str:
    return " ".join("`" + t.replace("`", "ˋ") + "`" for t in tokens)


def panel_markdown(comp: Comparison) -> str:
    """The unknown-words panel: for each word, each tokenizer's tokens."""
    if not comp.panel:
        return ""
    out = [f"Words the {comp.panel_vocab:,}-entry word-level vocabulary does not hold, as each tokenizer "
           f"(at {comp.panel_vocab:,} where it is trained) splits them; each word is encoded after a space, as in "
           "running text (`␣` is a space, `▁` SentencePiece's mark for one, `<F0>` a lone byte of a longer "
           "character)."]
    for pw in comp.panel:
        where = f"{pw.count}× in the held-out text" if pw.count else "a fixed probe word"
        out.append(f"\n**{pw.word}**: {pw.kind}, {where}\n")
        out.append("| tokenizer | tokens | n |\n|---|---|---:|")
        for name, toks in pw.splits.items():
            out.append(f"| {name} | {_cell(_token_cell(toks))} | {len(toks)} |")
    return "\n".join(out)


def report_markdown(comp: Comparison, command: str = "") -> str:
    parts = [header(comp), "", markdown_table(comp), "", legend()]
    if comp.notes:
        parts += ["", "Left out or changed:"] + [f"- {n}" for n in comp.notes]
    if comp.panel:
        parts += ["", "## Unknown words", "", panel_markdown(comp)]
    if command:
        parts += ["", f"Produced by `{command}`."]
    return "\n".join(parts) + "\n"


def write_csv(comp: Comparison, path: Path) -> None:
    rows = ordered(comp.rows)
    fields = list(Row.__dataclass_fields__)
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=fields)
        w.writeheader()
        for r in rows:
            w.writerow(r.to_dict())


def write_json(comp: Comparison, path: Path) -> None:
    d = comp.to_dict()
    d["rows"] = [r.to_dict() for r in ordered(comp.rows)]
    path.write_text(json.dumps(d, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")


# Each row key's colour and marker; ours blue, SentencePiece orange/green, the rest apart.
STYLE = {
    "bpe-gpt4": ("#1f4e9c", "o", "-"),
    "bpe-gpt2": ("#5b8fd6", "s", "-"),
    "wordbpe": ("#7fb3e8", "^", "-"),
    "sp-bpe": ("#e07b00", "o", "-"),
    "sp-bpe-default": ("#e07b00", "o", ":"),
    "sp-unigram": ("#2e9e4f", "D", "-"),
    "sp-unigram-default": ("#2e9e4f", "D", ":"),
    "hf-bpe": ("#8e44ad", "v", "--"),
    "word": ("#c0392b", "P", "-"),
    "char": ("#555555", "X", ""),
    "cl100k": ("#000000", "*", ""),
}


def plot(comp: Comparison, path: Path) -> None:
    """Bytes per token and unknown-token rate against vocabulary size, one line per tokenizer."""
    import matplotlib  # optional heavy import: only the plot needs it

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(13, 5.2))
    for key in KINDS:
        rows = sorted((r for r in comp.rows if r.key == key), key=lambda r: r.vocab_size)
        if not rows:
            continue
        colour, marker, line = STYLE[key]
        xs = [r.vocab_size for r in rows]
        kw = dict(color=colour, marker=marker, linestyle=line or "none", label=KINDS[key].replace("`", ""),
                  markersize=11 if key in ONCE else 6)
        ax1.plot(xs, [r.bytes_per_token for r in rows], **kw)
        ax2.plot(xs, [100 * r.unk_rate for r in rows], **kw)
    word = sorted((r for r in comp.rows if r.key == "word"), key=lambda r: r.vocab_size)
    if word:  # its bytes per token looks best only because every unknown word costs one <unk>
        ax1.text(0.02, 0.97, "word-level: each unknown word\nis one <unk> token: its text\nis lost, not compressed",
                 transform=ax1.transAxes, va="top", fontsize=7, color=STYLE["word"][0])
    for ax in (ax1, ax2):
        ax.set_xscale("log", base=2)
        ax.set_xlabel("vocabulary size (log scale)")
        ax.grid(True, which="major", alpha=0.3)
    ax1.set_ylabel("held-out bytes per token (higher: fewer tokens)")
    ax1.set_title("How much text one token carries")
    # symlog: zero is a real value here (byte-level tokenizers never emit <unk>) and must show,
    # while the word-level rate is tens of percent
    ax2.set_yscale("symlog", linthresh=0.01)
    ax2.set_ylim(-0.002, 100)
    ax2.set_ylabel("unknown tokens, % of held-out tokens (symlog)")
    ax2.set_title("Text lost to <unk>")
    zero = [KINDS[k] for k in KINDS if any(r.key == k for r in comp.rows)
            and all(r.unk_rate == 0 for r in comp.rows if r.key == k)]
    if zero:
        names = "; ".join(z.split(" (")[0].replace("`", "") for z in zero)
        text = textwrap.fill("exactly 0 on the held-out text: " + names, 75)
        ax2.text(0.02, 0.07, text, transform=ax2.transAxes, fontsize=7, va="bottom")
    handles, labels = ax1.get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=4, fontsize=8, frameon=False)
    s = comp.settings
    fig.suptitle(f"Tokenizers on {s['source'] or 'the corpus'}: trained on {s['train_chars'] / 1e6:.2f}M characters, "
                 f"measured on {s['heldout_bytes'] / 1e6:.2f} MB held out", fontsize=11)
    fig.tight_layout(rect=(0, 0.12, 1, 0.95))
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_all(comp: Comparison, out_dir: Path, command: str = "") -> dict[str, Path]:
    """results.csv, results.json, report.md and plot.png in `out_dir`; returns their paths."""
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {"csv": out_dir / "results.csv", "json": out_dir / "results.json",
             "markdown": out_dir / "report.md", "plot": out_dir / "plot.png"}
    write_csv(comp, paths["csv"])
    write_json(comp, paths["json"])
    paths["markdown"].write_text(report_markdown(comp, command), encoding="utf-8")
    if comp.rows:
        plot(comp, paths["plot"])
    else:
        del paths["plot"]
    return paths

