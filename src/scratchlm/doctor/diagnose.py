"""`scratchlm doctor RUN_DIR`: the troubleshooting table, filled in from a run folder.

Works on finished, stopped and crashed runs: it replays metrics.jsonl (and, when the run
was trained with the live doctor, probes.jsonl and diagnostics.jsonl) through the same
detectors that watch live training, then prints one row per symptom with its status —
seen / not seen / not measurable — and the evidence.

Exit status: 0 no problem seen, 1 a problem was seen, 2 the folder could not be read.
"""

from __future__ import annotations

import argparse
import json
import sys
import textwrap

from ..errors import ScratchLMError
from .detectors import NOT_MEASURABLE, NOT_SEEN, SEEN, Doctor, Finding, RunInfo, Thresholds
from .records import load_run, replay

# The guide's table (likely cause and solution), keyed by detector, in the guide's order.
TABLE = [
    ("not_decreasing", "Learning rate too high or too low", "Sweep the learning rate (3e-4 is a good start for AdamW): scratchlm sweep lr"),
    ("exploding", "Exploding gradients", "Clip gradients or lower the learning rate"),
    ("repetition", "Hidden size too small (or greedy sampling)", "Increase the embedding size (e.g. 128 → 384); sample at temperature 0.8–1.0"),
    ("slow", "No data parallelism / too much work for the hardware", "Use DistributedDataParallel, bf16, torch.compile, or a smaller model"),
    ("initial_loss", "Initialisation or label bug", "Check the init scale and that targets are inputs shifted by one"),
    ("overfitting", "Too little data for the model", "More data, stop at the best checkpoint, dropout, a smaller model"),
]
MARK = {SEEN: "!!", NOT_SEEN: "ok", NOT_MEASURABLE: "--"}


def diagnose(run_dir, th: Thresholds | None = None) -> dict:
    """Replay a run folder through the detectors. Returns rows, findings and a run summary."""
    run = load_run(run_dir)
    cfg = run["config"]
    start = next((p for p in run["probes"] if p.get("kind") == "start"), {})
    info = RunInfo.from_config(cfg, **{k: start[k] for k in ("device", "dtype", "world", "n_params", "unigram_loss") if k in start})
    doctor = Doctor(info, th)
    replay(doctor, run["steps"], run["evals"], run["probes"])
    doctor.end()
    live = {f["key"]: f for f in run["findings"]}
    rows = []
    for key, cause, solution in TABLE:
        det = doctor.by_key()[key]
        status, evidence = det.status()
        finding = det.finding
        if finding is None and key in live:  # found during training, e.g. from data not kept in the files
            f = live[key]
            finding = Finding(f["key"], f["symptom"], f["step"], f["evidence"], f["cause"], f["fix"], f.get("numbers", {}))
            status, evidence = SEEN, finding.evidence + " (recorded live in diagnostics.jsonl)"
        rows.append({"key": key, "symptom": det.row, "status": status, "evidence": evidence, "cause": cause, "solution": solution,
                     "finding": finding.to_json() if finding else None})
    steps = run["steps"]
    last = steps[-1]["step"] if steps else 0
    max_steps = cfg["train"]["max_steps"]
    from pathlib import Path

    finished = (Path(run_dir) / "checkpoints" / "final").exists()
    state = ("finished" if finished else
             f"not finished: stopped or crashed at step {last} of {max_steps} (resume: scratchlm train --resume {run_dir})")
    summary = {"run_dir": str(run_dir), "steps": last, "max_steps": max_steps, "evaluations": len(run["evals"]), "state": state,
               "last_val_loss": run["evals"][-1]["val_loss"] if run["evals"] else None, "live_doctor": bool(run["probes"])}
    return {"summary": summary, "rows": rows, "problems": [r["key"] for r in rows if r["status"] == SEEN]}


def render(report: dict, width: int = 100) -> str:
    s = report["summary"]
    lines = [f"run {s['run_dir']}: {s['steps']} steps of {s['max_steps']}, {s['evaluations']} evaluation(s)"
             + (f", last val loss {s['last_val_loss']:.4f}" if s["last_val_loss"] is not None else "") + f"; {s['state']}"]
    if not s["live_doctor"]:
        lines.append("(trained without the live doctor: no samples or update ratios recorded, so some rows are not measurable)")
    lines.append("")
    w1 = max(len(r["symptom"]) for r in report["rows"])
    lines.append(f"    {'Symptom':<{w1}}  {'Status':<14}  Likely cause → Solution")
    for r in report["rows"]:
        lines.append(f"[{MARK[r['status']]}] {r['symptom']:<{w1}}  {r['status']:<14}  {r['cause']} → {r['solution']}")
    lines.append("")
    wrap = lambda label, text: textwrap.fill(text, width, initial_indent=f"    {label}", subsequent_indent=" " * (4 + len(label)))
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


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="scratchlm doctor", description="Diagnose a run folder (finished, stopped or crashed): "
                                "the troubleshooting table with a status and the evidence per row. Exit 1 when a problem is seen.")
    p.add_argument("run_dir", metavar="RUN_DIR")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    args = p.parse_args(argv)
    try:
        report = diagnose(args.run_dir)
    except ScratchLMError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(json.dumps(report, indent=1) if args.json else render(report))
    return 1 if report["problems"] else 0
