"""The guide's nine chapters: each explains an idea for a learner, then shows this run.

A chapter is a function `(facts, ctx) -> list of blocks` (see doc.py). Parts made by
other extras (the viz figures, the tokenizer comparison, the ablation, fine-tuning, the
doctor) are looked up when the chapter is written; when one is missing the chapter
says so and gives the command that produces it, and the guide is still written.
"""

from __future__ import annotations

import importlib
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from .doc import Block, Bullets, Code, Figure, Heading, Math, Note, Para, Table
from .facts import Facts, parameter_table, source_of, token_pieces
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
    notes: list[str] = field(default_factory=list)  # what is missing, for the command's summary

    def figure(self, name: str) -> Path:
        return self.build_dir / name


def optional(module: str):
    """An optional extra's module, or None when it is not installed or not written yet."""
    try:
        return importlib.import_module(module)
    except ImportError:
        return None


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
    from ..tokenizer import naive

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
    guide = optional("scratchlm.guide")
    if guide is not None and hasattr(guide, "train_bpe"):
        out += [Para("The guide's own sketch works on words with an end-of-word marker `</w>` instead of bytes "
                     "(`scratchlm.guide.train_bpe`):"),
                Code(source_of(guide.train_bpe), caption="The guide's word-level BPE with `</w>`.")]
    out.append(Heading("This run's tokenizer", 2))
    run = facts.run
    if run is None:
        return out + [missing(ctx, "the tokenizer's vocabulary and word splits (no checkpoint)", f"scratchlm train --out {run_arg(facts)}")]
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
    """The table of `scratchlm tokenizer compare`, when its output folder is there."""
    out: list[Block] = [Heading("Tokenizers compared", 2)]
    folder = ctx.compare_dir or _first_dir(facts.run_dir, ("tokenizer-compare", "tokenizer_compare", "compare"))
    table = read_table(folder) if folder else None
    if table is None:
        return out + [missing(ctx, "the tokenizer comparison table (SentencePiece, tiktoken, word-level and ours)",
                              f"scratchlm tokenizer compare --out {facts.run_dir / 'tokenizer-compare'}")]
    header, rows = table
    out.append(Table(header, rows, caption=f"Tokenizers measured on held-out text ({folder.name}/).",
                     align="l" + "r" * (len(header) - 1)))
    for name in ("compare.svg", "bytes_per_token.svg", "plot.svg", "compare.png", "plot.png"):
        if (folder / name).exists():
            out.append(Figure(folder / name, "Bytes per token and unknown-token rate against vocabulary size."))
            break
    return out


def _first_dir(base: Path, names) -> Path | None:
    for n in names:
        if (base / n).is_dir():
            return base / n
    return None


def read_table(folder: Path, max_cols: int = 8) -> tuple[list[str], list[list[str]]] | None:
    """A results table written by another command: results.csv (or the first .csv), as strings."""
    import csv

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
    from ..model import attention

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
        Heading("Q, K and V on a prompt, for one head", 2),
    ]
    out += viz_figures(facts, ctx, "qkv")
    out.append(Heading("Every layer and head", 2))
    out += viz_figures(facts, ctx, "attention")
    return out


# --- 3 Transformer block --------------------------------------------------------------

