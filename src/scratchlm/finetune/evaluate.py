"""Exact-match evaluation: ask a model each question in the chat template, compare its answer.

The model answers greedily (temperature 0: the most likely token each time) until it writes
`<|end|>`; the answer counts when it equals the expected one exactly, after stripping spaces at
either end. Two baselines go in the same table:

  * the majority answer: for each kind of question, always give its most common answer in the
    evaluation set (a constant guess, and a generous one: it peeks at the evaluation answers);
  * the base model with the same template: the model fine-tuning started from, with the chat
    tokens added the way fine-tuning adds them (new rows = the mean embedding), i.e. step 0.
A question whose prompt does not leave room for its answer in the context counts as wrong.
"""

from __future__ import annotations

import json
import tempfile
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import torch

from ..errors import ScratchLMError
from ..inference import Run, generate_tokens, load_run
from .data import END, chat_ids, parse_record, prompt_ids, with_chat_tokens
from .questions import KINDS, write_questions
from .sft import INFO_FILE, grow_vocabulary


@dataclass
class Score:
    """Exact matches per question kind."""
    correct: Counter = field(default_factory=Counter)
    total: Counter = field(default_factory=Counter)
    too_long: int = 0
    first_hit: tuple[str, str] | None = None  # (question, answer) of the first question answered right

    def add(self, kind: str, ok: bool) -> None:
        self.total[kind] += 1
        self.correct[kind] += ok

    def accuracy(self, kind: str | None = None) -> float:
        if kind is None:
            return sum(self.correct.values()) / max(1, sum(self.total.values()))
        return self.correct[kind] / max(1, self.total[kind])


def chat_ready(run: Run) -> tuple[object, object, bool]:
    """(model, tokenizer, grown): a fine-tuned run as it is; a base run with the chat tokens added
    the way fine-tuning adds them (its step 0), so it can be asked in the same template."""
    tok, added = with_chat_tokens(run.tokenizer)
    if not added:
        return run.model, tok, False
    cfg = run.config
    cfg.model.vocab_size = tok.vocab_size
    device = next(run.model.parameters()).device
    return grow_vocabulary(run.model, cfg).to(device).eval(), tok, True


@torch.no_grad()
def answer(model, tok, messages: list[dict], max_new_tokens: int = 48) -> str | None:
    """The model's greedy answer to a conversation ending with a user turn; None if the prompt
    leaves no room in the context."""
    ids = prompt_ids(tok, messages)
    room = model.config.block_size - len(ids)
    if room < 1:
        return None
    end = chat_ids(tok)[END]
    device = next(model.parameters()).device
    out = []
    for nxt in generate_tokens(model, torch.tensor([ids], device=device), min(max_new_tokens, room), temperature=0.0):
        t = int(nxt[0, 0])
        if t == end:
            break
        out.append(t)
    return tok.decode(out)


def builtin_questions() -> list[dict]:
    """The built-in task's held-out questions, generated as `scratchlm data questions` writes them."""
    with tempfile.TemporaryDirectory() as tmp:
        return read_questions(write_questions(tmp)["eval"])


def read_questions(path: str | Path) -> list[dict]:
    """Rows of a question file: {'messages': [...], 'kind': ...}; the kind defaults to 'all'."""
    rows = []
    path = Path(path)
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        raise ScratchLMError(f"question file not found: {path}") from None
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as e:
            raise ScratchLMError(f"{path} line {n}: not valid JSON ({e.msg} at column {e.colno})") from None
        messages = parse_record(obj, f"{path} line {n}")
        if messages[-1]["role"] != "assistant":
            raise ScratchLMError(f"{path} line {n}: the last message must be the expected assistant answer")
        rows.append({"messages": messages, "kind": str(obj.get("kind", "all"))})
    if not rows:
        raise ScratchLMError(f"{path} holds no questions")
    return rows


