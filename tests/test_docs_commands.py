"""Docs that stay true: every `scratchlm ...` command line shown in README.md and docs/*.md
parses with the real argument parser (nothing is run), and its config overrides name real keys.

Lines that describe a syntax rather than show a command (with `[...]`, `|`, `…` or `<...>`)
are skipped; so are lines marked with `# (not a command)`.
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

from scratchlm.cli import build_parser
from scratchlm.cli.common import split_overrides
from scratchlm.config import build_config
from scratchlm.errors import ScratchLMError

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
SYNTAX = re.compile(r"\[|\||…|\.\.\.|<[A-Za-z_ -]+>|\{| / ")
PROMPT = re.compile(r"^(\$ )?(\S+=\S+ )*(scratchlm |python -m scratchlm |torchrun .*-m scratchlm )")


def command_lines(path: Path) -> list[tuple[int, str]]:
    """(line number, 'scratchlm ...') for each command in fenced code blocks and inline code spans."""
    found, names, in_block, joined, start, shell = [], [], False, "", 0, False
    known = set(next(a for a in build_parser()._actions if a.dest == "command").choices)
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if line.strip().startswith("```"):
            in_block = not in_block
            shell = line.strip()[3:].strip() in ("bash", "sh", "shell", "console")
            continue
        if in_block:
            if joined:
                joined += " " + line.strip()
            else:
                joined, start = line.strip(), n
            if joined.endswith("\\"):
                joined = joined[:-1]
                continue
            text, joined = joined, ""
            texts = [text] if PROMPT.match(text) else []  # a command, not a line of printed output
        else:
            start = n
            texts = re.findall(r"`([^`]*scratchlm [^`]*)`", line)
        for text in texts:
            text = text.split(" # ")[0].split("  #")[0].strip()
            m = re.search(r"(?:^|\s|-m )scratchlm (.*)$", text)
            if not m or "(not a command)" in line:
                continue
            cmd = m.group(1).split(" && ")[0].split(" | ")[0].split(";")[0]
            if SYNTAX.search(cmd) or cmd.startswith("-m"):
                continue
            if in_block and not shell and cmd.split(" ")[0] not in known:
                continue  # printed output in a plain block ("scratchlm fp32  1278 ..."), not a command
            if in_block or " " in cmd.strip():  # inline, `scratchlm doctor` names a command: checked below
                found.append((start, "scratchlm " + cmd.strip()))
            else:
                names.append((start, cmd.strip()))
    return found, names


def commands_named(path: Path) -> list[tuple[int, str]]:
    return command_lines(path)[1]


CASES = [(path, n, cmd) for path in DOCS for n, cmd in command_lines(path)[0]]
NAMED = [(path, n, name) for path in DOCS for n, name in commands_named(path)]


def test_the_docs_show_commands():
    assert len(CASES) > 20


@pytest.mark.parametrize("path,n,cmd", CASES, ids=[f"{p.name}:{n}" for p, n, _ in CASES])
def test_documented_command_parses(path, n, cmd):
    parser = build_parser()
    try:
        argv = shlex.split(cmd)[1:]
    except ValueError as e:
        pytest.fail(f"{path.name}:{n}: cannot split {cmd!r}: {e}")
    try:
        args, rest = parser.parse_known_args(argv)
    except SystemExit:
        pytest.fail(f"{path.name}:{n}: `{cmd}` does not parse")
    if not rest:
        return
    try:
        overrides = split_overrides(rest)
    except ScratchLMError as e:
        pytest.fail(f"{path.name}:{n}: `{cmd}`: {e}")
    try:
        build_config(overrides=overrides)
    except ScratchLMError as e:
        if "unknown config key" in str(e):
            pytest.fail(f"{path.name}:{n}: `{cmd}`: {e}")


@pytest.mark.parametrize("path,n,name", NAMED, ids=[f"{p.name}:{n}:{c}" for p, n, c in NAMED])
def test_named_command_exists(path, n, name):
    sub = next(a for a in build_parser()._actions if a.dest == "command")
    assert name in sub.choices, f"{path.name}:{n}: `scratchlm {name}` is not a command"


def test_readme_layout_lists_every_folder_and_module():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    layout = readme.split("<!-- layout")[1].split("```")[1]
    src = ROOT / "src" / "scratchlm"
    missing = []
    for path in sorted(src.rglob("*.py")):
        rel = path.relative_to(src)
        if path.name == "__init__.py" and len(rel.parts) > 1:
            continue  # a package is listed by its folder
        if len(rel.parts) > 1 and f"{rel.parts[0]}/" not in layout:
            missing.append(f"{rel.parts[0]}/")
        if path.name not in layout:
            missing.append(str(rel))
    assert not missing, "README.md's layout section does not list: " + ", ".join(sorted(set(missing)))
