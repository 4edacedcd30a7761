"""The guide as data: a list of blocks (headings, paragraphs, code, tables, figures...)
that two renderers turn into Typst source (for the PDF) and into one HTML page.

Chapters are written once, as blocks; neither renderer knows what a chapter says.
Paragraph text takes a small inline markup, the same for both outputs:

    `code`      inline code
    *word*      emphasis
    **word**    strong

Everything else is plain text: the renderers escape it, so a sample the model wrote or
a path with `#` or `$` in it cannot break the document.
"""

from __future__ import annotations

import base64
import html
import re
from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class Heading:
    text: str
    level: int = 1  # 1 = chapter, 2 = section


@dataclass
class Para:
    text: str


@dataclass
class Bullets:
    items: list[str]


@dataclass
class Code:
    source: str
    lang: str = "python"  # "python", "bash", "text"
    caption: str = ""  # when set, the code is a numbered listing


@dataclass
class Table:
    header: list[str]
    rows: list[list[str]]
    caption: str = ""
    align: str = ""  # one letter per column: l, r or c (default: all left)


@dataclass
class Figure:
    path: Path  # an .svg or .png file
    caption: str
    width: float = 1.0  # share of the text width
    html_only: bool = False  # e.g. an animated GIF: the browser plays it, a PDF cannot


@dataclass
class Math:
    typst: str  # Typst math, e.g. "op(\"softmax\")(Q K^T / sqrt(d_k)) V"
    plain: str  # the same for the HTML page, in Unicode


@dataclass
class Note:
    """A boxed remark; `missing=True` marks a part of the guide this run cannot fill yet."""

    text: str
    command: str = ""  # the command that produces what is missing
    missing: bool = False


Block = Heading | Para | Bullets | Code | Table | Figure | Math | Note


@dataclass
class Document:
    title: str
    subtitle: str
    date: str
    facts: list[tuple[str, str]] = field(default_factory=list)  # the title page's small table
    blocks: list[Block] = field(default_factory=list)
    intro: str = ""  # a paragraph under the title page's table

    def add(self, *blocks: Block) -> None:
        self.blocks.extend(blocks)

    def figures(self) -> list[Figure]:
        return [b for b in self.blocks if isinstance(b, Figure)]

    def chapters(self) -> list[str]:
        return [b.text for b in self.blocks if isinstance(b, Heading) and b.level == 1]


# --- inline markup -------------------------------------------------------------------

_INLINE = re.compile(r"`([^`]+)`|\*\*([^*]+)\*\*|\*([^*\s][^*]*)\*")


def inline_parts(text: str) -> list[tuple[str, str]]:
    """Split text into (kind, text) parts: kind is "text", "code", "emph" or "strong"."""
    parts, pos = [], 0
    for m in _INLINE.finditer(text):
        if m.start() > pos:
            parts.append(("text", text[pos:m.start()]))
        kind = "code" if m.group(1) is not None else "strong" if m.group(2) is not None else "emph"
        parts.append((kind, m.group(1) or m.group(2) or m.group(3)))
        pos = m.end()
    if pos < len(text):
        parts.append(("text", text[pos:]))
    return parts


def plain_text(text: str) -> str:
    """The text without its markup (what a PDF's text layer will hold)."""
    return "".join(t for _, t in inline_parts(text))


def from_markdown(text: str) -> list[Block]:
    """Blocks from the plain Markdown other commands write (paragraphs, `|` tables, `-` lists,
    `#` headings shown as strong lines): enough to place their reports in the guide."""
    blocks: list[Block] = []
    para: list[str] = []
    table: list[list[str]] = []
    items: list[str] = []

    def cells(line: str) -> list[str]:
        parts = re.split(r"(?<!\\)\|", line.strip().strip("|"))
        return [c.strip().replace("\\|", "|") for c in parts]

    def flush():
        nonlocal para, table, items
        if para:
            blocks.append(Para(" ".join(para)))
        if items:
            blocks.append(Bullets(items))
        if table:
            header, body = table[0], [r for r in table[1:] if not set("".join(r)) <= set("-: ")]
            align = "".join("r" if c.endswith(":") and not c.startswith(":") else "l" for c in table[1]) \
                if len(table) > 1 else ""
            align = align if len(align) == len(header) else ""
            blocks.append(Table([plain_text(h) for h in header], body, align=align))
        para, table, items = [], [], []

    for line in text.splitlines():
        stripped = line.strip()
        if not stripped:
            flush()
        elif stripped.startswith("|"):
            if para or items:
                flush()
            table.append(cells(stripped))
        elif stripped.startswith(("- ", "* ")):
            if para or table:
                flush()
            items.append(stripped[2:])
        elif stripped.startswith("#"):
            flush()
            blocks.append(Para(f"**{stripped.lstrip('#').strip()}**"))
        else:
            if table or items:
                flush()
            para.append(stripped)
    flush()
    return blocks