def chapter_block(facts: Facts, ctx: Context) -> list[Block]:
    mc = facts.config.get("model", {})
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
    guide = optional("scratchlm.guide")
    if guide is not None and hasattr(guide, "TransformerBlock"):
        out.append(Code(source_of(guide.TransformerBlock), caption="The guide's classic block (`scratchlm.guide`)."))
    else:
        out.append(missing(ctx, "the guide's classic block as runnable code (`scratchlm.guide`)",
                           "scratchlm train --preset guide   # trains the guide's post-LN ReLU block"))
    if run is not None:
        block = run.model.transformer.h[0]
        out.append(Code(source_of(type(block)), caption=f"Our block, `{type(block).__module__}.{type(block).__name__}` "
                                                         "(the code that trained this run)."))
    out += ablation_part(facts, ctx)
    out.append(Heading("Where the parameters are", 2))
    if run is None:
        out.append(missing(ctx, "the parameter count per part (no checkpoint)", f"scratchlm train --out {run_arg(facts)}"))
    else:
        rows = [[label, fmt_int(per), fmt_int(total)] for label, per, total in parameter_table(run.model)]
        total = facts.n_params
        rows.append(["**total**", "", f"**{fmt_int(total)}**"])
        out += [Table(["part", "each", "all"], rows, caption=f"The {fmt_int(total)} parameters of this run's model.",
                      align="lrr"),
                Para("With a small vocabulary most parameters sit in the blocks (attention has 4·C² weights, the "
                     "MLP 8·C² for a 4× hidden layer); in large-vocabulary models the embedding table dominates "
                     "small models, which is one reason the output layer shares it (weight tying).")]
        attn = type(block.attn)
        out += [Heading("The real code", 2),
                Para("The classes below are read from the installed package with `inspect.getsource`: they are "
                     "exactly what trained this run."),
                Code(source_of(attn), caption=f"Multi-head attention, `{attn.__module__}.{attn.__name__}`."),
                Code(source_of(type(run.model)), caption=f"The model, `{type(run.model).__module__}.GPT`.")]
    return out


def ablation_part(facts: Facts, ctx: Context) -> list[Block]:
    folder = ctx.ablation_dir or _first_dir(facts.run_dir, ("ablation", "ablate"))
    table = read_table(folder) if folder else None
    if table is None:
        return [missing(ctx, "the ablation (the guide's block against ours, trained for the same time)",
                        f"scratchlm ablate --preset tiny --budget 60 --change model.norm_position=post "
                        f"--change model.mlp=relu --out {facts.run_dir / 'ablation'}")]
    header, rows = table
    out: list[Block] = [Table(header, rows, caption=f"Ablation: each change trained for the same time ({folder.name}/).",
                              align="l" + "r" * (len(header) - 1))]
    for f in sorted(folder.glob("*.svg")) or sorted(folder.glob("*.png")):
        out.append(Figure(f, f"Ablation: {f.stem.replace('_', ' ')}."))
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
        return out + [missing(ctx, "training records (metrics.jsonl is empty)", f"scratchlm train --out {run_arg(facts)}")]
    fig = viz_figures(facts, ctx, "curves", quiet=True)
    if not fig:
        fig = [Figure(training_curves(facts.steps, facts.evals, facts.name, ctx.figure("curves.svg")),
                      "Loss, validation bits per byte and learning rate against the step.")]
    out += fig
    ev = facts.final_eval
    V = facts.vocab_size
    rows = [["steps", fmt_int(facts.last_step)],
            ["training time", f"{facts.train_time:.0f} s" if facts.train_time else "n/a"],
            ["loss at step 1 (uniform guess: ln V)", f"{facts.steps[0]['loss']:.3f} ({math.log(V):.3f})" if V else "n/a"],
            ["final training loss", fmt_f(facts.steps[-1].get("loss"))],
            ["final validation loss", fmt_f(ev["val_loss"]) if ev else "n/a"],
            ["best validation loss", fmt_f(facts.best_val_loss)],
            ["final validation bits per byte", fmt_f(ev["val_bpb"], 3) if ev else "n/a"],
            ["tokens per second (median)", fmt_int(round(facts.median("tokens_per_s") or 0))],
            ["MFU (median; model FLOPs ÷ peak)", f"{100 * facts.median('mfu'):.0f}%" if facts.median("mfu") else "n/a"]]
    out.append(Table(["", "this run"], rows, caption="Training in numbers.", align="lr"))
    if facts.evals:
        evs = facts.evals if len(facts.evals) <= 12 else facts.evals[:: math.ceil(len(facts.evals) / 12)] + facts.evals[-1:]
        out.append(Table(["step", "val loss", "bits/byte"], [[fmt_int(e["step"]), fmt_f(e["val_loss"]), fmt_f(e["val_bpb"], 3)]
                                                           for e in evs], caption="Evaluations on the held-out text.",
                         align="rrr"))
    else:
        out.append(missing(ctx, "an evaluation (the run stopped before its first)", f"scratchlm train --resume {run_arg(facts)}"))
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
        return out + [missing(ctx, "memory and speed per technique", f"scratchlm memory {facts.run_dir / 'config.json'}")]
    from ..train import memory

    cfg = facts.run.config
    est = memory.estimate(cfg)
    rows = [[label, memory.fmt_bytes(est[key])] for key, label in
            (("weights", "weights (fp32)"), ("gradients", "gradients (fp32)"), ("adamw", "AdamW moments (2 × fp32)"),
             ("activations", f"activations + logits (micro-batch {est['micro_batch']})"))]
    rows.append(["**total for training**", f"**{memory.fmt_bytes(sum(est[k] for k in ('weights', 'gradients', 'adamw', 'activations')))}**"])
    out.append(Table(["component", "estimate"], rows, caption="Training memory by formula (`scratchlm memory`).", align="lr"))
    measured = measured_memory(facts, ctx, memory)
    if measured:
        out.append(Table(["variant", "peak memory", "tokens/s"],
                         [[r["variant"], memory.fmt_bytes(r["peak_bytes"]), fmt_int(round(r["tokens_per_s"]))]
                          if "error" not in r else [r["variant"], "failed", r["error"][:60]] for r in measured],
                         caption="Measured: a few training steps of each variant, each in a fresh process "
                                 f"({measured[0].get('device', 'cpu')}).", align="lrr"))
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
    for label, vcfg in memory.variants(facts.run.config):
        r = memory.measure_in_subprocess(vcfg, 2)
        rows.append({"variant": label, **r})
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
    out += viz_figures(facts, ctx, "evolution")
    return out


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
    from ..inference import generate

    prompt = facts.config.get("sample", {}).get("prompt") or "\n"
    ctx.say(f"sampling at {len(SAMPLING)} temperature / top-p settings...")
    for temp, top_p in SAMPLING:
        text = "".join(generate(facts.run, prompt, max_new_tokens=120, temperature=temp, top_p=top_p, seed=1))
        out += [Para(f"**temperature {temp}, top-p {top_p}**"), Code(text.strip("\n") or "(empty)", lang="text")]
    out.append(Para(f"Reproduce any of them: `scratchlm sample {facts.run_dir} --temperature 0.8 --top-p 0.95 --seed 1`."))
    return out


