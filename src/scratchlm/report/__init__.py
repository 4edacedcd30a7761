"""The guide, written from the learner's own run: `build_report(run_dir)` -> guide.pdf (or .html).

    facts.py     what the run folder holds (config, records, model, tokenizer)
    chapters.py  the nine chapters, each an explanation and then this run's numbers and figures
    figures.py   the figures the guide draws itself (the block diagram, the training curves)
    doc.py       the document as blocks, rendered to Typst (PDF) and to one self-contained HTML page

The PDF is typeset by Typst (the `typst` PyPI package: a self-contained compiler, no
system packages); figures go in as SVG, so they stay sharp.
"""

from __future__ import annotations

import datetime as dt
import shutil
import tempfile
from pathlib import Path
from typing import Callable

from ..errors import ScratchLMError
from .chapters import CHAPTERS, Context
from .doc import Document, to_html, to_typst
from .facts import Facts, gather

FORMATS = ("pdf", "html", "typ")


def build_document(facts: Facts, ctx: Context) -> Document:
    """The guide as blocks: a title page's facts, then the nine chapters."""
    mc = facts.config.get("model", {})
    ev = facts.final_eval
    title_facts = [("run folder", str(facts.run_dir)),
                   ("model", f"{mc.get('n_layer')} layers × {mc.get('n_head')} heads × {mc.get('n_embd')} wide, "
                             f"context {mc.get('block_size')}"),
                   ("parameters", f"{facts.n_params:,}" if facts.n_params else "no checkpoint yet"),
                   ("vocabulary", f"{facts.vocab_size:,} tokens"),
                   ("trained", f"{facts.last_step:,} steps"
                               + (f" in {facts.train_time:.0f} s" if facts.train_time else "")),
                   ("validation", f"loss {ev['val_loss']:.4f}, {ev['val_bpb']:.3f} bits per byte" if ev
                    else "not evaluated yet")]
    doc = Document(title="Build a Large Language Model from Scratch",
                   subtitle=f"written from the run “{facts.name}”", date=facts.date, facts=title_facts,
                   intro="Each chapter explains one idea, then shows what this run did: its tokenizer, its model, "
                         "its curves, its attention maps, its samples and the doctor's findings, with the source "
                         "code that trained it. An orange box marks a part this run does not have yet, with the "
                         "command that makes it.")
    for chapter in CHAPTERS:
        ctx.say(f"writing chapter: {chapter.__name__.removeprefix('chapter_')}")
        doc.add(*chapter(facts, ctx))
    return doc


def build_report(run_dir: str | Path, out: str | Path | None = None, fmt: str | None = None, *,
                 samples: bool = True, memory: str = "estimate", compare_dir: str | Path | None = None,
                 ablation_dir: str | Path | None = None, evaluate: bool = False,
                 finetuned_dir: str | Path | None = None, say: Callable[[str], None] = lambda m: None) -> dict:
    """Write the guide for a run folder. Returns {"path", "pages" (PDF only), "missing", "figures"}.

    `fmt` is taken from `out`'s suffix when not given (default: pdf, written as RUN/guide.pdf).
    `memory`: "measure" runs `scratchlm memory`'s measurement (cached in RUN/report/), "estimate" uses the
    formula (and a cached measurement if there is one), "skip" leaves it out. `evaluate`: score a fine-tuned
    run on the held-out questions when RUN/eval_questions.json is not there yet (minutes on a CPU).
    `finetuned_dir`: the fine-tuned run for chapter 7 (default: this run if fine-tuned, else the newest
    run beside it fine-tuned from it).
    """
    if fmt is None:
        fmt = Path(out).suffix.lstrip(".").lower() if out and Path(out).suffix else "pdf"
    if fmt not in FORMATS:
        raise ScratchLMError(f"unknown report format {fmt!r}; choose one of {', '.join(FORMATS)}")
    if memory not in ("measure", "estimate", "skip"):
        raise ScratchLMError(f"memory must be measure, estimate or skip, not {memory!r}")
    facts = gather(run_dir)
    out = Path(out) if out else facts.run_dir / f"guide.{fmt}"
    with tempfile.TemporaryDirectory(prefix="scratchlm-report-") as tmp:
        build = Path(tmp)
        ctx = Context(build, say=say, samples=samples, memory=memory,
                      compare_dir=Path(compare_dir) if compare_dir else None,
                      ablation_dir=Path(ablation_dir) if ablation_dir else None, evaluate=evaluate,
                      finetuned_dir=Path(finetuned_dir) if finetuned_dir else None)
        doc = build_document(facts, ctx)
        for i, fig in enumerate(doc.figures()):  # every image next to the source, under a unique name
            if fig.path.parent != build or fig.path.name.startswith("fig"):
                dest = build / f"fig{i:02d}_{fig.path.name}"
                shutil.copyfile(fig.path, dest)
                fig.path = dest
        out.parent.mkdir(parents=True, exist_ok=True)
        result = {"path": out, "missing": ctx.notes, "figures": len(doc.figures()), "chapters": doc.chapters()}
        if fmt == "html":
            out.write_text(to_html(doc), encoding="utf-8")
            return result
        source = to_typst(doc)
        if fmt == "typ":
            out.write_text(source, encoding="utf-8")
            return result
        result["pages"] = compile_pdf(source, build, out)
    return result


def compile_pdf(source: str, build: Path, out: Path) -> int:
    """Typeset Typst source to a PDF; returns the page count."""
    try:
        import typst  # the compiler: an optional dependency, needed only for the PDF
    except ImportError:
        raise ScratchLMError("the PDF needs the typst package: pip install typst (or use --format html)") from None
    src = build / "guide.typ"
    src.write_text(source, encoding="utf-8")
    tmp_out = build / "guide.pdf"
    try:
        typst.compile(str(src), output=str(tmp_out), root=str(build), timestamp=int(dt.datetime.now().timestamp()))
    except Exception as e:  # typst.TypstError: a bug in the generated source, not the user's mistake
        raise RuntimeError(f"typst could not compile the guide: {e}") from e
    shutil.copyfile(tmp_out, out)
    try:
        import pypdf  # optional: only to count the pages for the summary line
    except ImportError:
        return 0
    return len(pypdf.PdfReader(str(out)).pages)


__all__ = ["build_report", "build_document", "gather", "Facts", "FORMATS"]
