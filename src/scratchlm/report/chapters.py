"""The guide's nine chapters: each explains an idea for a learner, then shows this run.

A chapter is a function `(facts, ctx) -> list of blocks` (see doc.py). Parts made by
other extras (the viz figures, the tokenizer comparison, the ablation, fine-tuning, the
doctor) are looked up when the chapter is written; when one is missing the chapter
says so and gives the command that produces it, and the guide is still written.
"""

from __future__ import annotations

import csv
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from .. import ablate, guide
from ..doctor.diagnose import diagnose
from ..doctor.records import drop_rewound, read_jsonl
from ..errors import ScratchLMError
from ..finetune.evaluate import RESULT_FILE, builtin_questions, evaluate_run, save_result
from ..finetune.sft import INFO_FILE as FINETUNE_INFO
from ..inference import generate
from ..model import attention
from ..tokenizer import naive
from ..train import memory
from ..viz import figures as viz, snapshots
from .doc import Block, Bullets, Code, Figure, Heading, Math, Note, Para, Table, from_markdown
from .facts import Facts, class_excerpt, parameter_table, source_of, token_pieces
from .figures import block_diagram, training_curves


@dataclass
class Context:
    """Where figures go while the guide is built, and what the report was asked to do."""

    build_dir: Path  # figures are written here
    say: Callable[[str], None] = lambda m: None
    samples: bool = True  # generate samples at several temperatures
    memory: str = "estimate"  # "measure" (a few real steps per variant, cached), "estimate" or "skip"
    compare_dir: Path | None = None  # a `scratchlm tokenizer compare` output folder
    ablation_dir: Path | None = None  # a `scratchlm ablate` output folder
    evaluate: bool = False  # score a fine-tuned run on the held-out questions when it has no scores yet
    finetuned_dir: Path | None = None  # the fine-tuned run for chapter 7 (default: found beside this run)
    notes: list[str] = field(default_factory=list)  # what is missing, for the command's summary

    def figure(self, name: str) -> Path:
        return self.build_dir / name


def missing(ctx: Context, what: str, command: str) -> Note:
    ctx.notes.append(what)
    return Note(f"Not in this guide yet: {what}. It is produced by:", command=command, missing=True)


def fmt_int(n) -> str:
    return f"{n:,}" if n is not None else "n/a"


def fmt_f(x, digits: int = 4) -> str:
    return f"{x:.{digits}f}" if isinstance(x, (int, float)) and math.isfinite(x) else "n/a"


def run_arg(facts: Facts) -> str:
    return str(facts.run_dir)


# --- 1 Tokenization -------------------------------------------------------------------

PROBE_WORDS = ["the", "king", "Romeo", "wherefore", "thou'rt", "unfathomable", "Zyzzyva", "covfefe", "2026",
               "naïve", "HTTPServer"]


def chapter_tokenization(facts: Facts, ctx: Context) -> list[Block]:
    data = facts.config.get("data", {})
    out: list[Block] = [
        Heading("Tokenization"),
        Para("A language model reads numbers, not letters. A *tokenizer* cuts text into pieces (tokens) and gives "
             "each piece an id. Cutting into single characters makes sequences long; cutting into whole words "
             "needs an enormous vocabulary and still meets words it has never seen. **Byte-pair encoding** (BPE) "
             "sits in between: it starts from the 256 possible bytes, so every text can be written, and learns "
             "merges of frequent neighbours, so common words become one token and rare words a few."),
        Heading("The textbook trainer", 2),
        Para("This is the whole algorithm, as the slow, obvious loop this package keeps as the lesson and as the "
             "test oracle of its fast trainer (`scratchlm/tokenizer/naive.py`, taken from the installed package):"),
        Code(source_of(naive.get_stats) + "\n\n" + source_of(naive.merge) + "\n\n" + source_of(naive.train_naive),
             caption="The textbook BPE trainer: count pairs, merge the most frequent, repeat."),
    ]
    out += [Para("The guide's own sketch works on words with an end-of-word marker `</w>` instead of bytes "
                 "(`scratchlm.guide.train_bpe`):"),
            Code("\n\n".join(source_of(f) for f in (guide.get_stats, guide.merge_vocab, guide.train_bpe)),
                 caption="The guide's word-level BPE with `</w>` (`scratchlm.guide`).")]
    out.append(Heading("This run's tokenizer", 2))
    run = facts.run
    if run is None:
        return out + [missing(ctx, "the tokenizer's vocabulary and word splits (no checkpoint)",
                              f"scratchlm train --out {run_arg(facts)}")]
    tok = run.tokenizer
    kind = type(tok).__name__
    bpt = facts.bytes_per_token()
    rows = [["type", f"{kind} ({data.get('tokenizer', '?')})"], ["vocabulary size", fmt_int(tok.vocab_size)]]
    if hasattr(tok, "merges"):
        rows.append(["learned merges", fmt_int(len(tok.merges))])
    if getattr(tok, "pattern_name", None):
        rows.append(["pre-split pattern", str(tok.pattern_name)])
    if bpt:
        rows.append(["bytes per token (held-out text)", f"{bpt:.2f}"])
    out.append(Table(["", "this run"], rows, caption="The tokenizer this run trained.", align="lr"))
    if hasattr(tok, "merges") and hasattr(tok, "token_bytes") and tok.merges:
        def show(t: int) -> str:  # a token's text; part of a UTF-8 character shows as \xc3
            return tok.token_bytes(t).decode("utf-8", "backslashreplace").replace(" ", "␣").replace("\n", "↵")

        first = []
        for i, (a, b) in enumerate(tok.merges[:12]):
            first.append([str(256 + i), f"`{show(a)}` + `{show(b)}`", f"`{show(256 + i)}`"])
        out += [Para("The first merges it learned are the most frequent pairs of the training text "
                     "(␣ is a space, ↵ a line break):"),
                Table(["id", "pair", "new token"], first, caption="The first twelve merges of this run's tokenizer.",
                      align="rll")]
        longest = sorted(range(256, 256 + len(tok.merges)), key=lambda t: -len(tok.token_bytes(t)))[:10]
        out.append(Para("Its longest tokens: " + ", ".join(f"`{show(t)}`" for t in longest) + "."))
    splits = [[w, " ".join(f"`{p}`" for p in token_pieces(tok, " " + w)), str(len(token_pieces(tok, " " + w)))]
              for w in PROBE_WORDS]
    out += [Para("How words split (each with the space before it, as inside a sentence). Frequent words are one "
                 "token; a word the tokenizer never saw still splits into known pieces, down to single bytes if "
                 "need be, so no text is ever unknown:"),
            Table(["word", "tokens", "count"], splits, caption="Sample words, split by this run's tokenizer.",
                  align="llr")]
    out += viz_figures(facts, ctx, "tokens", quiet=True)
    out += compare_part(facts, ctx)
    out += [Heading("Why BPE beats word-level tokenizers on unknown words", 2),
            Para("A word-level tokenizer keeps the N most frequent training words and maps every other word to one "
                 "`<unk>` token: the model cannot read a new name, a misspelling or a number, and cannot write one "
                 "either. Byte-level BPE has no `<unk>`: its vocabulary starts with all 256 bytes, so any string "
                 "(emoji and other scripts included) is a sequence of known tokens, and the merges only make "
                 "common strings shorter. The cost is a longer sequence for rare words, which is why vocabulary "
                 "size is a trade-off between sequence length and embedding size.")]
    return out


