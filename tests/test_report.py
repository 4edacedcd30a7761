"""`scratchlm report`: the guide written from a run folder, as a PDF and as one HTML page.

One tiny run is trained once for the module (a BPE tokenizer, two evaluations, the live
doctor attached); the guides built from it are read back with pypdf and checked for the
chapter titles and the run's own numbers.
"""

import json
import re
import shutil
import subprocess

import pytest

from scratchlm.cli import main
from scratchlm.config import build_config
from scratchlm.doctor import live
from scratchlm.errors import ScratchLMError
from scratchlm.report import build_report
from scratchlm.report.chapters import CHAPTERS
from scratchlm.report.doc import Code, Document, Heading, Para, Table, to_typst
from scratchlm.report.facts import gather
from scratchlm.train import run_training

pypdf = pytest.importorskip("pypdf")
pytest.importorskip("typst")

TITLES = ["Tokenization", "Attention", "The transformer block and the GPT stack", "Training",
          "Attention evolving during training", "Generation", "Answering questions", "Troubleshooting",
          "What to try next"]


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    from scratchlm.data.corpus import load_corpus

    folder = tmp_path_factory.mktemp("report")
    (folder / "plays.txt").write_text("".join(load_corpus("", 0.1).train)[:60_000], encoding="utf-8")
    cfg = build_config("tiny", overrides={
        "data.path": str(folder / "plays.txt"), "data.vocab_size": 300, "model.n_layer": 2, "model.n_head": 2,
        "model.n_embd": 32, "model.block_size": 32, "train.batch_size": 8, "train.max_steps": 30,
        "train.eval_interval": 15, "train.eval_tokens": 2048, "train.warmup_steps": 5, "sample.num_samples": 0,
        "viz.tensorboard": False})
    run = folder / "run"
    events = live.attach(None, quiet=True)
    viz_live = pytest.importorskip("scratchlm.viz.live")
    viz_live.attach(events, cfg.viz, say=lambda m: None)  # attention snapshots and figures, as `scratchlm train` does
    run_training(cfg, run, overwrite=True, events=events)
    return run


def pdf_text(path) -> tuple[str, int]:
    reader = pypdf.PdfReader(str(path))
    text = "\n".join(page.extract_text() or "" for page in reader.pages)
    return re.sub(r"\s+", " ", text), len(reader.pages)


def has(text: str, phrase: str) -> bool:
    """phrase in text, ignoring whitespace: a PDF's text layer may join or split words at line ends."""
    return re.sub(r"\s+", "", phrase) in re.sub(r"\s+", "", text)


def test_pdf_has_every_chapter_and_the_runs_numbers(run_dir, tmp_path):
    result = build_report(run_dir, tmp_path / "guide.pdf")
    text, pages = pdf_text(tmp_path / "guide.pdf")
    assert result["chapters"] == TITLES and len(CHAPTERS) == 9
    for title in TITLES:
        assert title in text, title
    facts = gather(run_dir)
    assert facts.n_params and f"{facts.n_params:,}" in text  # title page, parameter table
    assert f"{facts.final_eval['val_loss']:.4f}" in text
    assert f"{facts.vocab_size:,}" in text and facts.vocab_size == 300
    assert facts.run_dir.name in text
    assert 12 <= pages <= 80 and result["pages"] == pages
    assert "What formed when" in text  # the attention snapshots recorded during training
    # the real source code, read from the installed package
    assert "def scaled_dot_product_attention" in text and "def train_naive" in text


def test_html_is_self_contained_with_every_figure(run_dir, tmp_path):
    result = build_report(run_dir, tmp_path / "guide.html", samples=False)
    page = (tmp_path / "guide.html").read_text(encoding="utf-8")
    images = re.findall(r'<img src="data:image/(svg\+xml|png|gif);base64,', page)
    assert len(images) == result["figures"] >= 2  # at least the block diagram and the curves
    assert "src=\"http" not in page and "<link" not in page  # nothing fetched from elsewhere
    for title in TITLES:
        assert title in page


def test_missing_parts_are_named_with_their_command(run_dir, tmp_path):
    bare = tmp_path / "bare"  # trained without attention snapshots (so without their figures) and the live doctor
    shutil.copytree(run_dir, bare, ignore=shutil.ignore_patterns("attention", "attention_filmstrip.*",
                                                                 "attention_metrics.*", "attention_evolution.*",
                                                                 "probes.jsonl", "diagnostics.jsonl", "curves.*"))
    assert (bare / "figures" / "tokens.svg").exists()  # the other figures are kept (drawing them all takes long)
    result = build_report(bare, tmp_path / "guide.pdf", samples=False, memory="skip")
    text, _ = pdf_text(tmp_path / "guide.pdf")
    assert has(text, "Not in this guide yet")
    assert has(text, "attention snapshots") and has(text, "--viz.snapshots true")
    assert has(text, "without the live doctor")  # the doctor's table still comes, with what it could not measure
    assert has(text, "scratchlm finetune --init-from")  # not fine-tuned
    assert has(text, "scratchlm tokenizer compare")  # no comparison folder
    assert has(text, "scratchlm memory")  # memory skipped
    assert any("fine-tuning" in m for m in result["missing"])
    assert has(text, "Training curves of this run")  # a figure training did not leave is drawn for the guide