# --- Typst ----------------------------------------------------------------------------

def typst_str(s: str) -> str:
    """A Typst string literal: inserted with `#"..."`, its text is never read as markup."""
    s = s.replace("\\", "\\\\").replace('"', '\\"').replace("\r", "").replace("\n", "\\n").replace("\t", "    ")
    return f'"{s}"'


def typst_inline(text: str) -> str:
    out = []
    for kind, t in inline_parts(text):
        if kind == "text":
            out.append(f"#{typst_str(t)}")
        elif kind == "code":
            out.append(f"#raw({typst_str(t)})")
        else:
            out.append(f"#{kind}({typst_str(t)})")
    return "".join(out)


TYPST_PREAMBLE = r"""
#set document(title: TITLE, author: "scratchlm")
#set page(paper: "a4", margin: (x: 2.2cm, y: 2.4cm))
#set text(size: 10.5pt, lang: "en", hyphenate: false)
#set par(justify: true)
#set heading(numbering: "1.1")
#show heading.where(level: 1): it => { pagebreak(weak: true); v(1.5em); text(size: 20pt, it); v(0.8em) }
#show raw: set text(font: "DejaVu Sans Mono", size: 8pt)
#show raw.where(block: true): set text(size: 7.5pt)
#show raw.where(block: true): it => align(left, block(fill: luma(245), inset: 6pt, radius: 3pt, width: 100%, it))
#show figure.where(kind: raw): set block(breakable: true)
#show figure.where(kind: table): set figure.caption(position: top)
#set table(stroke: 0.4pt + luma(160), inset: 4pt)
#show table: set text(size: 8.5pt)
#show table: set par(justify: false)
#let note(body, missing: false) = block(
  fill: if missing { rgb("#fff4e0") } else { rgb("#eef4fb") },
  stroke: (left: 3pt + if missing { rgb("#e08a00") } else { rgb("#3a78c2") }),
  inset: 8pt, width: 100%, body)
"""


def to_typst(doc: Document) -> str:
    """Typst source for the whole guide. Image paths are file names next to the source."""
    out = [TYPST_PREAMBLE.replace("TITLE", typst_str(doc.title))]
    facts = ", ".join(f"[#{typst_str(k)}], [#{typst_str(v)}]" for k, v in doc.facts)
    out.append("#page(numbering: none)[\n#v(5cm)\n#align(center)[\n"
               f"#text(size: 28pt, weight: \"bold\")[#{typst_str(doc.title)}]\n#v(0.6cm)\n"
               f"#text(size: 14pt)[#{typst_str(doc.subtitle)}]\n#v(0.4cm)\n#text(size: 12pt)[#{typst_str(doc.date)}]\n"
               "#v(1.5cm)\n"
               f"#table(columns: 2, stroke: none, align: (right, left), {facts})\n"
               f"#v(1cm)\n#block(width: 75%)[#set par(justify: false)\n"
               f"#text(size: 10pt)[{typst_inline(doc.intro)}]]\n]]\n")
    out.append("#set page(numbering: \"1\", number-align: center)\n#counter(page).update(1)\n"
               "#outline(depth: 2, indent: auto)\n")
    for b in doc.blocks:
        out.append(typst_block(b))
    return "\n".join(out)