def compare_part(facts: Facts, ctx: Context) -> list[Block]:
    """The report of `scratchlm tokenizer compare` (report.md, plot.png), when its output folder is there."""
    out: list[Block] = [Heading("Tokenizers compared", 2)]
    folder = ctx.compare_dir or _first_dir(facts.run_dir, ("tokenizer-compare", "tokenizer_compare", "compare"))
    command = f"scratchlm tokenizer compare --quick --out {facts.run_dir / 'tokenizer-compare'}"
    if folder and (folder / "report.md").exists():
        blocks = first_tables(from_markdown((folder / "report.md").read_text(encoding="utf-8")), 5)
        blocks.append(Para(f"From `{folder / 'report.md'}`, written by `scratchlm tokenizer compare` "
                           "(its CSV, JSON and the rest of the unknown-words panel are in the same folder)."))
        tables = [b for b in blocks if isinstance(b, Table)]
        for i, b in enumerate(tables):  # the first is the measurements, the others the unknown-words panel
            b.caption = b.caption or ("Tokenizers measured on held-out text." if i == 0 else
                                      "How each tokenizer splits a word that the word-level vocabulary lacks.")
        out += blocks
    elif folder and (table := read_table(folder)) is not None:
        header, rows = table
        out.append(Table(header, rows, caption=f"Tokenizers measured on held-out text ({folder.name}/).",
                         align="l" + "r" * (len(header) - 1)))
    else:
        return out + [missing(ctx, "the tokenizer comparison table (SentencePiece, tiktoken, word-level and ours)",
                              command)]
    for name in ("plot.svg", "plot.png"):
        if (folder / name).exists():
            out.append(Figure(folder / name, "Bytes per token and unknown-token rate against vocabulary size "
                                             "(`scratchlm tokenizer compare`)."))
            break
    return out


def first_tables(blocks: list[Block], n: int) -> list[Block]:
    """The blocks up to the n-th table; the line that introduces the next table goes too."""
    tables = [i for i, b in enumerate(blocks) if isinstance(b, Table)]
    if len(tables) <= n:
        return blocks
    cut = tables[n]
    if cut > 0 and isinstance(blocks[cut - 1], Para):
        cut -= 1
    return blocks[:cut]


def _first_dir(base: Path, names) -> Path | None:
    for n in names:
        if (base / n).is_dir():
            return base / n
    return None


def read_table(folder: Path, max_cols: int = 8) -> tuple[list[str], list[list[str]]] | None:
    """A results table written by another command: results.csv (or the first .csv), as strings."""
    files = sorted(folder.glob("*.csv"))
    if not files:
        return None
    path = next((f for f in files if f.stem in ("results", "compare", "ablation")), files[0])
    with path.open(newline="", encoding="utf-8") as f:
        rows = list(csv.reader(f))
    if len(rows) < 2:
        return None
    header = rows[0][:max_cols]

    def cell(s: str) -> str:
        try:
            x = float(s)
        except ValueError:
            return s
        return f"{x:,.0f}" if abs(x) >= 1000 else f"{x:.3g}" if x != int(x) else str(int(x))

    return header, [[cell(c) for c in r[:max_cols]] for r in rows[1:]]


# --- 2 Attention ----------------------------------------------------------------------

def chapter_attention(facts: Facts, ctx: Context) -> list[Block]:
    out: list[Block] = [
        Heading("Attention"),
        Para("Attention is how a position gathers information from the positions before it. Each token's vector "
             "x is projected three ways: a *query* q (what am I looking for?), a *key* k (what do I offer?) and a "
             "*value* v (what do I pass on?). The match between a query and every key, scaled and turned into "
             "weights by a softmax, says how much of each value to take:"),
        Math('"Attention"(Q, K, V) = op("softmax")((Q K^T) / sqrt(d_k) + M) V',
             "Attention(Q, K, V) = softmax(QKᵀ / √d_k + M) V"),
        Para("Dividing by √d_k keeps the scores' spread independent of the head size, so the softmax does not "
             "saturate. M is the causal mask: −∞ above the diagonal, so a position never sees the future. "
             "Several *heads* do this side by side on slices of the vector, each free to look for something "
             "else; their outputs are concatenated and projected back."),
        Code(source_of(attention.scaled_dot_product_attention),
             caption="Attention written out, as the model runs it (`scratchlm/model/attention.py`)."),
    ]
    out += [Para("The guide writes the same five lines with a 0/1 mask (1 = may attend), filling the masked "
                 "scores with −10⁹ before the softmax; `scratchlm.guide` runs them as written and the tests "
                 "check they agree with ours:"),
            Code(source_of(guide.scaled_dot_product_attention), caption="The guide's attention (`scratchlm.guide`).")]
    out.append(Heading("Q, K and V on a prompt, for one head", 2))
    out += viz_figures(facts, ctx, "qkv")
    out.append(Heading("Every layer and head", 2))
    out += viz_figures(facts, ctx, "attention")
    return out


