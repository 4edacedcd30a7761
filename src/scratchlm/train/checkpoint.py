"""Crash-safe checkpoints: a folder per checkpoint, written atomically, verified on load.

    checkpoints/step_000400/
        model.safetensors   the weights (safetensors: plain tensors, no code runs on load)
        trainer.pt          optimizer state, torch RNG states and the fp16 loss scaler
                            (loaded with weights_only=True)
        state.json          step, config, tokenizer hash, Python/NumPy RNG, metrics, code version
        manifest.json       sha256 of every file above; written last, so a folder without
                            a valid manifest is known to be incomplete

A checkpoint is written to a hidden temporary folder, every file fsynced, then
renamed into place: a crash or a full disk mid-write leaves the previous
checkpoint untouched. `best/` and `final/` are kept besides the last `keep_last`.

Everything that can go wrong on load (a truncated or corrupt file, a checkpoint of
another model shape or tokenizer, a file that would run code if unpickled) ends in
one `ScratchLMError` line saying which and what to do, never a torch traceback.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import pickle
import random
import shutil
from pathlib import Path

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from .. import __version__
from ..errors import ScratchLMError

MODEL_FILE, TRAINER_FILE, STATE_FILE, MANIFEST = "model.safetensors", "trainer.pt", "state.json", "manifest.json"


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def plain_state_dict(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """Weights without wrapper prefixes (`module.` from DDP, `_orig_mod.` from compile),
    tied weights stored once, contiguous: so any run can load any other's checkpoint."""
    sd = {}
    for k, v in model.state_dict().items():
        k = k.replace("_orig_mod.", "").replace("module.", "")
        sd[k] = v.detach().contiguous()
    head, wte = sd.get("lm_head.weight"), sd.get("transformer.wte.weight")
    if head is not None and wte is not None and head.data_ptr() == wte.data_ptr():
        del sd["lm_head.weight"]  # tied to transformer.wte.weight (model.tie_embeddings): stored once
    return sd


def rng_state() -> tuple[dict, dict]:
    """(JSON-able Python/NumPy RNG state, torch RNG tensors)."""
    tensors = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        tensors["cuda"] = torch.cuda.get_rng_state_all()
    py = random.getstate()
    npst = np.random.get_state(legacy=False)  # MT19937: {'state': {'key': uint32 array, 'pos': int}, ...}
    npst = dict(npst, state={"key": npst["state"]["key"].tolist(), "pos": int(npst["state"]["pos"])})
    return {"python": [py[0], list(py[1]), py[2]], "numpy": npst}, tensors


def set_rng_state(js: dict, tensors: dict) -> None:
    py = js["python"]
    random.setstate((py[0], tuple(py[1]), py[2]))
    npst = js["numpy"]
    key = np.asarray(npst["state"]["key"], dtype=np.uint32)
    np.random.set_state(dict(npst, state={"key": key, "pos": npst["state"]["pos"]}))
    torch.set_rng_state(tensors["torch"])
    if "cuda" in tensors and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(tensors["cuda"])


# What a write error looks like when the disk is full: an OSError with its errno, or
# (safetensors, torch.save) the OS error in words inside another exception's message.
WRITE_ERRORS = (OSError, RuntimeError, SafetensorError)
_FULL_WORDS = ("No space left", "StorageFull", "Disk quota exceeded", "QuotaExceeded")


def _disk_full(e: BaseException, where: Path) -> bool:
    """Did this write fail because the disk (or quota) is full? torch.save reports a
    full disk as a RuntimeError from its zip writer, so also look at the free space."""
    if isinstance(e, OSError) and e.errno in (errno.ENOSPC, errno.EDQUOT):
        return True
    if isinstance(e, SafetensorError) and any(w in str(e) for w in _FULL_WORDS):
        return True
    if isinstance(e, WRITE_ERRORS):
        try:
            return shutil.disk_usage(where).free < (64 << 20)
        except OSError:
            return False
    return False


def save_checkpoint(folder: Path, model_sd: dict, optimizer_sd: dict | None, state: dict,
                    scaler: dict | None = None) -> Path:
    """Write a checkpoint folder atomically; returns its path. `scaler`: the fp16
    GradScaler's state (its loss scale), if one is in use.
    A full disk gives a ScratchLMError; the previous checkpoints are left as they were."""
    folder = Path(folder)
    parent = folder.parent
    parent.mkdir(parents=True, exist_ok=True)
    try:
        return _save(folder, parent, model_sd, optimizer_sd, state, scaler)
    except WRITE_ERRORS as e:
        if not _disk_full(e, parent):
            raise
        kept = [p.name for p in step_checkpoints(parent)] + [n for n in ("best", "final") if (parent / n).is_dir()]
        raise ScratchLMError(f"disk full while writing checkpoint {folder} ({str(e).splitlines()[0]}); "
                             "nothing was replaced "
                             f"(kept: {', '.join(kept) or 'none'}). Free some space, then resume with: "
                             f"scratchlm train --resume {parent.parent}") from None


