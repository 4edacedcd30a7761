"""The run folder: known by its marker, locked by the process writing to it, replaced only when it is ours.

    runs/NAME/
        scratchlm-run.json  the marker ({"format": "scratchlm-run", "version": 1}), written first
        run.lock            flock()ed by the process training in this folder, for its whole life
        config.json tokenizer.json split.json metrics.jsonl checkpoints/ samples.txt ...

Three rules keep a run from harming what is not its own:
  - `--overwrite` replaces only a folder with the marker (or an older run folder: config.json,
    tokenizer.json and checkpoints/), and only when everything in it is something a run
    writes (RUN_ENTRIES); any other file makes it refuse, naming the file.
  - One writer at a time: the lock is an flock on run.lock, which the operating system
    releases on any exit, a crash included (no stale lock to clean up). A second process
    is refused with the holder's pid, host and start time.
  - A refused start (a corpus too short, a model too big) removes what it wrote, so the
    same --out works next time.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import socket
import sys
import time
from pathlib import Path

from .. import __version__
from ..errors import ScratchLMError

MARKER, LOCK = "scratchlm-run.json", "run.lock"
FORMAT, VERSION = "scratchlm-run", 1
# What runs write into their folder: the core, then the extras that attach to training
# (the live doctor, attention snapshots and figures, TensorBoard). An extra that writes a new
# name into run folders adds it here, or `--overwrite` refuses to remove it.
RUN_ENTRIES = {MARKER, LOCK, "config.json", "tokenizer.json", "split.json", "metrics.jsonl", "checkpoints",
               "samples.txt", "probes.jsonl", "diagnostics.jsonl", "attention", "figures", "tensorboard", "report",
               "chat_template.json", "finetune.json", "guide.pdf", "guide.html", "guide.typ", "tokenizer-compare",
               "eval_questions.json"}
LEGACY = ("config.json", "tokenizer.json", "checkpoints")  # a run folder written before the marker existed


def is_run_folder(path: Path) -> bool:
    return (path / MARKER).is_file() or all((path / name).exists() for name in LEGACY)


def _os_error(path: Path, e: OSError) -> ScratchLMError:
    return ScratchLMError(f"cannot write the run folder {path} ({e.strerror or e}); choose another --out")


class RunFolder:
    """One process's hold on a run folder: `claim` it (new or resumed), `release` it at the end,
    `abandon` what a refused start wrote."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self._fd: int | None = None
        self._new = False  # claimed for a new run (only then may `abandon` remove anything)
        self._before: set[str] | None = None  # entries there before this process wrote (None: it made the folder)

    def claim(self, resume: bool, overwrite: bool = False) -> list[str]:
        """Lock the folder and make it ready for a new run, or check it holds a run to resume.
        Returns warnings (a repaired metrics.jsonl)."""
        p = self.path
        for parent in [p, *p.parents]:
            if parent.exists() and not parent.is_dir():
                raise ScratchLMError(f"--out {p}: {parent} is a file, not a folder; choose another --out")
        if resume:
            if (p / LOCK).is_file():
                self._lock()  # first: a run still starting has no config.json yet, but holds the lock
            if not (p / "config.json").is_file():
                raise ScratchLMError(f"nothing to resume in {p} (no config.json)")
            if self._fd is None:
                self._lock()
            self._write_marker()
            return repair_jsonl(p / "metrics.jsonl")
        if p.is_dir() and any(p.iterdir()):
            self._check_new(overwrite)
        try:
            existed = p.is_dir()
            p.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise _os_error(p, e) from None
        self._lock()
        if overwrite and is_run_folder(p):
            for entry in p.iterdir():
                if entry.name != LOCK:
                    shutil.rmtree(entry) if entry.is_dir() and not entry.is_symlink() else entry.unlink()
        self._new = True
        self._before = {e.name for e in p.iterdir()} - {LOCK} if existed else None
        self._write_marker()
        return []

    def _check_new(self, overwrite: bool) -> None:
        p = self.path
        names = sorted(e.name for e in p.iterdir())
        if not is_run_folder(p):
            ours = [n for n in names if n in RUN_ENTRIES]
            if ours:  # e.g. someone's config.json: never written over, never removed
                raise ScratchLMError(f"{p} holds {', '.join(ours)} but is not a scratchlm run folder (no {MARKER}); "
                                     "choose another --out")
            return  # an ordinary folder: the run's files go beside what is there
        if not overwrite:
            raise ScratchLMError(f"{p} already holds a run; use --resume {p} to continue it, "
                                 "--overwrite to replace it, or another --out")
        others = [n for n in names if n not in RUN_ENTRIES]
        if others:
            raise ScratchLMError(f"--overwrite: {p} also holds {', '.join(others[:3])}"
                                 f"{' ...' if len(others) > 3 else ''}, which a run does not write; move "
                                 f"{'it' if len(others) == 1 else 'them'} away or choose another --out")

    def _lock(self) -> None:
        path = self.path / LOCK
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as e:
            raise _os_error(self.path, e) from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            holder = os.read(fd, 1000).decode("utf-8", "replace").strip() or "another process"
            os.close(fd)
            raise ScratchLMError(f"{self.path} is in use by {holder}; wait for it to finish or stop it "
                                 "(one process trains in a run folder at a time)") from None
        os.ftruncate(fd, 0)
        os.write(fd, f"pid {os.getpid()} on {socket.gethostname()}, since {time.strftime('%Y-%m-%d %H:%M:%S')} "
                     f"({' '.join(['scratchlm', *sys.argv[1:]])[:200]})\n".encode())
        self._fd = fd

    def _write_marker(self) -> None:
        marker = self.path / MARKER
        if marker.is_file():
            return
        tmp = self.path / f".{MARKER}.{os.getpid()}.tmp"
        try:
            tmp.write_text(json.dumps({"format": FORMAT, "version": VERSION, "written_by": f"scratchlm {__version__}"}))
            os.replace(tmp, marker)
        except OSError as e:
            tmp.unlink(missing_ok=True)
            raise _os_error(self.path, e) from None

    def abandon(self) -> None:
        """Remove what this process wrote (a refused start): the whole folder if it made it."""
        if self._fd is None or not self._new:
            return
        if self._before is None:
            shutil.rmtree(self.path, ignore_errors=True)
        else:
            for entry in self.path.iterdir():
                if entry.name not in self._before and entry.name in RUN_ENTRIES:
                    shutil.rmtree(entry, ignore_errors=True) if entry.is_dir() else entry.unlink(missing_ok=True)

    def release(self) -> None:
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None


def repair_jsonl(path: Path) -> list[str]:
    """Cut a torn last line (a crash or a full disk in the middle of an append), so the
    next record starts on a line of its own; returns a warning when it did."""
    if not path.is_file():
        return []
    with open(path, "rb+") as f:
        data = f.read()
        if not data or data.endswith(b"\n"):
            return []
        keep = data.rfind(b"\n") + 1
        f.truncate(keep)
    return [f"{path}: removed a torn last line ({len(data) - keep} bytes, written when the run stopped mid-write)"]