# --- 7 Fine-tuning --------------------------------------------------------------------

def chapter_questions(facts: Facts, ctx: Context) -> list[Block]:
    out: list[Block] = [
        Heading("Answering questions"),
        Para("A pretrained model continues text; to make it answer, it is *fine-tuned* on conversations written "
             "in a chat template with special tokens (user turn, assistant turn, end). The loss is computed on "
             "the assistant's tokens only, so the model learns to answer rather than to ask, and a smaller "
             "learning rate keeps what pretraining taught (too much fine-tuning forgets it)."),
    ]
    result = finetune_result(facts.run_dir)
    if result is None:
        return out + [missing(ctx, "fine-tuning results (this run was not fine-tuned)",
                              f"scratchlm data questions --out data/questions\n"
                              f"scratchlm finetune --init-from {facts.run_dir} --data data/questions/train.jsonl "
                              f"--out {facts.run_dir}-qa\n"
                              f"scratchlm eval {facts.run_dir}-qa --task questions\n"
                              f"scratchlm report {facts.run_dir}-qa")]
    header, rows, examples = result
    out.append(Table(header, rows, caption="Exact-match accuracy on held-out questions.", align="l" + "r" * (len(header) - 1)))
    for ex in examples[:4]:
        out.append(Code(ex, lang="text"))
    return out


def finetune_result(run_dir: Path):
    """(header, rows, example texts) from `scratchlm eval --task questions`'s results, or None."""
    for name in ("eval_questions.json", "eval-questions.json", "eval/questions.json", "questions_eval.json"):
        path = run_dir / name
        if path.exists():
            try:
                data = json.loads(path.read_text(encoding="utf-8"))
            except json.JSONDecodeError:
                return None
            return summarize_eval(data)
    return None


