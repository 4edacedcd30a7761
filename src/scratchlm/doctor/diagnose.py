"""The troubleshooting table, filled in from a run folder (the library behind `scratchlm doctor`).

Works on finished, stopped and crashed runs: it replays metrics.jsonl (and, when the run
was trained with the live doctor, probes.jsonl and diagnostics.jsonl) through the same
detectors that watch live training, then prints one row per symptom with its status —
seen / not seen / not measurable — and the evidence.
"""

from __future__ import annotations

from pathlib import Path

from .detectors import SEEN, Doctor, Finding, RunInfo, Thresholds
from .records import read_records, replay

# The guide's table (likely cause and solution), keyed by detector, in the guide's order.
TABLE = [
    (
        "not_decreasing",
        "Learning rate too high or too low",
        "Sweep the learning rate (3e-4 is a good start for AdamW): scratchlm sweep lr",
    ),
    ("exploding", "Exploding gradients", "Clip gradients or lower the learning rate"),
    (
        "repetition",
        "Hidden size too small (or greedy sampling)",
        "Increase the embedding size (e.g. 128 → 384); sample at temperature 0.8–1.0",
    ),
    (
        "slow",
        "No data parallelism / too much work for the hardware",
        "Use DistributedDataParallel, bf16, torch.compile, or a smaller model",
    ),
    ("initial_loss", "Initialisation or label bug", "Check the init scale and that targets are inputs shifted by one"),
    (
        "overfitting",
        "Too little data for the model",
        "More data, stop at the best checkpoint, dropout, a smaller model",
    ),
]


def diagnose(run_dir, th: Thresholds | None = None) -> dict:
    """Replay a run folder through the detectors. Returns rows, findings and a run summary."""
    run = read_records(run_dir)
    cfg = run["config"]
    start = next((p for p in run["probes"] if p.get("kind") == "start"), {})
    info = RunInfo.from_config(
        cfg, **{k: start[k] for k in ("device", "dtype", "world", "n_params", "unigram_loss", "from_weights")
                if k in start}
    )
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
            finding = Finding(
                f["key"], f["symptom"], f["step"], f["evidence"], f["cause"], f["fix"], f.get("numbers", {})
            )
            status, evidence = SEEN, finding.evidence + " (recorded live in diagnostics.jsonl)"
        rows.append(
            {
                "key": key,
                "symptom": det.row,
                "status": status,
                "evidence": evidence,
                "cause": cause,
                "solution": solution,
                "finding": finding.to_json() if finding else None,
            }
        )
    steps = run["steps"]
    last = steps[-1]["step"] if steps else 0
    max_steps = cfg["train"]["max_steps"]
    finished = (Path(run_dir) / "checkpoints" / "final").exists()
    state = (
        "finished"
        if finished
        else f"not finished: stopped or crashed at step {last} of {max_steps} (resume: scratchlm train --resume "
        f"{run_dir})"
    )
    summary = {
        "run_dir": str(run_dir),
        "steps": last,
        "max_steps": max_steps,
        "evaluations": len(run["evals"]),
        "state": state,
        "last_val_loss": run["evals"][-1]["val_loss"] if run["evals"] else None,
        "live_doctor": bool(run["probes"]),
    }
    return {"summary": summary, "rows": rows, "problems": [r["key"] for r in rows if r["status"] == SEEN]}