def _save(folder: Path, parent: Path, model_sd: dict, optimizer_sd: dict | None, state: dict,
          scaler: dict | None) -> Path:
    tmp = parent / f".tmp-{folder.name}-{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir()
    try:
        save_file(model_sd, str(tmp / MODEL_FILE))
        py_np, rng_tensors = rng_state()
        extra = {"scaler": scaler} if scaler else {}
        torch.save({"optimizer": optimizer_sd, "rng": rng_tensors, **extra}, tmp / TRAINER_FILE)
        state = dict(state, rng=py_np, code_version=__version__)
        (tmp / STATE_FILE).write_text(json.dumps(state, indent=1))
        files = [MODEL_FILE, TRAINER_FILE, STATE_FILE]
        for name in files:
            _fsync(tmp / name)
        (tmp / MANIFEST).write_text(json.dumps({"files": {n: _sha256(tmp / n) for n in files}}, indent=1))
        _fsync(tmp / MANIFEST)
        _fsync(tmp)
        old = None
        if folder.exists():  # replacing e.g. best/: move the old one aside first
            # (a folder cannot be renamed over a non-empty one; a crash between these two
            # renames leaves .old-NAME, which `recover` puts back)
            old = parent / f".old-{folder.name}-{os.getpid()}"
            os.replace(folder, old)
        os.replace(tmp, folder)
        _fsync(parent)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return folder


def verify(folder: Path) -> dict:
    """Check a checkpoint folder's manifest and checksums; returns its state.json."""
    folder = Path(folder)
    if not (folder / MANIFEST).exists():
        raise ScratchLMError(f"checkpoint {folder} is incomplete (no {MANIFEST}); it was interrupted while being "
                             "written — use an earlier one")
    try:
        files = json.loads((folder / MANIFEST).read_text())["files"]
        if not isinstance(files, dict):
            raise TypeError("files is not a mapping")
        missing = [n for n in (MODEL_FILE, TRAINER_FILE, STATE_FILE) if n not in files]
    except (json.JSONDecodeError, KeyError, TypeError, UnicodeDecodeError):
        raise ScratchLMError(f"checkpoint {folder} has a corrupt {MANIFEST}; use an earlier checkpoint") from None
    if missing:  # a manifest must vouch for every file a checkpoint needs
        raise ScratchLMError(f"checkpoint {folder} is incomplete ({MANIFEST} does not list {missing[0]}); "
                             "use an earlier checkpoint")
    for name, digest in files.items():
        p = folder / name
        if not p.exists():
            raise ScratchLMError(f"checkpoint {folder} is missing {name}; use an earlier checkpoint")
        if _sha256(p) != digest:
            raise ScratchLMError(f"checkpoint {folder} is corrupt ({name} fails its checksum); "
                                 "use an earlier checkpoint")
    return json.loads((folder / STATE_FILE).read_text())


def load_checkpoint(folder: Path, with_trainer: bool = True) -> tuple[dict, dict, dict | None]:
    """(state, model state dict, trainer state or None) after verifying checksums.
    Nothing is unpickled: safetensors for weights, weights_only=True for the rest."""
    folder = Path(folder)
    state = verify(folder)
    try:
        model_sd = load_file(str(folder / MODEL_FILE))
    except (SafetensorError, RuntimeError, OSError) as e:
        raise ScratchLMError(f"checkpoint {folder}: {MODEL_FILE} cannot be read ({str(e).splitlines()[0]}); "
                             "use an earlier checkpoint") from None
    bad = next((k for k, v in model_sd.items() if v.is_floating_point() and not torch.isfinite(v).all()), None)
    if bad is not None:  # e.g. written by a version that did not check: no use for sampling or training on
        raise ScratchLMError(f"checkpoint {folder} holds NaN or Inf weights ({bad}); use an earlier checkpoint")
    trainer = None
    if with_trainer:
        try:
            # weights_only=True: only tensors and plain containers; a pickled object that
            # would run code on load is refused instead of executed
            trainer = torch.load(folder / TRAINER_FILE, weights_only=True, map_location="cpu")
        except pickle.UnpicklingError:
            raise ScratchLMError(f"checkpoint {folder}: {TRAINER_FILE} holds objects other than tensors "
                                 "(it could run code "
                                 "if loaded); refusing it. Use a checkpoint written by scratchlm") from None
        except (RuntimeError, EOFError, OSError) as e:
            raise ScratchLMError(f"checkpoint {folder}: {TRAINER_FILE} cannot be read ({str(e).splitlines()[0]}); "
                                 "use an earlier checkpoint") from None
    return state, model_sd, trainer