def test_run_without_checkpoint_still_gives_a_guide(run_dir, tmp_path):
    crashed = tmp_path / "crashed"
    shutil.copytree(run_dir, crashed, ignore=shutil.ignore_patterns("checkpoints"))
    result = build_report(crashed, tmp_path / "guide.html")
    page = (tmp_path / "guide.html").read_text(encoding="utf-8")
    assert "no complete checkpoint" in page or "no checkpoint" in page
    assert result["chapters"] == TITLES


def test_tool_results_in_the_folder_fill_their_parts(run_dir, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(run_dir, run)
    (run / "tokenizer-compare").mkdir()
    (run / "tokenizer-compare" / "results.csv").write_text(
        "tokenizer,vocab,bytes_per_token,unknown_rate\nours (gpt4),1024,3.1,0\nword-level,1024,4.2,0.071\n")
    (run / "finetune.json").write_text(json.dumps({"base_checkpoint": "runs/base/checkpoints/best", "examples": 800}))
    (run / "eval_questions.json").write_text(json.dumps({  # evaluate_run's result, its Scores as dicts
        "model": {"correct": {"first_speaker": 19, "next_line": 3}, "total": {"first_speaker": 20, "next_line": 20}},
        "majority": {"correct": {"first_speaker": 6, "next_line": 0}, "total": {"first_speaker": 20, "next_line": 20}},
        "examples": [["Who speaks first?", "ROMEO", "ROMEO"]]}))
    (run / "ablation").mkdir()
    row = {"change": "baseline", "lr": 0.002, "parameters": 858880, "steps": 100, "tokens_per_s": 3000.0,
           "val_loss": 4.5, "val_bpb": 3.2, "delta_bpb": 0.0, "diverged": False, "seconds": 60.0, "run_dir": "r0"}
    post = {**row, "change": "model.norm_position=post", "val_bpb": 3.25, "delta_bpb": 0.05, "run_dir": "r1"}
    (run / "ablation" / "ablation.json").write_text(json.dumps(
        {"command": "scratchlm ablate --change model.norm_position=post", "rows": [row, post]}))
    build_report(run, tmp_path / "guide.pdf", samples=False)
    text, _ = pdf_text(tmp_path / "guide.pdf")
    assert "model.norm_position=post" in text and "+0.050" in text  # the ablation, as `scratchlm ablate` prints it
    assert "word-level" in text and "0.071" in text
    assert "first_speaker" in text and "95.0%" in text and "55.0%" in text and "30.0%" in text
    assert "runs/base/checkpoints/best" in text


@pytest.mark.parametrize("make", ["missing", "no_config", "corrupt_config", "a_file"])
def test_missing_or_broken_run_folder_is_a_one_line_error(tmp_path, capsys, make):
    target = tmp_path / "run"
    if make != "missing":
        target.mkdir()
    if make == "corrupt_config":
        (target / "config.json").write_text("{not json")
    if make == "a_file":
        target.rmdir()
        target.write_text("hello")
    with pytest.raises(ScratchLMError):
        build_report(target)
    assert main(["report", str(target)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err


def test_cli_writes_guide_into_the_run_folder(run_dir, capsys):
    assert main(["report", str(run_dir), "--no-samples", "--format", "html"]) == 0
    assert (run_dir / "guide.html").exists()
    assert "guide written" in capsys.readouterr().out
    assert main(["report", str(run_dir), "--bogus"]) == 2


def test_pages_render_to_images_that_are_not_blank(run_dir, tmp_path):
    if shutil.which("pdftoppm") is None:
        pytest.skip("pdftoppm (poppler-utils) is not installed")
    import matplotlib.image as mpimg

    build_report(run_dir, tmp_path / "guide.pdf", samples=False)
    subprocess.run(["pdftoppm", "-png", "-r", "30", "-f", "1", "-l", "6", str(tmp_path / "guide.pdf"), str(tmp_path / "p")],
                   check=True)
    pngs = sorted(tmp_path.glob("p-*.png"))
    assert len(pngs) == 6
    for png in pngs:
        img = mpimg.imread(png)
        assert img[..., :3].std() > 0.02, png.name  # text on the page, not a blank sheet


def test_text_with_typst_markup_characters_is_printed_as_is(tmp_path):
    import typst

    nasty = 'a #let x = 1 $x^2$ *not bold* _under_ @ref <label> [b] \\ "q" // c /* d */ = head'
    doc = Document("T", "s", "d", [("k", "#v")], [Heading("H"), Para("x `#raw` y"), Code(nasty, lang="text"),
                                                  Table(["#"], [[nasty]])])
    doc.add(Para(nasty.replace("*", "").replace("`", "")))
    src = tmp_path / "t.typ"
    src.write_text(to_typst(doc))
    typst.compile(str(src), output=str(tmp_path / "t.pdf"), root=str(tmp_path))
    text, _ = pdf_text(tmp_path / "t.pdf")
    assert "#let x = 1 $x^2$" in text and "@ref <label>" in text


def test_markdown_from_other_commands_becomes_blocks():
    from scratchlm.report.doc import Bullets, from_markdown

    md = ("Tokenizers on **the plays**.\n\n| tokenizer | bytes/token |\n|---|---:|\n| ours \\| gpt4 | 3.10 |\n"
          "| word | 4.20 |\n\n- a *note*\n- another\n\n## Unknown words\n")
    blocks = from_markdown(md)
    assert [type(b).__name__ for b in blocks] == ["Para", "Table", "Bullets", "Para"]
    table = blocks[1]
    assert table.header == ["tokenizer", "bytes/token"] and table.align == "lr"
    assert table.rows == [["ours | gpt4", "3.10"], ["word", "4.20"]]
    assert isinstance(blocks[2], Bullets) and blocks[3].text == "**Unknown words**"


def commands_in(doc) -> list[str]:
    """Every `scratchlm ...` command line the guide shows: code blocks, notes and inline code."""
    from scratchlm.report.doc import Bullets, Code, Note, Para, inline_parts

    lines = []
    for b in doc.blocks:
        if isinstance(b, Code) and b.lang == "bash":
            lines += b.source.splitlines()
        elif isinstance(b, Note):
            lines += b.command.splitlines()
        texts = b.items if isinstance(b, Bullets) else [b.text] if isinstance(b, (Para, Note)) else []
        lines += [t for text in texts for kind, t in inline_parts(text) if kind == "code"]
    return [line.strip() for line in lines if line.strip().startswith("scratchlm ")]


def test_commands_the_guide_shows_parse_with_the_real_parser(run_dir, tmp_path):
    import shlex

    from scratchlm.cli import build_parser
    from scratchlm.report import build_document
    from scratchlm.report.chapters import Context

    doc = build_document(gather(run_dir), Context(tmp_path, samples=False, memory="skip"))
    parser = build_parser()
    registered = set(parser._subparsers._group_actions[0].choices)
    commands = commands_in(doc)
    assert len(commands) >= 10
    checked = 0
    for line in commands:
        argv = shlex.split(line, comments=True)[1:]
        if argv[0] not in registered:  # a command another part of the project is still adding
            continue
        args, rest = parser.parse_known_args(argv)  # a wrong spelling exits with status 2
        assert all(a.startswith("--") and "." in a.split("=")[0] for a in rest[::2]), line
        checked += 1
    assert checked >= 8


def test_a_fine_tuned_run_beside_this_one_fills_the_questions_chapter(run_dir, tmp_path):
    """Chapter 7 of the main job's guide: found beside the run, the newest run fine-tuned from it."""
    from scratchlm.report.chapters import Context, chapter_questions
    from scratchlm.report.doc import Note, Para, Table

    run = tmp_path / "run"
    shutil.copytree(run_dir, run)
    ctx = Context(tmp_path / "build", samples=False, memory="skip")
    assert any(isinstance(b, Note) for b in chapter_questions(gather(run), ctx))  # nothing beside it yet
    qa = tmp_path / "run-qa"
    qa.mkdir()
    (qa / "finetune.json").write_text(json.dumps({"init_from": str(run), "train_conversations": 900}))
    (qa / "metrics.jsonl").write_text("".join(json.dumps({"event": "eval", "step": s, "val_loss": v}) + "\n"
                                              for s, v in ((100, 4.0), (200, 2.5))))
    (qa / "eval_questions.json").write_text(json.dumps({
        "model": {"correct": {"first": 9, "next": 1}, "total": {"first": 10, "next": 10}},
        "majority": {"correct": {"first": 2, "next": 0}, "total": {"first": 10, "next": 10}},
        "examples": [["Who speaks first?", "VIOLA", "VIOLA"]]}))
    other = tmp_path / "unrelated-qa"  # fine-tuned from another run: not this chapter's
    other.mkdir()
    (other / "finetune.json").write_text(json.dumps({"init_from": str(tmp_path / "elsewhere")}))
    blocks = chapter_questions(gather(run), ctx)
    text = " ".join(b.text for b in blocks if isinstance(b, Para))
    tables = [b for b in blocks if isinstance(b, Table)]
    assert "run-qa" in text and "4.00" in text and "2.50" in text
    assert any(["first", "10", "90.0%", "20.0%"] == r for t in tables for r in t.rows)
    assert not any(isinstance(b, Note) for b in blocks)
    with pytest.raises(ScratchLMError, match="not a fine-tuned run"):
        chapter_questions(gather(run), Context(tmp_path / "b", samples=False, memory="skip", finetuned_dir=other / "x"))


def test_the_command_offers_every_format_the_library_writes():
    """cli/report.py names the formats itself (so `scratchlm` starts without loading Typst and matplotlib)."""
    from scratchlm.cli import build_parser
    from scratchlm.report import FORMATS

    parser = build_parser()
    for fmt in FORMATS:
        assert parser.parse_args(["report", "RUN", "--format", fmt]).format == fmt
    with pytest.raises(SystemExit):
        parser.parse_args(["report", "RUN", "--format", "docx"])
