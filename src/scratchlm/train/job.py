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
    rt = setup_runtime(cfg.train if cfg is not None else RunConfig().train)
    say = say if (say and rt.master) else _silent
    folder = RunFolder(out)
    started = False
    try:
        set_threads(cfg.train.threads if cfg is not None else 0)
        init = _init_weights(init_from, cfg) if init_from is not None else None

        def start():  # rank 0 first: it fills the caches, the other ranks then only read them
            warnings = folder.claim(resume, overwrite) if rt.master else []
            return prepare(cfg, out, resume=resume, say=say, master=rt.master, verify=verify,
                           tokenizer=init and init["tokenizer"]), warnings

        p, warnings = rank0_first(start, rt)
        check_fits(p.cfg, rt.device, rt.world)  # a model or batch too big is refused before allocating
        model = None
        if init is not None:
            model = GPT(p.cfg.model)
            ckpt.load_model_weights(model, init["weights"], str(init["checkpoint"]))
        trainer = Trainer(p.cfg, p.run_dir, p.tok, p.tok_hash, p.data, rt, events=events, model=model)
        if resume:
            latest = ckpt.latest_good_checkpoint(p.run_dir / "checkpoints", warn=warnings.append)
            if latest is None:
                raise ScratchLMError(f"{p.run_dir} has no complete checkpoint to resume from")
            trainer.load(latest)
        if rt.master:  # accepted: write the run's files (a resume records its new budget)
            write_run_files(p, with_tokenizer=not resume)
        started = True
        for message in warnings if rt.master else []:
            trainer.warn(message)
        if resume:  # metrics.jsonl may hold steps past this checkpoint (from a crash): they are redone
            trainer.log({"event": "resume", "step": trainer.step, "checkpoint": latest.name})
            say(f"resuming from {latest} (step {trainer.step})")
        if init is not None:
            say(f"weights    from {init['checkpoint']}")
        for line in p.notes + trainer.describe():
            say(line)
        return {**trainer.fit(), "run_dir": str(p.run_dir)}
    except BaseException:
        if rt.master and not started:
            folder.abandon()  # a refused start leaves nothing behind that would block the same --out
        raise
    finally:
        folder.release()
        teardown(rt)


def _init_weights(init_from: str | Path, cfg: RunConfig) -> dict:
    """The weights, tokenizer and model shape of a run or checkpoint folder, to start a new run from."""
    folder, run_dir = ckpt.find_checkpoint(init_from)
    state, weights, _ = ckpt.load_checkpoint(folder, with_trainer=False)
    tok = load_tokenizer(run_dir / "tokenizer.json")
    if tokenizer_hash(tok) != state.get("tokenizer_hash"):
        raise ScratchLMError(f"{run_dir / 'tokenizer.json'} is not the tokenizer {folder} was trained with")
    cfg.model = build_config(base=state["config"]).model
    return {"checkpoint": folder, "weights": weights, "tokenizer": tok}
