"""The fine-tuning job: a trained run and a JSONL file of conversations → a run folder that answers.

    1. load the base run (weights, tokenizer, config): `--init-from` a run folder or a checkpoint
    2. add the chat tokens to the tokenizer and grow the token embedding (and the head, which
       shares its matrix) by as many rows: old rows kept, new rows the mean of the old ones,
       so a new token starts as "an average token" instead of noise that would dominate the logits
    3. encode the conversations with the loss mask (data.py); hold some out for validation
    4. hand the grown model and the padded batches to the core `Trainer`: the time and step
       budgets, checkpoints and exact resume, the guard, bf16, accumulation, DDP, events and
       the doctor are the pretraining loop's own, not a second loop's

How fine-tuning differs from pretraining is in the defaults (`FINETUNE_DEFAULTS`): a short
warm-up (the weights are already good), the learning rate held and then cooled down to zero as
the budget runs out, evaluations every 100 steps, and a key shift over two positions in attention
(`model.key_shift`, `model.shift_taps`; added at zero when the base has none, learning at 10 × the
rate): the answers are copied from the prompt, and the shift lets a single layer find "what came
after these two tokens before". The MLPs are frozen (`train.freeze`): copying is attention's work,
and a step without their gradients is faster. Too many large steps wash out what pretraining learned
("catastrophic forgetting"); the held-out questions and `scratchlm sample` show both. The run
folder is an ordinary run folder (so `sample`, `doctor`, `eval` and `chat` read it) plus
chat_template.json (the template and the grown rows) and finetune.json (base run, data, counts).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..config import RunConfig, build_config, to_dict
from ..errors import ScratchLMError
from ..inference import load_run, resolve_checkpoint
from ..model import GPT, SHIFT_WEIGHTS
from ..tokenizer import load_tokenizer, save_tokenizer, tokenizer_hash
from ..train import checkpoint as ckpt
from ..train.events import Events
from ..train.job import Job, announce, resume_latest
from ..train.loop import Trainer
from ..train.prepare import check_resume_changes
from ..train.runtime import set_threads
from .data import (END, TEMPLATE_FILE, ChatBatches, Examples, chat_ids, make_examples, read_jsonl,
                   template_description, with_chat_tokens)

INFO_FILE = "finetune.json"
# Fine-tuning's own defaults, applied over the base run's config and under the user's overrides.
FINETUNE_DEFAULTS = {
    "train.optimizer": "muon",  # 9.6% against 0.0% for AdamW (lr 1e-3, cosine) on "who speaks first" after
    "train.lr": 3e-3,  # the same 300 s from the main job's model (docs/finetuning.md)
    "train.min_lr_ratio": 0.0,
    "train.warmup_steps": 20,
    "train.schedule": "wsd",
    "train.cooldown_frac": 0.4,
    "train.max_steps": 1000,
    "train.max_time": 0.0,
    "train.eval_interval": 100,
    "train.eval_tokens": 16384,
    "train.checkpoint_interval": 0,
    "train.batch_size": 16,  # 855 steps of 16 beat 498 of 32 in the same 10 minutes: 39.8% against 38.0%
    "train.micro_batch_size": 0,
    # every answer is copied from the passage; a key shift lets one attention layer copy, and the base
    # gets it at zero (grow_vocabulary): 63.6% against 17.6% on "who speaks first" (docs/finetuning.md)
    "model.key_shift": True,
    # the shift starts at zero and Adam moves it ~lr per step: at lr × 10 the copying heads form by step 200
    # instead of ~500, and the same 10 minutes give 80.7% / 49.6% against 69.3% / 39.8% (docs/finetuning.md)
    "train.key_shift_lr_ratio": 10.0,
    # two taps: a head matches the last two tokens, not one (after "OL IV", not after any "IV"). With the
    # built-in questions' random names: 89.2% / 53.0% against 83.5% / 30.7% with one tap (docs/finetuning.md)
    "model.shift_taps": 2,
    # only attention (and the embeddings, gains, shift) learn: no gradients for the MLPs' weights nor Muon steps
    # for them, so 1,178-1,325 steps fit in the 10 minutes instead of 806-845, and "which line comes next",
    # 4-7% with the MLPs trained, reached 48-55%: 67.7-72.5% over all kinds against 51-60% (docs/finetuning.md)
    "train.freeze": "mlp",
}


@dataclass
class Plan:
    """Everything the Trainer needs, built before the first step."""
    cfg: RunConfig
    run_dir: Path
    tok: object
    tok_hash: str
    model: GPT | None  # None when resuming: the checkpoint supplies the weights
    train: Examples
    val: Examples
    info: dict


def grow_vocabulary(model: GPT, cfg: RunConfig) -> GPT:
    """A copy of `model` with cfg.model.vocab_size rows in its embedding (and untied head): the old
    rows kept, each new row the mean of the old rows. A key shift the base lacks (`--model.key_shift
    true`) starts at zero, so the grown model computes what the base did."""
    old_sd = ckpt.plain_state_dict(model)
    grown = GPT(cfg.model)
    sd = {}
    for name, w in old_sd.items():
        if name in ("transformer.wte.weight", "lm_head.weight") and w.shape[0] < cfg.model.vocab_size:
            extra = w.float().mean(dim=0, keepdim=True).expand(cfg.model.vocab_size - w.shape[0], -1)
            w = torch.cat([w, extra.to(w.dtype)])
        sd[name] = w
    for name, p in grown.named_parameters():
        if name.endswith(SHIFT_WEIGHTS) and name not in sd:
            sd[name] = torch.zeros_like(p)
    ckpt.load_model_weights(grown, sd, "the grown base model")
    return grown


def split_conversations(convs: list, val_fraction: float) -> tuple[list, list]:
    """A fixed, shuffled hold-out (seeded, so a resume gets the same split)."""
    order = np.random.default_rng(0).permutation(len(convs))
    n_val = max(1, int(round(len(convs) * val_fraction))) if len(convs) > 1 else 0
    if n_val == 0:
        raise ScratchLMError("fine-tuning needs at least 2 conversations (one is held out for validation), "
                             "or a separate --val file")
    val_ix = set(order[:n_val].tolist())
    return [c for i, c in enumerate(convs) if i not in val_ix], [c for i, c in enumerate(convs) if i in val_ix]


def finetune_config(init_from: str | Path | None, overrides: list[str] | None, resume_dir: str | Path | None = None
                    ) -> RunConfig:
    """The run's config: the base run's (a new run) or the run's own (a resume), then fine-tuning's
    defaults (new runs), then the overrides. The model's shape cannot change."""
    if resume_dir is not None:
        path = Path(resume_dir) / "config.json"
        if not path.exists():
            raise ScratchLMError(f"nothing to resume in {resume_dir} (no config.json)")
        base = json.loads(path.read_text())
        cfg = build_config(base=base, overrides=overrides)
        check_resume_changes(cfg, build_config(base=base), Path(resume_dir))  # budgets may change, not the run
    else:
        folder, _ = resolve_checkpoint(init_from)
        base = ckpt.verify(folder)["config"]  # the checkpoint's config, without loading its weights yet
        with_defaults = to_dict(build_config(base=base, overrides=dict(FINETUNE_DEFAULTS)))
        cfg = build_config(base=with_defaults, overrides=overrides)
    changed = [k for k in ("n_layer", "n_head", "n_embd", "block_size") if getattr(cfg.model, k) != base["model"][k]]
    if changed:
        raise ScratchLMError(f"fine-tuning keeps the base model's shape; drop --model.{changed[0]}")
    return cfg