# --- 3 Transformer block --------------------------------------------------------------

def chapter_block(facts: Facts, ctx: Context) -> list[Block]:
    mc = dict(facts.config.get("model", {}))
    if facts.run is not None and hasattr(facts.run.model.config, "ff_width"):
        width = facts.run.model.config.ff_width
        mc["ff_dim"] = width() if callable(width) else width  # the real hidden width (0 in the config: default)
    out: list[Block] = [
        Heading("The transformer block and the GPT stack"),
        Para("A GPT is a stack of identical *blocks* on a *residual stream*: the token's vector flows straight "
             "up the stack, and each block adds a correction to it. In a block, attention lets tokens exchange "
             "information, then a small feed-forward network (MLP) processes each token on its own. "
             "Normalisation keeps the numbers in range. At the top, the output layer scores every vocabulary "
             "entry as the next token."),
        Figure(block_diagram(mc, ctx.figure("block_diagram.svg")),
               f"This run's model: {mc.get('n_layer')} blocks of width {mc.get('n_embd')} with "
               f"{mc.get('n_head')} heads, and one block opened up.", width=0.85),
        Heading("The guide's classic block and ours", 2),
        Para("The guide's block is *post-LayerNorm*, as in the original Transformer: `x = ln1(x + attn(x))`, then "
             "`x = ln2(x + ff(x))`, with a ReLU feed-forward network. GPT-2 and nearly every model since moved "
             "the normalisation *before* each sub-layer (`x = x + attn(ln1(x))`): the residual stream is then "
             "never normalised, gradients reach the first layers unchanged, and training tolerates larger "
             "learning rates without warm-up tricks."),
    ]
    run = facts.run
    out.append(Code(source_of(guide.TransformerBlock), caption="The guide's classic block (`scratchlm.guide`)."))
    if run is not None:
        block = run.model.transformer.h[0]
        out.append(Code(source_of(type(block)), caption=f"Our block, `{type(block).__module__}.{type(block).__name__}` "
                                                         "(the code that trained this run)."))
    out += ablation_part(facts, ctx)
    out.append(Heading("Where the parameters are", 2))
    if run is None:
        out.append(missing(ctx, "the parameter count per part (no checkpoint)",
                           f"scratchlm train --out {run_arg(facts)}"))
    else:
        rows = [[label, fmt_int(per), fmt_int(total)] for label, per, total in parameter_table(run.model)]
        total = facts.n_params
        rows.append(["**total**", "", f"**{fmt_int(total)}**"])
        out += [Table(["part", "each", "all"], rows, caption=f"The {fmt_int(total)} parameters of this run's model.",
                      align="lrr"),
                Para(block_share_text(mc))]
        attn = type(block.attn)
        out += [Heading("The real code", 2),
                Para("The classes below are read from the installed package with `inspect.getsource`: they are "
                     "exactly what trained this run."),
                Code(source_of(attn), caption=f"Multi-head attention, `{attn.__module__}.{attn.__name__}`."),
                Code(class_excerpt(type(run.model), ("__init__", "forward")),
                     caption=f"The model, `{type(run.model).__module__}.{type(run.model).__name__}`: building the "
                             "stack and the forward pass (its other methods serve the KV cache and the fast decoder).")]
    return out


def ablation_table(folder: Path) -> list[Block]:
    """ablation.json as `scratchlm ablate` prints it (its own table function), or [] when it cannot be read."""
    path = folder / "ablation.json"
    if not path.exists():
        return []
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        rows = [{k: (math.nan if v is None else v) for k, v in r.items()} for r in data["rows"]]  # JSON has no NaN
        blocks = from_markdown(ablate.table(rows))
    except (json.JSONDecodeError, KeyError, TypeError, ValueError):
        return []
    if data.get("command"):
        blocks.append(Para(f"Made with `{data['command']}`."))
    return blocks


def block_share_text(mc: dict) -> str:
    """Where the weights are, by formula, with this run's sizes."""
    C, L, V = mc.get("n_embd") or 0, mc.get("n_layer") or 0, mc.get("vocab_size") or 0
    blocks, emb = 12 * C * C * L, V * C
    where = "the blocks" if blocks > emb else "the token embedding"
    return (f"Per block, attention holds about 4·C² weights (Q, K, V and the output projection) and a 4× MLP "
            f"8·C², so about 12·C² per block: here 12 × {C}² × {L} blocks ≈ {blocks:,}. "
            f"The token embedding holds V·C = {V:,} × {C} = {emb:,}, so most weights sit in {where}. "
            "With a large vocabulary and a small width the embedding can outweigh all the blocks — one reason "
            "the output layer shares its matrix (weight tying).")