def typst_block(b: Block) -> str:
    if isinstance(b, Heading):
        return f"{'=' * b.level} {typst_inline(b.text)}\n"
    if isinstance(b, Para):
        return typst_inline(b.text) + "\n"
    if isinstance(b, Bullets):
        return "\n".join(f"- {typst_inline(i)}" for i in b.items) + "\n"
    if isinstance(b, Code):
        raw = f"raw(lang: {typst_str(b.lang)}, block: true, {typst_str(b.source.rstrip())})"
        if b.caption:
            return f"#figure({raw}, kind: raw, supplement: [Listing], caption: [{typst_inline(b.caption)}])\n"
        return f"#{raw}\n"
    if isinstance(b, Table):
        ncol = len(b.header)
        align = ", ".join({"l": "left", "r": "right", "c": "center"}[a] for a in (b.align or "l" * ncol))
        cells = [f"table.header({', '.join(f'[*#{typst_str(h)}*]' for h in b.header)})"]
        cells += [f"[{typst_inline(str(c))}]" for row in b.rows for c in row]
        table = f"table(columns: {ncol}, align: ({align},), {', '.join(cells)})"
        if ncol >= 7:  # a wide table: smaller type so it fits the page
            table = f"[#show table: set text(size: 6.5pt)\n#{table}]"
        if not b.caption:
            return f"#{table}\n"
        fig = f"#figure({table}, caption: [{typst_inline(b.caption)}])"
        # a short table stays with its caption on one page; a long one may continue on the next
        return f"#[#show figure: set block(breakable: true)\n{fig}]\n" if len(b.rows) > 25 else fig + "\n"
    if isinstance(b, Figure):
        if b.html_only:
            return ""
        return (f"#figure(image({typst_str(b.path.name)}, width: {round(b.width * 100)}%), "
                f"caption: [{typst_inline(b.caption)}])\n")
    if isinstance(b, Math):
        return f"$ {b.typst} $\n"
    if isinstance(b, Note):
        body = typst_inline(b.text)
        if b.command:
            body += f" #raw(block: true, lang: \"bash\", {typst_str(b.command)})"
        return f"#note(missing: {'true' if b.missing else 'false'})[{body}]\n"
    raise TypeError(f"unknown block {b!r}")


# --- HTML -----------------------------------------------------------------------------

CSS = """
body { font-family: Georgia, 'Times New Roman', serif; max-width: 50em; margin: 2em auto; padding: 0 1em;
       line-height: 1.5; color: #222; }
h1 { border-bottom: 1px solid #ccc; margin-top: 2.5em; }
h1.title { border: none; text-align: center; font-size: 2.4em; }
.subtitle, .date { text-align: center; } .facts { margin: 1em auto; }
pre { background: #f5f5f5; padding: .6em; overflow-x: auto; font-size: .85em; border-radius: 3px; }
code { font-family: 'DejaVu Sans Mono', Menlo, monospace; font-size: .9em; }
table { border-collapse: collapse; margin: 1em 0; font-size: .9em; }
td, th { border: 1px solid #bbb; padding: .25em .5em; vertical-align: top; }
figure { margin: 1.5em 0; text-align: center; } figure img { max-width: 100%; }
figcaption, caption { font-size: .9em; color: #444; margin: .4em 0; }
.note { background: #eef4fb; border-left: 4px solid #3a78c2; padding: .5em 1em; margin: 1em 0; }
.note.missing { background: #fff4e0; border-left-color: #e08a00; }
.math { text-align: center; font-style: italic; margin: 1em 0; }
nav ol { line-height: 1.3; }
"""


def html_inline(text: str) -> str:
    out = []
    for kind, t in inline_parts(text):
        t = html.escape(t)
        tags = {"code": "code", "emph": "em", "strong": "strong"}
        out.append(t if kind == "text" else f"<{tags[kind]}>{t}</{tags[kind]}>")
    return "".join(out)


def highlight_html(source: str, lang: str) -> str:
    try:  # pygments colours the code when it is installed; plain text otherwise (hence imported here)
        from pygments import highlight
        from pygments.formatters import HtmlFormatter  # (optional)
        from pygments.lexers import get_lexer_by_name  # (optional)
        from pygments.util import ClassNotFound  # (optional)
    except ImportError:
        return f"<pre><code>{html.escape(source)}</code></pre>"
    try:
        lexer = get_lexer_by_name(lang)
    except ClassNotFound:
        return f"<pre><code>{html.escape(source)}</code></pre>"
    return highlight(source, lexer, HtmlFormatter(noclasses=True, nowrap=False, style="friendly"))