def prepare_finetune(cfg: RunConfig, out: str | Path, data: str | Path | None, init_from: str | Path | None = None,
                     val_data: str | Path | None = None, val_fraction: float = 0.05, resume: bool = False,
                     master: bool = True) -> Plan:
    """Load the base model (new runs), grow it, encode the data and (rank 0) write the run's files."""
    run_dir = Path(out)
    if resume:
        if not (run_dir / INFO_FILE).exists():
            raise ScratchLMError(f"{run_dir} is not a fine-tuning run (no {INFO_FILE}); resume it with scratchlm train")
        info = json.loads((run_dir / INFO_FILE).read_text())
        tok = load_tokenizer(run_dir / "tokenizer.json")
        data, val_data = data or info["data"], val_data or info.get("val_data")
        val_fraction, model = info.get("val_fraction", val_fraction), None
    else:
        base = load_run(init_from)
        tok, added = with_chat_tokens(base.tokenizer)
        cfg.model.vocab_size = tok.vocab_size
        model = grow_vocabulary(base.model, cfg)
        info = {"init_from": str(Path(init_from).resolve()), "base_checkpoint": str(base.checkpoint.resolve()),
                "base_vocab_size": base.tokenizer.vocab_size, "added_tokens": added,
                "data": str(Path(data).resolve()), "val_data": str(Path(val_data).resolve()) if val_data else None,
                "val_fraction": val_fraction}
    convs = read_jsonl(data)
    if val_data:
        train_convs, val_convs = convs, read_jsonl(val_data)
    else:
        train_convs, val_convs = split_conversations(convs, val_fraction)
    train = make_examples(tok, train_convs, cfg.model.block_size)
    val = make_examples(tok, val_convs, cfg.model.block_size)
    info.update(train_conversations=len(train), val_conversations=len(val),
                dropped_too_long=train.dropped + val.dropped,
                dropped_no_answer=train.no_answer + val.no_answer, trained_tokens=train.n_trained)
    return Plan(cfg, run_dir, tok, tokenizer_hash(tok), model, train, val, info)


