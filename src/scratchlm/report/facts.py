"""What the guide says about one run, read from its folder: config, records, model, tokenizer.

`gather(run_dir)` returns a `Facts` object; chapters read it and never open files
themselves. A run folder that is missing or broken (no readable config.json, a corrupt
checkpoint or tokenizer) is a one-line `ScratchLMError`; a run that simply has not got
somewhere yet (no checkpoint, no evaluation) gives facts with those parts empty, and the
chapters say what is missing.
"""

from __future__ import annotations

import datetime as dt
import inspect
import json
import math
import statistics
import textwrap
from dataclasses import dataclass, field
from pathlib import Path

from ..doctor.records import drop_rewound, read_jsonl
from ..errors import ScratchLMError
from ..inference import Run, load_run


@dataclass
class Facts:
    """Everything the chapters need about one run; `run` is None when no checkpoint is complete yet."""

    run_dir: Path
    name: str
    date: str
    config: dict
    steps: list[dict]
    evals: list[dict]
    warnings: list[str]
    run: Run | None = None
    missing_model: str = ""  # why `run` is None
    extra: dict = field(default_factory=dict)  # results of other tools found in the folder

    @property
    def final_eval(self) -> dict | None:
        return self.evals[-1] if self.evals else None

    @property
    def best_val_loss(self) -> float | None:
        vals = [e["val_loss"] for e in self.evals if _finite(e.get("val_loss"))]
        return min(vals) if vals else None

    @property
    def n_params(self) -> int | None:
        return sum(p.numel() for p in self.run.model.parameters()) if self.run else None

    @property
    def vocab_size(self) -> int:
        return int(self.config.get("model", {}).get("vocab_size", 0))

    def bytes_per_token(self) -> float | None:
        """From the last evaluation: loss is nats per token, bpb bits per byte, so
        bytes per token = loss / (bpb · ln 2), measured on the held-out text."""
        ev = self.final_eval
        if not ev or not _finite(ev.get("val_bpb")) or not ev["val_bpb"]:
            return None
        return ev["val_loss"] / (ev["val_bpb"] * math.log(2))

    def median(self, key: str) -> float | None:
        vals = [s[key] for s in self.steps[1:] if _finite(s.get(key))]  # the first step includes warm-up
        return statistics.median(vals) if vals else None

    @property
    def train_time(self) -> float | None:
        return self.steps[-1].get("time") if self.steps else None

    @property
    def last_step(self) -> int:
        return self.steps[-1]["step"] if self.steps else 0


def _finite(x) -> bool:
    return isinstance(x, (int, float)) and math.isfinite(x)


def _has_checkpoint(run_dir: Path) -> bool:
    ck = run_dir / "checkpoints"
    return ck.is_dir() and any(p.is_file() for p in ck.glob("*/manifest.json"))


