"""Attention snapshots: a probe's attention maps and per-head metrics at one training step, on disk.

One file per snapshot, RUN/attention/step_NNNNNNN.npz (NumPy's zip of arrays; read with
allow_pickle=False, so a file from someone else cannot run code):

    step          ()              the optimizer step (0 = before training)
    val_loss      ()              the validation loss measured at that step (NaN at step 0)
    ids           (T,)   int32    the probe prompt's token ids
    tokens        (T,)   str      the same tokens as text, for axis labels
    maps          (L, H, T, T)    float16 attention weights of every layer and head on the probe
    induction_ids (2n,)  int32    the repeated random sequence the induction score is measured on
    entropy, prev_token, first_token, induction   (L, H) float32: see metrics.py

At the defaults (24 probe tokens) a snapshot of a 4-layer, 4-head model (the tiny and
default presets) is about 12 KB: compressed, float16.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import ScratchLMError
from .capture import attention_maps
from .metrics import METRICS, head_metrics

FOLDER = "attention"
_NAME = re.compile(r"step_(\d+)\.npz$")


def measure(model, probe_ids, induction_ids) -> dict[str, np.ndarray]:
    """maps (L, H, T, T) on the probe and the four metrics (L, H): two short forward passes."""
    maps = attention_maps(model, probe_ids)
    ind = attention_maps(model, induction_ids)
    out = head_metrics(maps, ind, len(induction_ids) // 2)
    out["maps"] = maps
    return out


def snapshot_path(run_dir: str | Path, step: int) -> Path:
    return Path(run_dir) / FOLDER / f"step_{step:07d}.npz"


def save_snapshot(run_dir: str | Path, step: int, measured: dict, probe_ids, tokens: list[str], induction_ids,
                  val_loss: float = float("nan")) -> Path:
    """Write one snapshot (atomically: a half-written file never has the final name)."""
    path = snapshot_path(run_dir, step)
    path.parent.mkdir(parents=True, exist_ok=True)
    arrays = {
        "step": np.array(step, dtype=np.int64), "val_loss": np.array(val_loss, dtype=np.float32),
        "ids": np.asarray(probe_ids, dtype=np.int32), "tokens": np.array(tokens, dtype=str),
        "maps": np.asarray(measured["maps"], dtype=np.float16),
        "induction_ids": np.asarray(induction_ids, dtype=np.int32),
        **{k: np.asarray(measured[k], dtype=np.float32) for k in METRICS},
    }
    tmp = path.with_suffix(".tmp.npz")
    np.savez_compressed(tmp, **arrays)
    os.replace(tmp, path)
    return path


def snapshot_files(run_dir: str | Path) -> list[tuple[int, Path]]:
    """(step, file) of every snapshot in the run, by step."""
    folder = Path(run_dir) / FOLDER
    found = [(int(m.group(1)), p) for p in folder.glob("step_*.npz") if (m := _NAME.search(p.name))]
    return sorted(found)


def drop_after(run_dir: str | Path, step: int) -> int:
    """Delete snapshots of steps after `step` (training went back there: a resume or a rollback)."""
    n = 0
    for s, p in snapshot_files(run_dir):
        if s > step:
            p.unlink(missing_ok=True)
            n += 1
    return n


@dataclass
class Snapshots:
    """Every snapshot of a run, stacked: S snapshots, L layers, H heads, T probe tokens."""

    steps: np.ndarray  # (S,)
    val_loss: np.ndarray  # (S,)
    ids: np.ndarray  # (T,) the probe's token ids
    tokens: list[str]  # (T,) the same as text
    maps: np.ndarray  # (S, L, H, T, T) float32
    metrics: dict[str, np.ndarray]  # name -> (S, L, H)
    skipped: int = 0  # snapshots left out because their probe differs from the newest one's

    @property
    def n_layer(self) -> int:
        return self.maps.shape[1]

    @property
    def n_head(self) -> int:
        return self.maps.shape[2]


def load_snapshot(path: str | Path) -> dict[str, np.ndarray]:
    try:
        with np.load(path, allow_pickle=False) as f:
            return {k: f[k] for k in f.files}
    except (OSError, ValueError) as e:
        raise ScratchLMError(f"{path} is not a readable attention snapshot ({e})") from None


def load_snapshots(run_dir: str | Path) -> Snapshots:
    """All snapshots of a run. Snapshots recorded with a different probe than the newest one
    (the config changed on a resume) cannot be compared with it and are left out (counted in `skipped`)."""
    files = snapshot_files(run_dir)
    if not files:
        raise ScratchLMError(f"{run_dir} has no attention snapshots ({FOLDER}/step_*.npz): they are recorded during "
                             "`scratchlm train` with viz.snapshots on (the default); `scratchlm viz attention RUN` "
                             "draws the trained model alone")
    snaps = [load_snapshot(p) for _, p in files]
    ref = snaps[-1]
    keep = [s for s in snaps if s["maps"].shape == ref["maps"].shape and np.array_equal(s["ids"], ref["ids"])]
    return Snapshots(
        steps=np.array([int(s["step"]) for s in keep]), val_loss=np.array([float(s["val_loss"]) for s in keep]),
        ids=ref["ids"], tokens=[str(t) for t in ref["tokens"]],
        maps=np.stack([s["maps"].astype(np.float32) for s in keep]),
        metrics={k: np.stack([s[k] for s in keep]) for k in METRICS}, skipped=len(snaps) - len(keep),
    )