def write_run_files(plan: Plan, resume: bool) -> None:
    """config.json and finetune.json; new runs also tokenizer.json, chat_template.json and split.json."""
    d, info = plan.run_dir, plan.info
    (d / "config.json").write_text(json.dumps(to_dict(plan.cfg), indent=1))
    (d / INFO_FILE).write_text(json.dumps(info, indent=1))
    if not resume:
        save_tokenizer(plan.tok, d / "tokenizer.json")
        desc = template_description(plan.tok, info["added_tokens"], info["base_vocab_size"])
        (d / TEMPLATE_FILE).write_text(json.dumps(desc, indent=1))
        held_out = info["val_data"] or f"{info['val_fraction']:.0%} of the conversations, chosen with seed 0"
        (d / "split.json").write_text(json.dumps({"kind": "conversations", "train": info["data"], "val": held_out},
                                                 indent=1))


def describe_data(plan: Plan) -> list[str]:
    i = plan.info
    lines = [f"finetune   from {i['base_checkpoint']}; chat tokens "
             + (f"{', '.join(i['added_tokens'])} added: vocab {i['base_vocab_size']} → {plan.tok.vocab_size}, "
                "new embedding rows = the mean of the old ones" if i["added_tokens"] else "already in the tokenizer"),
             f"data       {len(plan.train):,} training and {len(plan.val):,} validation conversations, one per row, "
             f"padded; loss on {plan.train.n_trained:,} assistant tokens of {plan.train.n_tokens:,}"]
    if i["dropped_too_long"]:
        lines.append(f"dropped    {i['dropped_too_long']} conversation(s) longer than the context "
                     f"({plan.cfg.model.block_size} tokens)")
    if i["dropped_no_answer"]:
        lines.append(f"dropped    {i['dropped_no_answer']} conversation(s) with no assistant turn (nothing to learn)")
    return lines


def run_finetune(init_from: str | Path | None, data: str | Path | None, out: str | Path, *,
                 overrides: list[str] | None = None, val_data: str | Path | None = None, val_fraction: float = 0.05,
                 resume: bool = False, overwrite: bool = False, events: Events | None = None, say=None) -> dict:
    """The whole job; returns the Trainer's summary plus "run_dir". `say` gets the start-up lines."""
    if not resume and (init_from is None or data is None):
        raise ScratchLMError("a new fine-tuning run needs --init-from RUN_OR_CHECKPOINT and --data FILE.jsonl")
    cfg = finetune_config(init_from, overrides, out if resume else None)
    with Job(cfg.train, out, say) as job:
        set_threads(cfg.train.threads)
        plan, warnings = job.claim_first(
            lambda: prepare_finetune(cfg, out, data, init_from, val_data, val_fraction, resume, job.rt.master),
            resume, overwrite)
        pad = chat_ids(plan.tok)[END]
        rt = job.rt
        batches = {"train": ChatBatches(plan.train, cfg.train.batch_size, pad, rt.device, cfg.train.seed),
                   "val": ChatBatches(plan.val, cfg.train.batch_size, pad, rt.device, cfg.train.seed, "validation")}
        model = plan.model if plan.model is not None else GPT(cfg.model)
        model.head_at_targets = True  # the loss counts the answers only: the head skips the other positions
        trainer = Trainer(cfg, plan.run_dir, plan.tok, plan.tok_hash, batches, rt, events=events, model=model)
        latest = resume_latest(trainer, plan.run_dir, warnings) if resume else None
        if rt.master:
            write_run_files(plan, resume)
        announce(trainer, job, warnings, latest)
        lines = trainer.describe()  # the trainer's start-up lines, with the data described as conversations
        epochs = cfg.train.max_steps * cfg.train.batch_size / len(plan.train)  # an epoch: every conversation once
        for line in lines[:1] + describe_data(plan) + [x for x in lines[2:] if not x.startswith("loss")]:
            if line.startswith("budget"):
                line = line.rsplit(";", 1)[0] + f"; {epochs:.1f} epochs of the conversations if all steps run"
            job.say(line)
        return {**trainer.fit(), "run_dir": str(plan.run_dir)}
