"""Reading a run folder's records back, and replaying them through the detectors.

The files (all JSON lines, appended as training goes, so a crashed run has them too):
    metrics.jsonl      written by the training loop: one line per step, one per evaluation
    probes.jsonl       written by the live doctor: update-to-weight ratios, sample repetition
    diagnostics.jsonl  written by the live doctor: one line per finding
"""

from __future__ import annotations

import json
from pathlib import Path

from ..errors import ScratchLMError


STEP_KEYS = ("step", "loss", "lr", "grad_norm")  # a step record without these (edited by hand?) is left out


def read_jsonl(path: Path) -> list[dict]:
    """All complete JSON lines of a file; a half-written last line (a crash) is skipped."""
    if not path.exists():
        return []
    out = []
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        try:
            rec = json.loads(line)  # json reads NaN/Infinity, as the loop writes them
        except (json.JSONDecodeError, RecursionError):  # torn by a crash, or a crafted, absurdly nested line
            continue
        if isinstance(rec, dict):
            out.append(rec)
    return out


def drop_rewound(records: list[dict]) -> list[dict]:
    """A resumed run (or a guard rollback) goes back to a checkpoint and logs those steps
    again; keep only the history that led to the end. In metrics.jsonl a step record whose
    step is not after the previous one marks the rewind, as does an {"event": "resume"}
    line; in probes.jsonl and diagnostics.jsonl a "start" record (written when training
    starts or resumes at step S) or a "rewind" record (a rollback to S) discards what was
    recorded after S."""
    kept: list[dict] = []
    for rec in records:
        step = rec.get("step")
        if not isinstance(step, int):
            continue
        if "loss" in rec:  # a step record
            while kept and kept[-1]["step"] >= step:
                kept.pop()
        elif rec.get("kind") in ("start", "rewind") or rec.get("event") == "resume":
            while kept and kept[-1]["step"] > step:
                kept.pop()
        kept.append(rec)
    return kept


def read_records(run_dir: str | Path) -> dict:
    """config, step records, eval records, probes and findings of a run folder."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise ScratchLMError(f"{run_dir} is not a run folder")
    cfg_path = run_dir / "config.json"
    if not cfg_path.exists():
        raise ScratchLMError(
            f"{run_dir} has no config.json: not a run folder (scratchlm train --out {run_dir} makes one)"
        )
    try:
        config = json.loads(cfg_path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError) as e:
        raise ScratchLMError(f"{cfg_path} is corrupt ({type(e).__name__}); not a readable run folder") from None
    if not isinstance(config, dict) or not isinstance(config.get("train"), dict):
        raise ScratchLMError(f"{cfg_path} does not hold a run's config (a JSON object with a 'train' section)")
    metrics = drop_rewound(read_jsonl(run_dir / "metrics.jsonl"))
    return {
        "config": config,
        "steps": [r for r in metrics if "loss" in r and all(isinstance(r.get(k), (int, float)) for k in STEP_KEYS)],
        "evals": [r for r in metrics if r.get("event") == "eval"],
        "probes": drop_rewound(read_jsonl(run_dir / "probes.jsonl")),
        "findings": [r for r in drop_rewound(read_jsonl(run_dir / "diagnostics.jsonl")) if r.get("kind") == "finding"],
    }


def replay(doctor, steps: list[dict], evals: list[dict], probes: list[dict], upto: int | None = None) -> None:
    """Feed records to a Doctor in the order the live run saw them: at each step, the step
    record, then its probes, then its evaluation."""
    by_step: dict[int, list[tuple[int, dict]]] = {}
    for order, kind, recs in ((0, "step", steps), (2, "eval", evals)):
        for r in recs:
            by_step.setdefault(r["step"], []).append((order, kind, r))
    for r in probes:
        if r.get("kind") in ("start", "rewind"):  # markers, not measurements
            continue
        order = 1 if r.get("kind") == "update_ratio" else 3  # repetition is sampled at the evaluation
        by_step.setdefault(r["step"], []).append((order, "probe", r))
    for step in sorted(by_step):
        if upto is not None and step > upto:
            break
        for _, kind, r in sorted(by_step[step], key=lambda t: t[0]):
            getattr(doctor, kind)(r)
