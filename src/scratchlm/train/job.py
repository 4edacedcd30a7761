"""The training job: claim the run folder, prepare the data, build the trainer, train; return the summary.

It prints nothing. The start-up lines (what is trained, and why) go to a `say` callback,
everything during training goes out as events (train/events.py), and the command
(`scratchlm train`, cli/train.py) prints the summary and samples from the model afterwards.
"""

from __future__ import annotations

from pathlib import Path

from ..config import RunConfig, build_config
from ..errors import ScratchLMError
from ..model import GPT
from ..tokenizer import load_tokenizer, tokenizer_hash
from . import checkpoint as ckpt
from .events import Events
from .loop import Trainer
from .memory import check_fits
from .prepare import prepare, write_run_files
from .run_folder import RunFolder
from .runtime import rank0_first, set_threads, setup_runtime, teardown


def _silent(line: str) -> None:
    pass


class Job:
    """One job's runtime and run folder, as a context manager (used by training and fine-tuning).

    On the way out the folder's lock is released and the process group torn down; a start that
    fails before `started` is set (a refused config, a bad file) leaves nothing behind that would
    block the same --out. `say` is the start-up printer: silent on ranks other than 0."""

    def __init__(self, train_cfg, out: str | Path, say=None):
        self.rt = setup_runtime(train_cfg)
        self.folder = RunFolder(out)
        self.say = say if (say and self.rt.master) else _silent
        self.started = False

    def __enter__(self) -> "Job":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        try:
            if exc_type is not None and self.rt.master and not self.started:
                self.folder.abandon()
        finally:
            self.folder.release()
            teardown(self.rt)

    def claim_first(self, prepare_fn, resume: bool, overwrite: bool):
        """(prepare_fn(), warnings): rank 0 claims the folder and prepares first (filling caches);
        the other ranks then only read."""
        def start():
            warnings = self.folder.claim(resume, overwrite) if self.rt.master else []
            return prepare_fn(), warnings

        return rank0_first(start, self.rt)


def resume_latest(trainer: Trainer, run_dir: Path, warnings: list[str]) -> Path:
    """Load the newest complete checkpoint of run_dir into the trainer; its folder."""
    latest = ckpt.latest_good_checkpoint(run_dir / "checkpoints", warn=warnings.append)
    if latest is None:
        raise ScratchLMError(f"{run_dir} has no complete checkpoint to resume from")
    trainer.load(latest)
    return latest


def announce(trainer: Trainer, job: Job, warnings: list[str], resumed: Path | None) -> None:
    """After the run's files are written: the claim's warnings, and a resume's line in metrics.jsonl
    (it may hold steps past this checkpoint, from a crash: they are redone) and on screen."""
    job.started = True
    for message in warnings if job.rt.master else []:
        trainer.warn(message)
    if resumed is not None:
        trainer.log({"event": "resume", "step": trainer.step, "checkpoint": resumed.name})
        job.say(f"resuming from {resumed} (step {trainer.step})")


def run_training(cfg: RunConfig | None, out: str | Path, *, resume: bool = False, overwrite: bool = False,
                 events: Events | None = None, say=None, verify: bool = False,
                 init_from: str | Path | None = None) -> dict:
    """The whole job; returns `Trainer.fit`'s summary plus "run_dir".

    `say`: called with each start-up line (None: silent). `events`: subscribers to the loop's
    events, e.g. a progress bar or the doctor's live detectors; the core imports none of them.
    `verify`: check the token cache's checksums. `init_from`: a run or checkpoint folder whose
    weights start this new run (its model shape and tokenizer are used; the optimizer starts fresh).
    """
    if init_from is not None and (resume or cfg is None):
        raise ScratchLMError("--init-from starts a new run from a run's weights; it cannot be combined with --resume")
    events = events or Events()
    with Job(cfg.train if cfg is not None else RunConfig().train, out, say) as job:
        set_threads(cfg.train.threads if cfg is not None else 0)
        init = _init_weights(init_from, cfg) if init_from is not None else None
        p, warnings = job.claim_first(lambda: prepare(cfg, out, resume=resume, say=job.say, master=job.rt.master,
                                                      verify=verify, tokenizer=init and init["tokenizer"]),
                                      resume, overwrite)
        check_fits(p.cfg, job.rt.device, job.rt.world)  # a model or batch too big is refused before allocating
        model = None
        if init is not None:
            model = GPT(p.cfg.model)
            ckpt.load_model_weights(model, init["weights"], str(init["checkpoint"]))
        trainer = Trainer(p.cfg, p.run_dir, p.tok, p.tok_hash, p.data, job.rt, events=events, model=model)
        latest = resume_latest(trainer, p.run_dir, warnings) if resume else None
        if job.rt.master:  # accepted: write the run's files (a resume records its new budget)
            write_run_files(p, with_tokenizer=not resume)
        announce(trainer, job, warnings, latest)
        if init is not None:
            job.say(f"weights    from {init['checkpoint']}")
        for line in p.notes + trainer.describe():
            job.say(line)
        return {**trainer.fit(), "run_dir": str(p.run_dir)}


def _init_weights(init_from: str | Path, cfg: RunConfig) -> dict:
    """The weights, tokenizer and model shape of a run or checkpoint folder, to start a new run from."""
    folder, run_dir = ckpt.find_checkpoint(init_from)
    state, weights, _ = ckpt.load_checkpoint(folder, with_trainer=False)
    tok = load_tokenizer(run_dir / "tokenizer.json")
    if tokenizer_hash(tok) != state.get("tokenizer_hash"):
        raise ScratchLMError(f"{run_dir / 'tokenizer.json'} is not the tokenizer {folder} was trained with")
    cfg.model = build_config(base=state["config"]).model
    return {"checkpoint": folder, "weights": weights, "tokenizer": tok}