def data_uri(path: Path) -> str:
    mime = {".svg": "image/svg+xml", ".png": "image/png", ".gif": "image/gif",
            ".jpg": "image/jpeg"}[path.suffix.lower()]
    return f"data:{mime};base64,{base64.b64encode(path.read_bytes()).decode('ascii')}"


def to_html(doc: Document) -> str:
    """One self-contained HTML page: styles inline, figures as data URIs."""
    body, toc, counters = [], [], {"chapter": 0, "section": 0, "figure": 0, "table": 0, "listing": 0}
    for b in doc.blocks:
        if isinstance(b, Heading):
            if b.level == 1:
                counters["chapter"] += 1
                counters["section"] = 0
                num = f"{counters['chapter']}"
                toc.append(f'<li><a href="#ch{num}">{html_inline(b.text)}</a></li>')
                body.append(f'<h1 id="ch{num}">{num} {html_inline(b.text)}</h1>')
            else:
                counters["section"] += 1
                body.append(f"<h2>{counters['chapter']}.{counters['section']} {html_inline(b.text)}</h2>")
        elif isinstance(b, Para):
            body.append(f"<p>{html_inline(b.text)}</p>")
        elif isinstance(b, Bullets):
            body.append("<ul>" + "".join(f"<li>{html_inline(i)}</li>" for i in b.items) + "</ul>")
        elif isinstance(b, Code):
            code = highlight_html(b.source.rstrip() + "\n", b.lang)
            if b.caption:
                counters["listing"] += 1
                code += f"<figcaption>Listing {counters['listing']}: {html_inline(b.caption)}</figcaption>"
                code = f"<figure style='text-align:left'>{code}</figure>"
            body.append(code)
        elif isinstance(b, Table):
            cap = ""
            if b.caption:
                counters["table"] += 1
                cap = f"<caption>Table {counters['table']}: {html_inline(b.caption)}</caption>"
            head = "".join(f"<th>{html.escape(h)}</th>" for h in b.header)
            align = b.align or "l" * len(b.header)
            style = {"l": "left", "r": "right", "c": "center"}
            rows = "".join("<tr>" + "".join(f'<td style="text-align:{style[a]}">{html_inline(str(c))}</td>'
                                            for a, c in zip(align, row)) + "</tr>" for row in b.rows)
            body.append(f"<table>{cap}<thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table>")
        elif isinstance(b, Figure):
            counters["figure"] += 1 if not b.html_only else 0
            if b.html_only:
                body.append(f'<figure><img src="{data_uri(b.path)}" alt="{html.escape(plain_text(b.caption))}" '
                            f'style="width:{round(b.width * 100)}%"><figcaption>{html_inline(b.caption)}</figcaption>'
                            "</figure>")
                continue
            body.append(f'<figure><img src="{data_uri(b.path)}" alt="{html.escape(plain_text(b.caption))}" '
                        f'style="width:{round(b.width * 100)}%"><figcaption>Figure {counters["figure"]}: '
                        f"{html_inline(b.caption)}</figcaption></figure>")
        elif isinstance(b, Math):
            body.append(f'<p class="math">{html.escape(b.plain)}</p>')
        elif isinstance(b, Note):
            cmd = f"<pre><code>{html.escape(b.command)}</code></pre>" if b.command else ""
            body.append(f'<div class="note{" missing" if b.missing else ""}">{html_inline(b.text)}{cmd}</div>')
        else:
            raise TypeError(f"unknown block {b!r}")
    facts = "".join(f"<tr><th>{html.escape(k)}</th><td>{html.escape(v)}</td></tr>" for k, v in doc.facts)
    return (f"<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>{html.escape(doc.title)}</title>"
            f"<style>{CSS}</style></head><body>\n<h1 class=\"title\">{html.escape(doc.title)}</h1>"
            f'<p class="subtitle">{html.escape(doc.subtitle)}</p><p class="date">{html.escape(doc.date)}</p>'
            f'<table class="facts">{facts}</table><p class="subtitle">{html_inline(doc.intro)}</p>\n'
            f'<nav><h2>Contents</h2><ol>{"".join(toc)}</ol></nav>\n'
            + "\n".join(body) + "\n</body></html>\n")