def summarize_eval(data: dict):
    rows = []
    by_type = data.get("by_type") or data.get("accuracy_by_type") or {}
    base = data.get("baseline_by_type") or {}
    for kind, acc in by_type.items():
        rows.append([kind, f"{100 * acc:.0f}%" if isinstance(acc, (int, float)) else str(acc),
                     f"{100 * base[kind]:.0f}%" if isinstance(base.get(kind), (int, float)) else ""])
    if "accuracy" in data:
        b = data.get("baseline")
        rows.append(["**all**", f"**{100 * data['accuracy']:.0f}%**", f"{100 * b:.0f}%" if isinstance(b, (int, float)) else ""])
    examples = [f"Q: {e.get('question', '')}\nA (model): {e.get('answer', e.get('prediction', ''))}\n"
                f"A (expected): {e.get('expected', e.get('target', ''))}" for e in data.get("examples", [])]
    return ["question type", "fine-tuned", "baseline"], rows, examples


# --- 8 Troubleshooting ----------------------------------------------------------------

def chapter_troubleshooting(facts: Facts, ctx: Context) -> list[Block]:
    out: list[Block] = [
        Heading("Troubleshooting"),
        Para("The guide's troubleshooting table, with the doctor's verdict for this run. The doctor replays the "
             "run's records (metrics.jsonl, and probes.jsonl / diagnostics.jsonl when the live doctor ran) "
             "through the same detectors that watch live training."),
    ]
    diagnose = None
    for name in ("scratchlm.doctor.diagnose", "scratchlm.doctor", "scratchlm.doctor.cli"):  # where it has lived
        diagnose = getattr(optional(name), "diagnose", None)
        if callable(diagnose):
            break
    if not callable(diagnose):
        return out + [missing(ctx, "the doctor's verdicts", f"scratchlm doctor {facts.run_dir}")]
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
                 f"Find a better learning rate: `scratchlm sweep lr`",
                 "Compare tokenizers on your corpus: `scratchlm tokenizer compare --vocab-sizes 1024,4096`",
                 f"See inside: `scratchlm viz attention {r} --prompt \"ROMEO:\"`",
                 f"Teach it to answer questions: `scratchlm finetune --init-from {r} --data data/questions/train.jsonl`",
                 "Train on several GPUs: `torchrun --standalone --nproc_per_node 8 -m scratchlm train --preset gpt2`",
                 f"Check a run for problems: `scratchlm doctor {r}`",
                 f"Use the model elsewhere: `scratchlm export {r} --format huggingface --out {r}-hf` (then "
                 "`transformers.AutoModelForCausalLM.from_pretrained`)"]),
    ]


# --- viz figures ----------------------------------------------------------------------

VIZ_COMMANDS = {
    "qkv": "scratchlm viz qkv {run} --prompt \"ROMEO: But soft\"",
    "attention": "scratchlm viz attention {run} --prompt \"ROMEO: But soft\"",
    "evolution": "scratchlm viz evolution {run}",
    "curves": "scratchlm viz curves {run}",
    "sampling": "scratchlm viz sampling {run} --prompt \"ROMEO:\"",
}
VIZ_WHAT = {
    "qkv": "the Q/K/V walkthrough and the 3D cube",
    "attention": "the layers × heads grid of attention maps",
    "evolution": "attention snapshots during training (the film strip and per-head metrics)",
    "curves": "the training curves",
    "sampling": "the sampling figure (next-token distribution at several temperatures)",
}


def viz_figures(facts: Facts, ctx: Context, kind: str, quiet: bool = False) -> list[Block]:
    """The figures of one `scratchlm viz` kind for this run, or a note saying how to make them."""
    viz = optional("scratchlm.viz.report_figures")
    figs: list[tuple[Path, str]] = []
    if viz is not None and facts.run is not None:
        try:
            figs = viz.figures_for(kind, facts.run, ctx.build_dir)
        except Exception as e:  # an extra's failure is reported in the guide, not a crash
            ctx.notes.append(f"{kind}: {e}")
            return [Note(f"The {VIZ_WHAT[kind]} could not be drawn: {e}", missing=True)]
    if figs:
        return [Figure(p, caption) for p, caption in figs]
    if quiet:
        return []
    return [missing(ctx, VIZ_WHAT[kind], VIZ_COMMANDS[kind].format(run=facts.run_dir))]


CHAPTERS = [chapter_tokenization, chapter_attention, chapter_block, chapter_training, chapter_evolution,
            chapter_generation, chapter_questions, chapter_troubleshooting, chapter_next]