def ablation_part(facts: Facts, ctx: Context) -> list[Block]:
    """The results of `scratchlm ablate` (a Markdown report or a CSV, and its plots), when the folder is there."""
    folder = ctx.ablation_dir or _first_dir(facts.run_dir, ("ablation", "ablate"))
    md = next((folder / n for n in ("report.md", "results.md", "ablation.md") if (folder / n).exists()), None) \
        if folder else None
    blocks = ablation_table(folder) if folder and md is None else []
    table = read_table(folder) if folder and md is None and not blocks else None
    if md is None and table is None and not blocks:
        return [missing(ctx, "the ablation (the guide's block against ours, trained for the same time)",
                        f"scratchlm ablate --preset tiny --budget 60 --change model.norm_position=post "
                        f"--change model.mlp=relu --out {facts.run_dir / 'ablation'}")]
    out: list[Block] = [Para(f"Each change below was trained for the same time on the same data and seed as the "
                             f"baseline (`scratchlm ablate`, results in `{folder}`):")]
    if md is not None or blocks:
        blocks = blocks or first_tables(from_markdown(md.read_text(encoding="utf-8")), 3)
        for b in blocks:
            if isinstance(b, Table) and not b.caption:
                b.caption = "Ablation: each change against the baseline, same time budget."
        out += blocks
    else:
        header, rows = table
        out.append(Table(header, rows, caption="Ablation: each change against the baseline, same time budget.",
                         align="l" + "r" * (len(header) - 1)))
    figs = sorted(folder.glob("*.svg")) or sorted(folder.glob("*.png"))
    for f in figs[:4]:
        out.append(Figure(f, f"Ablation: {f.stem.replace('_', ' ')} (`scratchlm ablate`)."))
    return out


# --- 4 Training -----------------------------------------------------------------------

def chapter_training(facts: Facts, ctx: Context) -> list[Block]:
    tc = facts.config.get("train", {})
    out: list[Block] = [
        Heading("Training"),
        Para("Training shows the model a window of text and asks it, at every position, for the next token; the "
             "loss is the cross-entropy of the true next token (nats per token; ln V for a uniform guess). "
             "Bits per byte divides the summed loss by the bytes of text it covers (and by ln 2), so runs with "
             "different tokenizers compare fairly. AdamW updates the weights; the learning rate warms up, then "
             "decays."),
    ]
    if not facts.steps:
        return out + [missing(ctx, "training records (metrics.jsonl is empty)",
                              f"scratchlm train --out {run_arg(facts)}")]
    fig = viz_figures(facts, ctx, "curves", quiet=True)
    if not fig:
        fig = [Figure(training_curves(facts.steps, facts.evals, facts.name, ctx.figure("curves.svg")),
                      "Loss, validation bits per byte and learning rate against the step.")]
    out += fig
    ev = facts.final_eval
    V = facts.vocab_size
    rows = [["steps", fmt_int(facts.last_step)],
            ["training time", f"{facts.train_time:.0f} s" if facts.train_time else "n/a"],
            ["loss at step 1 (uniform guess: ln V)",
             f"{facts.steps[0]['loss']:.3f} ({math.log(V):.3f})" if V else "n/a"],
            ["final training loss", fmt_f(facts.steps[-1].get("loss"))],
            ["final validation loss", fmt_f(ev["val_loss"]) if ev else "n/a"],
            ["best validation loss", fmt_f(facts.best_val_loss)],
            ["final validation bits per byte", fmt_f(ev["val_bpb"], 3) if ev else "n/a"],
            ["tokens per second (median)", fmt_int(round(facts.median("tokens_per_s") or 0))],
            ["MFU (median; model FLOPs ÷ peak)",
             f"{100 * facts.median('mfu'):.0f}%" if facts.median("mfu") else "n/a"]]
    out.append(Table(["", "this run"], rows, caption="Training in numbers.", align="lr"))
    if facts.evals:
        evs = facts.evals
        if len(evs) > 12:  # every k-th, and the last
            k = math.ceil(len(evs) / 12)
            evs = evs[::k] + ([evs[-1]] if (len(evs) - 1) % k else [])
        rows = [[fmt_int(e["step"]), fmt_f(e["val_loss"]), fmt_f(e["val_bpb"], 3)] for e in evs]
        out.append(Table(["step", "val loss", "bits/byte"], rows, caption="Evaluations on the held-out text.",
                         align="rrr"))
    else:
        out.append(missing(ctx, "an evaluation (the run stopped before its first)",
                           f"scratchlm train --resume {run_arg(facts)}"))
    out += [Heading("Learning-rate schedule", 2),
            Para(f"This run: peak {tc.get('lr')}, {tc.get('warmup_steps')} warm-up steps, then `{tc.get('schedule')}` "
                 f"decay to {tc.get('min_lr_ratio')} × the peak. Warm-up lets AdamW's moment estimates settle before "
                 "large steps; the decay lets the weights settle into a minimum at the end.")]
    out += techniques(facts, ctx)
    out += [Heading("Many GPUs and machines", 2),
            Para("DistributedDataParallel runs one process per GPU, each on its own slice of every batch; after "
                 "backward the gradients are averaged (all-reduce), so every copy takes the same step. The "
                 "batch per step stays the same; each process does 1/N of it. The same command scales out:"),
            Code(f"torchrun --standalone --nproc_per_node 8 -m scratchlm train --out {facts.run_dir}-ddp\n"
                 "# two machines × 8 GPUs: the same line on each (node0 = a host both reach)\n"
                 "torchrun --nnodes 2 --nproc_per_node 8 --rdzv-backend c10d --rdzv-endpoint node0:29500 \\\n"
                 f"         --rdzv-id {facts.name} -m scratchlm train --out /shared/runs/{facts.name}\n"
                 "# shard weights, gradients and AdamW state too (FSDP)\n"
                 "torchrun --standalone --nproc_per_node 8 -m scratchlm train --train.fsdp true", lang="bash")]
    return out


