"""`scratchlm doctor RUN_DIR`: the troubleshooting table for a run folder, with the evidence.

Works on finished, stopped and crashed runs (see `scratchlm.doctor.diagnose`).
Exit status: 0 no problem seen, 1 a problem was seen, 2 the folder could not be read.
"""

from __future__ import annotations

import argparse
import json
import textwrap

from ..doctor.detectors import NOT_MEASURABLE, NOT_SEEN, SEEN
from ..doctor.diagnose import diagnose
from .common import no_extra_args

NAME = "doctor"
HELP = "diagnose a run folder: the troubleshooting table, with evidence"
MARK = {SEEN: "!!", NOT_SEEN: "ok", NOT_MEASURABLE: "--"}


def add_parser(sub) -> argparse.ArgumentParser:
    p = sub.add_parser(
        NAME,
        help=HELP,
        allow_abbrev=False,
        description="Diagnose a run folder (finished, stopped or crashed): the troubleshooting table "
        "with a status and the evidence per row. Exit 1 when a problem is seen.",
    )
    p.add_argument("run_dir", metavar="RUN_DIR")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.set_defaults(run=run)
    return p


def render(report: dict, width: int = 100) -> str:
    s = report["summary"]
    lines = [
        f"run {s['run_dir']}: {s['steps']} steps of {s['max_steps']}, {s['evaluations']} evaluation(s)"
        + (f", last val loss {s['last_val_loss']:.4f}" if s["last_val_loss"] is not None else "")
        + f"; {s['state']}"
    ]
    if not s["live_doctor"]:
        lines.append(
            "(trained without the live doctor: no samples or update ratios recorded, so some rows are not measurable)"
        )
    lines.append("")
    w1 = max(len(r["symptom"]) for r in report["rows"])
    lines.append(f"    {'Symptom':<{w1}}  {'Status':<14}  Likely cause → Solution")
    for r in report["rows"]:
        lines.append(f"[{MARK[r['status']]}] {r['symptom']:<{w1}}  {r['status']:<14}  {r['cause']} → {r['solution']}")
    lines.append("")
    wrap = lambda label, text: textwrap.fill(
        text, width, initial_indent=f"    {label}", subsequent_indent=" " * (4 + len(label))
    )
    for r in report["rows"]:
        head = f"[{MARK[r['status']]}] {r['symptom']}: {r['status']}"
        f = r["finding"]
        if f:
            head += f" at step {f['step']} — {f['symptom']}"
        lines.append(head)
        lines.append(wrap("evidence: ", r["evidence"]))
        if f and f.get("cause"):
            lines.append(wrap("likely cause: ", f["cause"]))
            lines.append(wrap("fix: ", f["fix"]))
    n = len(report["problems"])
    lines.append("")
    lines.append(f"{n} problem(s) seen: {', '.join(report['problems'])}" if n else "no problem seen")
    return "\n".join(lines)


def run(args, rest: list[str]) -> int:
    no_extra_args(rest)
    report = diagnose(args.run_dir)
    print(json.dumps(report, indent=1) if args.json else render(report))
    return 1 if report["problems"] else 0