def load_model_weights(model: torch.nn.Module, model_sd: dict, where: str) -> None:
    """Load weights, turning shape mismatches into one clear line."""
    own = plain_state_dict(model)
    missing = sorted(set(own) - set(model_sd))
    unexpected = sorted(set(model_sd) - set(own))
    wrong = [k for k in own if k in model_sd and own[k].shape != model_sd[k].shape]
    if missing or unexpected or wrong:
        w = wrong[0] if wrong else None
        detail = (f"{w}: checkpoint {tuple(model_sd[w].shape)} vs model {tuple(own[w].shape)}" if wrong
                  else f"missing {missing[:2]}" if missing else f"unexpected {unexpected[:2]}")
        raise ScratchLMError(f"checkpoint {where} is for a different model shape ({detail}); "
                             "use the same --model.* settings as the run that wrote it")
    model.load_state_dict(model_sd, strict=False)  # lm_head.weight is tied to wte


def step_checkpoints(ckpt_dir: Path) -> list[Path]:
    return sorted(p for p in Path(ckpt_dir).glob("step_*") if p.is_dir())


def recover(ckpt_dir: Path) -> None:
    """Put back a checkpoint that was moved aside (.old-NAME-PID) when a crash hit between
    the two renames that replace it, and drop leftover temporary folders (.tmp-NAME-PID)
    of writers that are gone (a run folder has one writer: the process holding its lock)."""
    ckpt_dir = Path(ckpt_dir)
    if not ckpt_dir.is_dir():
        return
    mine = f"-{os.getpid()}"
    for old in ckpt_dir.glob(".old-*"):
        name = old.name[len(".old-"):].rsplit("-", 1)[0]
        if not (ckpt_dir / name).exists():
            os.replace(old, ckpt_dir / name)
        elif not old.name.endswith(mine):
            shutil.rmtree(old, ignore_errors=True)
    for tmp in ckpt_dir.glob(".tmp-*"):
        if not tmp.name.endswith(mine):
            shutil.rmtree(tmp, ignore_errors=True)


def latest_good_checkpoint(ckpt_dir: Path, warn=print, healthy_only: bool = False) -> Path | None:
    """Newest checkpoint (step_*, final) whose checksums verify; corrupt ones are skipped with a
    warning. `healthy_only`: only those written outside a bad streak (the guard's rollback targets)."""
    ckpt_dir = Path(ckpt_dir)
    recover(ckpt_dir)
    candidates = step_checkpoints(ckpt_dir)
    if (ckpt_dir / "final").is_dir():
        candidates.append(ckpt_dir / "final")
    best_step, best = -1, None
    for p in candidates:
        try:
            st = verify(p)
        except ScratchLMError as e:
            warn(f"skipping {e}")
            continue
        if healthy_only and not st.get("guard", {}).get("healthy", True):
            continue
        if st["step"] > best_step:
            best_step, best = st["step"], p
    return best


def find_checkpoint(path: str | Path, warn=print) -> tuple[Path, Path]:
    """(checkpoint folder, run folder) for a checkpoint folder, or for a run folder: its best/
    when that verifies, else (with a warning) the newest good checkpoint, as `--resume` picks."""
    path = Path(path)
    if not path.exists():
        raise ScratchLMError(f"{path} does not exist")
    if (path / MANIFEST).exists() or (path / MODEL_FILE).exists():
        return path, path.parent.parent
    ckdir = path / "checkpoints"
    if not ckdir.is_dir():
        raise ScratchLMError(f"{path} is neither a run folder (no checkpoints/) nor a checkpoint folder")
    if (ckdir / "best").is_dir():
        try:
            verify(ckdir / "best")
            return ckdir / "best", path
        except ScratchLMError as e:
            warn(f"warning: {e}; using the newest intact checkpoint instead")
    latest = latest_good_checkpoint(ckdir, warn=warn)
    if latest is None:
        raise ScratchLMError(f"{path} holds no complete checkpoint yet")
    return latest, path


def prune(ckpt_dir: Path, keep_last: int) -> None:
    for p in step_checkpoints(ckpt_dir)[:-keep_last]:
        shutil.rmtree(p, ignore_errors=True)
    for p in Path(ckpt_dir).glob(".tmp-*"):  # leftovers of a crashed write
        if not p.name.endswith(f"-{os.getpid()}"):
            shutil.rmtree(p, ignore_errors=True)