def techniques(facts: Facts, ctx: Context) -> list[Block]:
    tc = facts.config.get("train", {})
    micro = tc.get("micro_batch_size") or tc.get("batch_size")
    accum = max(1, (tc.get("batch_size") or 1) // max(micro or 1, 1))
    out: list[Block] = [
        Heading("Techniques for memory and speed", 2),
        Bullets([f"**bf16 autocast** computes matmuls in 16-bit while the weights stay fp32: about half the "
                 f"activation memory and, on hardware with bf16 units, up to several times the speed. This run: "
                 f"`dtype {tc.get('dtype')}`.",
                 f"**Gradient accumulation** runs a batch as several micro-batches and adds their gradients before "
                 f"one step: the same update with a fraction of the activation memory. This run: micro-batch "
                 f"{micro}, {accum} accumulation step(s).",
                 f"**Activation checkpointing** keeps only each block's input and recomputes the rest during "
                 f"backward: much less memory for about a third more compute. This run: "
                 f"`{tc.get('activation_checkpointing')}`."]),
    ]
    if ctx.memory == "skip" or facts.run is None:
        return out + [missing(ctx, "memory and speed per technique",
                              f"scratchlm memory {facts.run_dir / 'config.json'}")]
    cfg = facts.run.config
    est = memory.estimate(cfg)
    rows = [[label, memory.fmt_bytes(est[key])] for key, label in
            (("weights", "weights (fp32)"), ("gradients", "gradients (fp32)"), ("adamw", "AdamW moments (2 × fp32)"),
             ("activations", f"activations + logits (micro-batch {est['micro_batch']})"))]
    total = sum(est[k] for k in ("weights", "gradients", "adamw", "activations"))
    rows.append(["**total for training**", f"**{memory.fmt_bytes(total)}**"])
    out.append(Table(["component", "estimate"], rows, caption="Training memory by formula (`scratchlm memory`).",
                     align="lr"))
    measured = measured_memory(facts, ctx, memory)
    if measured:
        out.append(Table(["variant", "peak memory", "tokens/s"],
                         [[r["variant"], memory.fmt_bytes(r["peak_bytes"]), fmt_int(round(r["tokens_per_s"]))]
                          if "error" not in r else [r["variant"], "failed", r["error"][:60]] for r in measured],
                         caption="Measured: a few training steps of each variant, each in a fresh process "
                                 f"({measured[0].get('device', 'cpu')}).", align="lrr"))
        if not any(r.get("dtype") not in (None, "fp32") for r in measured):
            out.append(Note("This machine has no native 16-bit arithmetic (bf16 would be emulated, about 30× "
                            "slower than fp32 on an AVX2 CPU), so the guide measured the techniques in fp32 and "
                            "left bf16 out. To measure bf16 here anyway:",
                            command=f"scratchlm memory {facts.run_dir / 'config.json'}"))
    else:
        out.append(Note("Measured peaks per variant (fp32, bf16, checkpointing, accumulation) come from:",
                        command=f"scratchlm memory {facts.run_dir / 'config.json'}"))
    return out


def measured_memory(facts: Facts, ctx: Context, memory) -> list[dict]:
    """The `scratchlm memory` measurement for this run's config, cached in the report folder."""
    cache = facts.run_dir / "report" / "memory.json"
    if cache.exists():
        try:
            return json.loads(cache.read_text())
        except json.JSONDecodeError:
            pass
    if ctx.memory != "measure":
        return []
    ctx.say("measuring memory and speed of each training variant (a few steps each)...")
    rows = []
    for label, vcfg in memory.variants(facts.run.config, emulated_half=False):
        r = memory.measure_in_subprocess(vcfg, 1)
        rows.append({"variant": label, **r})
    if not any("error" in r for r in rows):  # a failed measurement is shown, not kept
        cache.parent.mkdir(exist_ok=True)
        cache.write_text(json.dumps(rows, indent=1))
    return rows


# --- 5 Attention during training ------------------------------------------------------

def chapter_evolution(facts: Facts, ctx: Context) -> list[Block]:
    out: list[Block] = [
        Heading("Attention evolving during training"),
        Para("At each evaluation the run can record the attention maps of a fixed probe prompt and four numbers "
             "per head: *entropy* (how spread out the attention is), the share on the *previous token*, the "
             "share on the *first token* (an “attention sink” where idle heads park), and an *induction score* "
             "(on a random sequence repeated twice, attention to the token that followed the earlier occurrence: "
             "the head that continues a pattern it has seen). Early heads look everywhere; specialised heads "
             "form as the loss drops."),
    ]
    figs = viz_figures(facts, ctx, "evolution")
    out += figs
    if any(isinstance(b, Figure) for b in figs):
        out += formed_when(facts)
    return out


FORMED = [("prev_token", "previous-token head", 0.5), ("induction", "induction head", 0.3),
          ("first_token", "attention sink (first token)", 0.5)]


def formed_when(facts: Facts) -> list[Block]:
    """For each kind of head: the strongest one at the end, and the first snapshot where some head passed a bar."""
    snaps = snapshots.load_snapshots(facts.run_dir)
    rows = []
    for key, label, bar in FORMED:
        m = snaps.metrics.get(key)
        if m is None:
            continue
        best = m[-1].reshape(-1).argmax()
        layer, head = divmod(int(best), m.shape[2])
        above = [int(step) for step, v in zip(snaps.steps, m.max(axis=(1, 2))) if v >= bar]
        rows.append([label, f"layer {layer}, head {head}", f"{m[-1, layer, head]:.2f}",
                     f"step {above[0]:,}" if above else f"not yet (best {m.max():.2f})"])
    ent = snaps.metrics.get("entropy")
    text = (f"Mean attention entropy went from {ent[0].mean():.2f} at step {int(snaps.steps[0]):,} to "
            f"{ent[-1].mean():.2f} at step {int(snaps.steps[-1]):,} (1 = attention spread evenly): "
            + ("the heads became more selective." if ent[-1].mean() < ent[0].mean() - 0.02
               else "the heads have barely sharpened yet (a longer run shows more).")
            if ent is not None and len(snaps.steps) else "")
    return [Table(["kind of head", "strongest at the end", "score", "first snapshot with a head above the bar"],
                  rows, caption=f"What formed when, over {len(snaps.steps)} snapshots (bars: previous token 0.5, "
                                "induction 0.3, first token 0.5).", align="llrl"),
            Para(text)] if rows else []


# --- 6 Generation ---------------------------------------------------------------------

SAMPLING = [(0.5, 1.0), (0.8, 0.95), (1.0, 1.0), (1.0, 0.9), (1.3, 1.0)]


def chapter_generation(facts: Facts, ctx: Context) -> list[Block]:
    out: list[Block] = [
        Heading("Generation"),
        Para("To write, the model scores every token as the next one, one token is drawn, appended, and the "
             "step repeats. *Temperature* divides the scores before the softmax: below 1 the likely tokens win "
             "more often (safer, more repetitive), above 1 the distribution flattens (more varied, more "
             "mistakes). *Top-p* (nucleus) sampling draws only among the most likely tokens whose "
             "probabilities add up to p, cutting the long tail of unlikely ones. A KV cache keeps each "
             "position's keys and values, so each new token costs one position's work."),
    ]
    out += viz_figures(facts, ctx, "sampling")
    if facts.run is None:
        return out + [missing(ctx, "samples (no checkpoint)", f"scratchlm train --out {run_arg(facts)}")]
    if not ctx.samples:
        return out + [Note("Samples were switched off for this guide; see them with:",
                           command=f"scratchlm sample {facts.run_dir} --temperature 0.8 --top-p 0.95")]
    prompt = facts.config.get("sample", {}).get("prompt") or "\n"
    ctx.say(f"sampling at {len(SAMPLING)} temperature / top-p settings...")
    out.append(Para("Below, the same prompt and the same random seed at each setting, so the differences come from "
                    "the temperature and top-p alone (120 new tokens each):"))
    for temp, top_p in SAMPLING:
        text = "".join(generate(facts.run, prompt, max_new_tokens=120, temperature=temp, top_p=top_p, seed=1))
        out += [Para(f"**temperature {temp}, top-p {top_p}**"), Code(text.strip("\n") or "(empty)", lang="text")]
    out.append(Para(f"Reproduce any of them: `scratchlm sample {facts.run_dir} --temperature 0.8 --top-p 0.95 "
                    "--seed 1`."))
    return out


# --- 7 Fine-tuning --------------------------------------------------------------------

def chapter_questions(facts: Facts, ctx: Context) -> list[Block]:
    out: list[Block] = [
        Heading("Answering questions"),
        Para("A pretrained model continues text; to make it answer, it is *fine-tuned* on conversations written "
             "in a chat template with special tokens (user turn, assistant turn, end). The loss is computed on "
             "the assistant's tokens only, so the model learns to answer rather than to ask, and a smaller "
             "learning rate keeps what pretraining taught (too much fine-tuning forgets it). The built-in "
             "questions rename the training passages' speakers at random (KORVELA, SIR BASTIMO): the answer can "
             "then only be copied from the passage, never recalled from a cast the model has read. Copying is "
             "attention's work, so only attention learns: the MLPs keep the base model's weights "
             "(`train.freeze=mlp`), and a step without their gradients is faster."),
    ]
    ft = finetuned_run(facts, ctx)
    if ft is None:
        qa = f"{facts.run_dir}-qa"
        return out + [missing(ctx, "fine-tuning results (this run was not fine-tuned, and no run beside it was "
                              "fine-tuned from it)",
                              f"scratchlm data questions --out data/questions\n"
                              f"scratchlm finetune --init-from {facts.run_dir} --data data/questions/train.jsonl "
                              f"--out {qa} --train.max_time 600\n"
                              f"scratchlm eval {qa} --task questions --figure {qa}/figures\n"
                              f"scratchlm report {facts.run_dir}   # finds {qa}: it names this run as its base")]
    if ft != facts.run_dir:
        out.append(Para(f"This run was fine-tuned into `{ft}` (found beside it: its `finetune.json` names this run "
                        "as the base). The results below are that run's."))
    try:
        info = json.loads((ft / FINETUNE_INFO).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        info = {}
    rows = [[k.replace("_", " "), str(v)] for k, v in info.items() if isinstance(v, (str, int, float))][:14]
    if rows:
        out.append(Table(["", "this fine-tuning"], rows, caption="How the model was fine-tuned (finetune.json).",
                         align="ll"))
    out += finetune_curve(ft)
    result_path = ft / RESULT_FILE
    if not result_path.exists() and ctx.evaluate:
        rows_q = builtin_questions()
        ctx.say(f"scoring {len(rows_q)} held-out questions (greedy answers from {ft}, its base model and the "
                "majority answer)...")
        save_result(evaluate_run(ft, rows_q, baseline_model=True), len(rows_q), ft)
    result = None
    if result_path.exists():
        try:
            result = eval_table(json.loads(result_path.read_text(encoding="utf-8")))
        except (json.JSONDecodeError, KeyError, TypeError, AttributeError):
            result = None
    if result is None:
        return out + [missing(ctx, "the held-out question scores of the fine-tuned run",
                              f"scratchlm eval {ft} --task questions --figure {ft}/figures   # saves {RESULT_FILE}")]
    header, table_rows, examples = result
    out.append(Table(header, table_rows, caption="Exact-match accuracy on questions from held-out plays "
                                                 "(never seen in fine-tuning).",
                     align="lr" + "r" * (len(header) - 2)))
    if examples:
        out.append(Para("A few of them, as the model answered (greedy decoding):"))
        out.append(Code("\n\n".join(examples[:5]), lang="text"))
    copying = ft / "figures" / "copying_heads.svg"
    copying = copying if copying.exists() else copying.with_suffix(".png")
    if copying.exists():
        out.append(Para("Which heads copy the answer: for the first question answered right, the share of "
                        "attention that the positions writing the answer put on the passage tokens that spell it, "
                        "for every layer and head, and the strongest head's attention over the prompt."))
        out.append(Figure(copying, "Which heads copy the answer from the passage (`scratchlm eval --figure`)."))
    return out


def finetuned_run(facts: Facts, ctx: Context) -> Path | None:
    """The fine-tuned run chapter 7 reports: this run if it was fine-tuned, else `--finetuned`, else the
    newest run folder beside this one whose finetune.json names this run (or one of its checkpoints) as the base."""
    if (facts.run_dir / FINETUNE_INFO).exists():
        return facts.run_dir
    if ctx.finetuned_dir is not None:
        if not (Path(ctx.finetuned_dir) / FINETUNE_INFO).exists():
            raise ScratchLMError(f"--finetuned {ctx.finetuned_dir}: not a fine-tuned run (no {FINETUNE_INFO})")
        return Path(ctx.finetuned_dir)
    me = facts.run_dir.resolve()
    found = []
    for info_path in facts.run_dir.parent.glob(f"*/{FINETUNE_INFO}"):
        try:
            base = Path(json.loads(info_path.read_text(encoding="utf-8")).get("init_from", "")).resolve()
        except (OSError, json.JSONDecodeError, AttributeError, TypeError):
            continue
        if base == me or me in base.parents:
            found.append(info_path.parent)
    return max(found, key=lambda d: (d / FINETUNE_INFO).stat().st_mtime) if found else None


def finetune_curve(ft: Path) -> list[Block]:
    """The fine-tuning run's validation loss on the answers, from its metrics.jsonl, as a line of text
    (read as the doctor reads it: torn lines skipped, steps a resume redid counted once)."""
    evals = [(r["step"], r["val_loss"]) for r in drop_rewound(read_jsonl(ft / "metrics.jsonl"))
             if r.get("event") == "eval" and isinstance(r.get("val_loss"), (int, float))]
    if len(evals) < 2:
        return []
    return [Para(f"Validation loss on the held-out answers (nats per answer token): {evals[0][1]:.2f} at step "
                 f"{evals[0][0]} → {evals[-1][1]:.2f} at step {evals[-1][0]}, over {len(evals)} evaluations.")]


def eval_table(data: dict):
    """(header, rows, examples) from an evaluation result: scores as {"correct": {kind: n}, "total": {kind: n}}
    under "model" (this run), "base" (the model before fine-tuning, optional) and "majority" (the majority
    answer), and "examples" as [question, expected, answer] triples."""
    cols = [(name, data[key]) for key, name in (("model", "this run"), ("base", "base model"),
                                                 ("majority", "majority answer")) if isinstance(data.get(key), dict)]
    kinds = list(data["model"]["total"])

    def acc(score: dict, kind: str | None) -> str:
        c, t = score.get("correct", {}), score.get("total", {})
        n_c = sum(c.values()) if kind is None else c.get(kind, 0)
        n_t = sum(t.values()) if kind is None else t.get(kind, 0)
        return f"{100 * n_c / n_t:.1f}%" if n_t else "n/a"

    rows = [[kind, fmt_int(data["model"]["total"][kind])] + [acc(s, kind) for _, s in cols] for kind in kinds]
    rows.append(["**all**", fmt_int(sum(data["model"]["total"].values()))] + [f"**{acc(s, None)}**" for _, s in cols])
    examples = [f"{q}\n→ expected: {e}\n→ answered: {a}" for q, e, a in (data.get("examples") or [])]
    return ["question kind", "n"] + [name for name, _ in cols], rows, examples


# --- 8 Troubleshooting ----------------------------------------------------------------

def chapter_troubleshooting(facts: Facts, ctx: Context) -> list[Block]:
    out: list[Block] = [
        Heading("Troubleshooting"),
        Para("The guide's troubleshooting table, with the doctor's verdict for this run. The doctor replays the "
             "run's records (metrics.jsonl, and probes.jsonl / diagnostics.jsonl when the live doctor ran) "
             "through the same detectors that watch live training."),
    ]
    report = diagnose(facts.run_dir)
    rows = [[r["symptom"], _verdict(r["status"]), r["cause"], r["solution"]] for r in report["rows"]]
    out.append(Table(["symptom", "this run", "likely cause", "solution"], rows,
                     caption="Symptom → cause → fix, checked on this run.", align="llll"))
    if not report["summary"].get("live_doctor"):
        out.append(Note("This run was trained without the live doctor, so rows that need samples or update "
                        "ratios are not measurable."))
    out.append(Heading("Evidence", 2))
    items = []
    for r in report["rows"]:
        f = r.get("finding")
        line = f"**{r['symptom']}**: {_verdict(r['status'])}"
        if f:
            line += f" at step {f['step']}"
        line += f". {r['evidence']}"
        if f and f.get("fix"):
            line += f" Fix: {f['fix']}"
        items.append(line)
    out.append(Bullets(items))
    out.append(Para(f"The same table in a terminal: `scratchlm doctor {facts.run_dir}`."))
    return out


def _verdict(status: str) -> str:
    return {"seen": "**seen**", "not seen": "ok"}.get(status, status)


# --- 9 What next ----------------------------------------------------------------------

def chapter_next(facts: Facts, ctx: Context) -> list[Block]:
    r = facts.run_dir
    mc = facts.config.get("model", {})
    wider = 2 * (mc.get("n_embd") or 128)
    return [
        Heading("What to try next"),
        Para("Each line below is a complete command; every result lands in its own run folder, and "
             "`scratchlm report RUN` writes a guide like this one for it."),
        Bullets([f"A wider model (more parameters per token): `scratchlm train --model.n_embd {wider} "
                 f"--model.n_head {max(4, (mc.get('n_head') or 4))} --out {r}-wide`",
                 f"A deeper one: `scratchlm train --model.n_layer {2 * (mc.get('n_layer') or 4)} --out {r}-deep`",
                 f"Train longer from where this run stopped: `scratchlm train --resume {r} --train.max_time 1200`",
                 f"The guide's classic block (post-LN, ReLU): `scratchlm train --preset guide --out {r}-guide`",
                 "Measure each block option for the same time: `scratchlm ablate --preset tiny --budget 60 "
                 "--change model.norm_position=post --change model.mlp=swiglu --change model.position=rope`",
                 "Find a better learning rate: `scratchlm sweep lr`",
                 "Compare tokenizers on your corpus: `scratchlm tokenizer compare --vocab-sizes 1024,4096`",
                 f"See inside: `scratchlm viz attention {r} --prompt \"ROMEO:\"`",
                 f"Teach it to answer questions: `scratchlm finetune --init-from {r} "
                 "--data data/questions/train.jsonl`",
                 "Train on several GPUs: `torchrun --standalone --nproc_per_node 8 -m scratchlm train --preset gpt2`",
                 f"Check a run for problems: `scratchlm doctor {r}`",
                 f"Use the model elsewhere: `scratchlm export {r} --format hf --out {r}-hf` (then "
                 "`transformers.AutoModelForCausalLM.from_pretrained`), or `--format gguf` for llama.cpp"]),
    ]


# --- viz figures ----------------------------------------------------------------------

VIZ_COMMANDS = {
    "qkv": "scratchlm viz qkv {run} --prompt \"ROMEO: But soft\"",
    "attention": "scratchlm viz attention {run} --prompt \"ROMEO: But soft\"",
    "evolution": "scratchlm train --out {run} --viz.snapshots true   # then: scratchlm viz evolution {run}",
    "curves": "scratchlm viz curves {run}",
    "sampling": "scratchlm viz sampling {run} --prompt \"ROMEO:\"",
    "tokens": "scratchlm viz tokens {run} --text \"ROMEO: But soft\"",
}
VIZ_WHAT = {
    "qkv": "the Q/K/V walkthrough and the 3D cube",
    "attention": "the layers × heads grid of attention maps",
    "evolution": "attention snapshots during training (the film strip and per-head metrics)",
    "curves": "the training curves",
    "sampling": "the sampling figure (next-token distribution at several temperatures)",
    "tokens": "the token-boundary figure",
}
VIZ_FILES = {
    "qkv": ["qkv_projections", "qkv_attention", "qkv_cube"],
    "attention": ["attention_grid"],
    "evolution": ["attention_filmstrip", "attention_metrics"],
    "curves": ["curves"],
    "sampling": ["sampling"],
    "tokens": ["tokens"],
}
CAPTIONS = {
    "qkv_projections": "Attention, step 1, for layer 0, head 0 on the probe prompt: the input vectors X (one row per "
                       "token) and their projections Q = X·W_q, K = X·W_k and V = X·W_v.",
    "qkv_attention": "Attention, step 2: the scores Q·Kᵀ/√d_k, the causal mask, the softmax weights (each row "
                     "sums to 1) and the output, weights·V.",
    "qkv_cube": "Q, K and V of layer 0 as (heads × tokens × head dimension) blocks; the highlighted slice is the "
                "head shown in the two figures above.",
    "attention_grid": "Where each token looks: every layer's and head's attention map on the probe prompt (query "
                      "rows, key columns; darker = more weight).",
    "attention_filmstrip": "The attention maps of the probe prompt at each snapshot during training, left to right.",
    "attention_metrics": "What each head does at each snapshot: entropy, share on the previous token, share on the "
                         "first token (attention sink) and induction score.",
    "curves": "Training curves of this run: loss, bits per byte, learning rate, gradient norm and tokens per second "
              "against the step.",
    "sampling": "The next-token distribution after the prompt at several temperatures, with the top-k and top-p "
                "cut-offs shaded.",
    "tokens": "How this run's tokenizer cuts the probe prompt: one box per token, its id below.",
}


def viz_figures(facts: Facts, ctx: Context, kind: str, quiet: bool = False) -> list[Block]:
    """The figures of one `scratchlm viz` kind for this run: the ones training drew into
    RUN/figures/ when they are newer than the run's records, else drawn now with the viz
    extra; when they cannot be drawn, a note that says how to make them."""
    names = VIZ_FILES[kind]
    figures_dir = facts.run_dir / "figures"
    metrics = facts.run_dir / "metrics.jsonl"
    newest = metrics.stat().st_mtime if metrics.exists() else 0.0
    found = [figures_dir / f"{n}.svg" for n in names]
    if all(p.exists() and p.stat().st_mtime >= newest for p in found):
        return [Figure(p, CAPTIONS[p.stem]) for p in found] + animation(list(figures_dir.glob("*.gif")))
    needs_model = kind not in ("curves", "evolution")
    if needs_model and facts.run is None:
        if quiet:
            return []
        return [missing(ctx, VIZ_WHAT[kind], VIZ_COMMANDS[kind].format(run=facts.run_dir))]
    out = ctx.build_dir / "viz"
    try:
        if kind in ("curves", "evolution"):
            paths = getattr(viz, kind)(facts.run_dir, out)
        else:
            prompt = viz.default_prompt(facts.run)
            if kind == "qkv":
                paths = viz.qkv_walkthrough(facts.run, prompt, 0, 0, out)
            elif kind == "attention":
                paths = viz.attention_grid(facts.run, prompt, out)
            elif kind == "sampling":
                paths = viz.sampling(facts.run, prompt, out)
            else:
                paths = viz.tokens(facts.run.tokenizer, prompt, out)
    except ScratchLMError as e:  # e.g. no snapshots: the viz extra says what is missing
        if quiet:
            return []
        ctx.notes.append(VIZ_WHAT[kind])
        return [Note(f"Not in this guide yet: {VIZ_WHAT[kind]}. {e}.",
                     command=VIZ_COMMANDS[kind].format(run=facts.run_dir), missing=True)]
    svgs = {p.stem: p for p in paths if p.suffix == ".svg"}
    gifs = [p for p in paths if p.suffix == ".gif"]
    return [Figure(svgs[n], CAPTIONS[n]) for n in names if n in svgs] + animation(gifs)


def animation(gifs: list[Path]) -> list[Block]:
    """The attention-evolution GIF, for the HTML page only (a PDF cannot play it)."""
    return [Figure(g, "The same maps as an animation, one frame per snapshot (in the HTML version only).",
                   width=0.8, html_only=True) for g in gifs if g.stem == "attention_evolution"]


CHAPTERS = [chapter_tokenization, chapter_attention, chapter_block, chapter_training, chapter_evolution,
            chapter_generation, chapter_questions, chapter_troubleshooting, chapter_next]