def spread(rows: list[dict], n: int) -> list[dict]:
    """n rows evenly spaced through the list (all of them for n = 0 or n >= len): a quick
    evaluation that still samples every play and every kind."""
    if not n or n >= len(rows):
        return rows
    return [rows[i * len(rows) // n] for i in range(n)]


def score_model(model, tok, rows: list[dict], progress=None, examples: list | None = None) -> Score:
    """Exact-match score of a model over question rows. `progress(i, n)` after each question;
    `examples` (a list) collects (question, expected, answer) of the first few."""
    score = Score()
    for i, row in enumerate(rows):
        *question, expected = row["messages"]
        got = answer(model, tok, question)
        if got is None:
            score.too_long += 1
        ok = got is not None and got.strip() == expected["content"].strip()
        score.add(row["kind"], ok)
        if ok and score.first_hit is None:
            score.first_hit = (question[-1]["content"], got)
        if examples is not None and len(examples) < 6:
            examples.append((question[-1]["content"], expected["content"], got))
        if progress:
            progress(i + 1, len(rows))
    return score


def majority_baseline(rows: list[dict]) -> tuple[Score, dict[str, str]]:
    """Always answer a kind's most common expected answer; returns the score and those answers."""
    by_kind: dict[str, Counter] = {}
    for row in rows:
        by_kind.setdefault(row["kind"], Counter())[row["messages"][-1]["content"].strip()] += 1
    guesses = {k: c.most_common(1)[0][0] for k, c in by_kind.items()}
    score = Score()
    for row in rows:
        score.add(row["kind"], row["messages"][-1]["content"].strip() == guesses[row["kind"]])
    return score, guesses


def base_run_of(run: Run) -> Path | None:
    """The checkpoint a fine-tuned run started from (finetune.json), if it is still there."""
    info = run.run_dir / INFO_FILE
    if not info.exists():
        return None
    path = Path(json.loads(info.read_text()).get("base_checkpoint", ""))
    return path if path.is_dir() else None


def evaluate_run(path: str | Path, rows: list[dict], baseline_model: bool = True, progress=None,
                 device: str = "cpu") -> dict:
    """Scores of the run, the majority baseline and (if found and asked for) the base model."""
    run = load_run(path, device=device)
    model, tok, grown = chat_ready(run)
    result = {"run": str(run.checkpoint), "run_dir": str(run.run_dir), "grown": grown, "examples": []}
    result["model"] = score_model(model, tok, rows, progress, result["examples"])
    result["majority"], result["majority_answers"] = majority_baseline(rows)
    base = base_run_of(run) if baseline_model else None
    if base is not None:
        base_model, base_tok, _ = chat_ready(load_run(base, device=device))
        result["base"], result["base_path"] = score_model(base_model, base_tok, rows, progress), str(base)
    return result


def table(result: dict) -> list[str]:
    """The results as a text table: a row per kind and one for all, a column per model."""
    cols = [("this run", result["model"])]
    if "base" in result:
        cols.append(("base model", result["base"]))
    cols.append(("majority answer", result["majority"]))
    found = list(result["model"].total)
    kinds = [k for k in KINDS if k in found] + [k for k in found if k not in KINDS]
    lines = [f"{'question kind':<16}{'n':>6}" + "".join(f"{name:>18}" for name, _ in cols)]
    for kind in kinds + [None]:
        n = result["model"].total[kind] if kind else sum(result["model"].total.values())
        lines.append(f"{kind or 'all':<16}{n:>6}" + "".join(f"{s.accuracy(kind):>17.1%} " for _, s in cols))
    return lines


RESULT_FILE = "eval_questions.json"  # the built-in task's scores, kept in the run folder for the guide


def save_result(result: dict, n_questions: int, run_dir: str | Path) -> Path:
    """Write an evaluate_run result as RUN/eval_questions.json: the scores per kind of each column
    ("model", "base", "majority"), a few (question, expected, answer) examples and the count."""
    def plain(score: Score) -> dict:  # not dataclasses.asdict: it would rebuild each Counter from its items
        return {"correct": dict(score.correct), "total": dict(score.total), "too_long": score.too_long,
                "first_hit": list(score.first_hit) if score.first_hit else None}

    data = {key: plain(result[key]) for key in ("model", "base", "majority") if key in result}
    data["examples"] = [list(e) for e in result.get("examples", [])]
    data["questions"] = n_questions
    path = Path(run_dir) / RESULT_FILE
    path.write_text(json.dumps(data, indent=1, ensure_ascii=False), encoding="utf-8")
    return path