def gather(run_dir: str | Path) -> Facts:
    """Read a run folder. Raises ScratchLMError (one line) when it is missing or broken."""
    run_dir = Path(run_dir)
    if not run_dir.exists():
        raise ScratchLMError(f"{run_dir} does not exist; train a run first: scratchlm train --out {run_dir}")
    if not run_dir.is_dir():
        raise ScratchLMError(f"{run_dir} is not a folder; give a run folder (the --out of scratchlm train)")
    cfg_path = run_dir / "config.json"
    try:
        config = json.loads(cfg_path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ScratchLMError(f"{run_dir} has no config.json: not a run folder "
                             "(scratchlm train --out DIR makes one)") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ScratchLMError(f"{cfg_path} is corrupt ({e.__class__.__name__}); the run folder is broken") from None
    if not isinstance(config, dict) or not isinstance(config.get("model"), dict):
        raise ScratchLMError(f"{cfg_path} does not hold a scratchlm run config; the run folder is broken")
    metrics = drop_rewound(read_jsonl(run_dir / "metrics.jsonl"))
    raw = read_jsonl(run_dir / "metrics.jsonl")
    facts = Facts(
        run_dir=run_dir,
        name=run_dir.resolve().name,
        date=_run_date(run_dir),
        config=config,
        steps=[r for r in metrics if "loss" in r],
        evals=[r for r in metrics if r.get("event") == "eval"],
        warnings=[r.get("message", "") for r in raw if r.get("event") == "warning"],
    )
    if _has_checkpoint(run_dir):
        facts.run = load_run(run_dir)  # a corrupt checkpoint or tokenizer is an error, said in one line
    else:
        facts.missing_model = (f"{run_dir} holds no complete checkpoint yet (training stopped before its first one); "
                               f"continue it with: scratchlm train --resume {run_dir}")
    return facts


def _run_date(run_dir: Path) -> str:
    """When the run was trained: the newest of its records, as a calendar date."""
    times = [p.stat().st_mtime for p in (run_dir / "metrics.jsonl", run_dir / "config.json") if p.exists()]
    return dt.datetime.fromtimestamp(max(times)).strftime("%d %B %Y").lstrip("0")


# --- the model ------------------------------------------------------------------------

PART_NAMES = {
    "wte": "token embedding (also the output layer: tied)",
    "wpe": "position embedding",
    "attn": "attention (Q, K, V and output projections)",
    "mlp": "feed-forward network (MLP)",
    "ln_f": "final LayerNorm",
    "lm_head": "output layer (untied)",
}


def parameter_table(model) -> list[tuple[str, int, int]]:
    """(part, parameters per block or in total, count) for the model, grouped by what each
    part does; the tied output layer is counted once, with the token embedding."""
    parts: dict[str, list[int]] = {}
    n_layer = 0
    for name, p in model.named_parameters():  # a tied weight appears once
        bits = name.split(".")
        if "h" in bits:  # transformer.h.<i>.<part>...
            i = bits.index("h")
            n_layer = max(n_layer, int(bits[i + 1]) + 1)
            part = bits[i + 2]
            part = "norms in the blocks" if part.startswith(("ln", "norm")) else part
            key = ("block", part)
        else:
            key = ("top", bits[-2] if bits[-1] in ("weight", "bias") and len(bits) > 1 else bits[-1])
        parts.setdefault(key, [0])[0] += p.numel()
    rows = []
    for (where, part), (n,) in parts.items():
        label = PART_NAMES.get(part, part)
        if where == "block":
            rows.append((f"{label}, per block × {n_layer}", n // max(n_layer, 1), n))
        else:
            rows.append((label, n, n))
    return rows


def source_of(obj) -> str:
    """The source code of a class or function as installed (what actually ran)."""
    try:
        return textwrap.dedent(inspect.getsource(obj))
    except (OSError, TypeError):
        return f"# source of {getattr(obj, '__qualname__', obj)} is not available"


def class_excerpt(cls, methods: tuple[str, ...]) -> str:
    """The class line, its docstring and the named methods, as installed."""
    bases = ", ".join(("nn." if b.__module__.startswith("torch.nn") else "") + b.__name__ for b in cls.__bases__)
    head = f"class {cls.__name__}({bases}):"
    doc = f'    """{inspect.getdoc(cls)}"""\n' if cls.__doc__ else ""
    parts = []
    for name in methods:
        fn = cls.__dict__.get(name)
        if fn is None:
            continue
        try:
            parts.append(inspect.getsource(fn).rstrip())
        except (OSError, TypeError):
            continue
    return f"{head}\n{doc}    ...\n\n" + "\n\n".join(parts) + "\n" if parts else source_of(cls)


def token_pieces(tok, text: str) -> list[str]:
    """How `text` splits into tokens, each shown as the text of its bytes (a space as ␣)."""
    ids = tok.encode(text)
    out = []
    for i in ids:
        if hasattr(tok, "token_bytes"):
            piece = tok.token_bytes(i).decode("utf-8", errors="backslashreplace")  # part of a character: \xc3
        else:
            piece = tok.decode([i])
        out.append(piece.replace(" ", "␣").replace("\n", "↵"))
    return out
