"""Typed run configuration: dataclasses, TOML presets, dotted command-line overrides.

A run's configuration is built in three layers, later ones winning:

    the dataclass defaults  <  configs/<preset>.toml (or --config FILE.toml)  <  --section.key value

Merging and type checking are done by OmegaConf (a string where a float belongs is
an error); unknown keys are refused with the closest valid key suggested; value
ranges are checked in `validate`. The resolved config is saved in the run folder.
"""

from __future__ import annotations

import dataclasses
import difflib
import importlib.resources
import math
import sys
from dataclasses import dataclass, field
from pathlib import Path

from omegaconf import OmegaConf
from omegaconf.errors import ConfigKeyError, OmegaConfBaseException, ValidationError

from .errors import ScratchLMError
from .model.gpt import GPTConfig

if sys.version_info >= (3, 11):
    import tomllib
else:  # Python 3.10: the same parser, from PyPI (a dependency there)
    import tomli as tomllib


@dataclass
class DataConfig:
    path: str = ""  # text file, folder or glob; "" = the built-in Shakespeare plays
    tokenizer: str = "bpe"  # bpe | wordbpe | char
    vocab_size: int = 2048  # for bpe: 256 bytes + merges + special tokens
    pattern: str = "gpt4"  # bpe split pattern: gpt4 | gpt2 | a custom regex
    val_fraction: float = 0.1  # for user corpora: the last 10% of each file is held out


@dataclass
class TrainConfig:
    batch_size: int = 32  # sequences per optimizer step (all micro-batches, all ranks)
    micro_batch_size: int = 0  # sequences per forward pass; 0 = batch_size (no accumulation)
    max_steps: int = 5000
    max_time: float = 0.0  # seconds of training; 0 = no time limit. Whichever budget ends first wins.
    lr: float = 1e-3
    min_lr_ratio: float = 0.1  # the schedule decays to lr * min_lr_ratio
    warmup_steps: int = 100
    schedule: str = "cosine"  # cosine | wsd (warmup, constant, linear cool-down)
    cooldown_frac: float = 0.2  # wsd: the last fraction of training spent cooling down
    weight_decay: float = 0.1  # applied to matrices only
    optimizer: str = "adamw"  # adamw | muon (Muon for the blocks' matrices, AdamW for the rest: train/muon.py)
    muon_lr_ratio: float = 1.0  # muon: the matrices' learning rate is lr × this
    key_shift_lr_ratio: float = 1.0  # model.key_shift: its weights' learning rate is lr × this
    freeze: str = ""  # parameters whose names hold one of these comma-separated parts are not trained ("mlp")
    beta1: float = 0.9
    beta2: float = 0.95
    grad_clip: float = 1.0  # 0 = no clipping
    eval_interval: int = 250  # steps between evaluations
    eval_tokens: int = 65536  # validation tokens per evaluation (fixed windows)
    log_interval: int = 10
    checkpoint_interval: int = 0  # steps between checkpoints; 0 = at each evaluation
    keep_last: int = 2  # step checkpoints kept besides best/ and final/
    keep_best: bool = True  # also keep best/: the checkpoint with the lowest validation loss
    guard: bool = True  # skip steps whose loss or gradient norm is NaN/Inf or spikes (train/guard.py)
    guard_k: float = 6.0  # a spike: more than k standard deviations above the recent mean
    guard_window: int = 50  # steps in the running window the mean and std come from
    guard_max_bad: int = 3  # this many bad steps in a row: roll back to the last good checkpoint
    guard_lr_factor: float = 1.0  # multiply the learning rate by this at each rollback (1 = keep it)
    dtype: str = "auto"  # auto | bf16 | fp16 | fp32
    device: str = "auto"  # auto | cpu | cuda | cuda:N | mps
    compile: bool = False
    activation_checkpointing: str = "none"  # none | blocks | every_<k>
    fsdp: bool = False  # under torchrun: shard weights, gradients and AdamW state over ranks (FSDP) instead of DDP
    seed: int = 1337
    threads: int = 0  # CPU threads for torch; 0 = one per physical core


@dataclass
class SampleConfig:
    prompt: str = "\n"
    max_new_tokens: int = 300
    temperature: float = 0.8
    top_k: int = 0  # 0 = off
    top_p: float = 0.95  # 1.0 = off
    seed: int = 1337
    num_samples: int = 2
    dtype: str = "fp32"  # decoder weights: fp32, bf16 or fp16 (see decode.py)


@dataclass
class VizConfig:
    """Attention snapshots during training (read by `scratchlm.viz`, attached by `scratchlm train`)."""

    snapshots: bool = True  # record attention maps and per-head metrics into RUN/attention/
    every: int = 1  # record at every N-th evaluation (and once before the first step)
    every_steps: int = 0  # also record every N training steps between evaluations (0: at evaluations only)
    prompt: str = ""  # the probe text; "" = the first prompt_tokens tokens of the validation text
    prompt_tokens: int = 24  # the probe's length: a longer prompt is cut to this (and to the context)
    induction_tokens: int = 24  # a random sequence of this many tokens, repeated once, for the induction score
    figures: bool = True  # at the end of training, draw the figures into RUN/figures/
    tensorboard: bool = True  # also write the metrics to RUN/tensorboard/ when tensorboard is installed


@dataclass
class RunConfig:
    model: GPTConfig = field(default_factory=GPTConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    sample: SampleConfig = field(default_factory=SampleConfig)
    viz: VizConfig = field(default_factory=VizConfig)


def preset_dir() -> Path:
    return Path(str(importlib.resources.files("scratchlm").joinpath("configs")))


def presets() -> list[str]:
    return sorted(p.stem for p in preset_dir().glob("*.toml"))


def _all_keys(cfg=None, prefix="") -> list[str]:
    cfg = cfg if cfg is not None else RunConfig()
    keys = []
    for f in dataclasses.fields(cfg):
        v = getattr(cfg, f.name)
        if dataclasses.is_dataclass(v):
            keys += _all_keys(v, prefix + f.name + ".")
        else:
            keys.append(prefix + f.name)
    return keys


def _unknown_key_error(key: str) -> ScratchLMError:
    close = difflib.get_close_matches(key, _all_keys(), n=1, cutoff=0.5)
    hint = f"; did you mean '{close[0]}'?" if close else f"; valid keys: {', '.join(_all_keys())}"
    return ScratchLMError(f"unknown config key '{key}'{hint}")


def _flatten(d: dict, prefix="") -> dict:
    out = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_flatten(v, prefix + k + "."))
        else:
            out[prefix + k] = v
    return out


def _unflatten(flat: dict) -> dict:
    """{'train.lr': 1e-3} -> {'train': {'lr': 1e-3}} (nested dicts pass through)."""
    out: dict = {}
    for key, value in _flatten(flat).items():
        *parents, leaf = key.split(".")
        node = out
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = value
    return out


def _check_keys(flat: dict) -> None:
    valid = set(_all_keys())
    for key in flat:
        if key not in valid:
            raise _unknown_key_error(key)


def load_toml(path: str | Path) -> dict:
    path = Path(path)
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError:
        raise ScratchLMError(f"config file {path} is not text (not UTF-8); --config takes a TOML file") from None
    except (IsADirectoryError, PermissionError) as e:
        raise ScratchLMError(f"config file {path} cannot be read ({e.strerror})") from None
    except FileNotFoundError:
        raise ScratchLMError(f"config file not found: {path}") from None
    except tomllib.TOMLDecodeError as e:
        raise ScratchLMError(f"config file {path} is not valid TOML: {e}") from None


def build_config(preset: str | None = None, config_file: str | None = None, overrides: list[str] | dict | None = None,
                 base: dict | None = None) -> RunConfig:
    """Defaults < base (a saved config) < preset or TOML file < overrides
    ('section.key=value' strings or a flat dict)."""
    layers = [base] if base else []
    if preset:
        path = preset_dir() / f"{preset}.toml"
        if not path.exists():
            close = difflib.get_close_matches(preset, presets(), n=1)
            hint = f"; did you mean '{close[0]}'?" if close else ""
            raise ScratchLMError(f"unknown preset '{preset}'{hint} (presets: {', '.join(presets())})")
        layers.append(load_toml(path))
    if config_file:
        layers.append(load_toml(config_file))
    if isinstance(overrides, dict):
        layers.append(_unflatten(overrides))
    elif overrides:
        flat = {}
        for item in overrides:
            key, sep, value = item.partition("=")
            if not sep:
                raise ScratchLMError(f"override '{item}' needs a value: --{key} VALUE")
            flat[key] = value
        layers.append(OmegaConf.to_container(OmegaConf.from_dotlist([f"{k}={v}" for k, v in flat.items() if v])))
        layers.append(_unflatten({k: v for k, v in flat.items() if not v}))  # `--train.freeze ""`: "", not null
    schema = OmegaConf.structured(RunConfig)
    try:
        for layer in layers:
            _check_keys(_flatten(layer))
            schema = OmegaConf.merge(schema, layer)
        cfg: RunConfig = OmegaConf.to_object(schema)
    except ConfigKeyError as e:
        raise _unknown_key_error(str(e.full_key or e)) from None
    except ValidationError as e:
        raise ScratchLMError(f"bad value for '{e.full_key}': {e.msg.splitlines()[0]}") from None
    except OmegaConfBaseException as e:
        raise ScratchLMError(f"bad config: {str(e).splitlines()[0]}") from None
    validate(cfg)
    return cfg


def _require(cond: bool, key: str, why: str, value) -> None:
    if not cond:
        raise ScratchLMError(f"bad value for '{key}': {value!r} ({why})")


MODEL_CHOICES = {"norm_position": ("pre", "post"), "norm": ("layernorm", "rmsnorm"),
                 "mlp": ("gelu", "relu", "relu2", "swiglu"), "position": ("learned", "rope"),
                 "attention": ("fused", "written")}


def validate_model(m: GPTConfig) -> None:
    """The [model] section: shape and block options (docs/architecture-choices.md)."""
    for key in ("block_size", "n_layer", "n_head", "n_embd"):
        _require(getattr(m, key) > 0, f"model.{key}", "must be positive", getattr(m, key))
    _require(m.n_embd % m.n_head == 0, "model.n_embd", f"must be divisible by model.n_head={m.n_head}", m.n_embd)
    _require(0.0 <= m.dropout < 1.0, "model.dropout", "must be in [0, 1)", m.dropout)
    for key, allowed in MODEL_CHOICES.items():
        _require(getattr(m, key) in allowed, f"model.{key}", f"one of: {', '.join(allowed)}", getattr(m, key))
    _require(m.ff_dim >= 0, "model.ff_dim", "the MLP's hidden width, >= 0 (0 = 4 x n_embd; swiglu: 8/3 x)", m.ff_dim)
    _require(m.n_kv_head >= 0 and (m.n_kv_head == 0 or m.n_head % m.n_kv_head == 0), "model.n_kv_head",
             f"0 (= n_head) or a divisor of model.n_head={m.n_head}", m.n_kv_head)
    _require(m.rope_base > 1.0, "model.rope_base", "must be > 1 (10000 is usual)", m.rope_base)
    _require(m.position != "rope" or (m.n_embd // m.n_head) % 2 == 0, "model.position",
             f"rope needs an even head size; n_embd / n_head = {m.n_embd // m.n_head}", m.position)
    _require(1 <= m.shift_taps <= 4, "model.shift_taps",
             "must be 1 to 4 (with model.key_shift: the keys each key carries)", m.shift_taps)
    _require(m.logit_softcap >= 0, "model.logit_softcap", "must be >= 0 (0 = off; 15 to 30 is usual)", m.logit_softcap)


def validate(cfg: RunConfig) -> None:
    """Range checks OmegaConf's type checks cannot express."""
    m, d, t, s = cfg.model, cfg.data, cfg.train, cfg.sample
    for key, value in _flatten(to_dict(cfg)).items():  # inf or nan passes many range checks below
        _require(not isinstance(value, float) or math.isfinite(value), key, "must be a finite number", value)
    validate_model(m)
    _require(d.tokenizer in ("bpe", "wordbpe", "char"), "data.tokenizer", "bpe, wordbpe or char", d.tokenizer)
    _require(d.vocab_size >= 257 or d.tokenizer == "char", "data.vocab_size", "BPE needs at least 257 (256 bytes + 1)",
             d.vocab_size)
    _require(0.0 < d.val_fraction < 1.0, "data.val_fraction", "must be in (0, 1)", d.val_fraction)
    _require(0 < t.lr <= 10, "train.lr", "the learning rate must be positive, at most 10", t.lr)
    _require(0.0 <= t.min_lr_ratio <= 1.0, "train.min_lr_ratio", "must be in [0, 1]", t.min_lr_ratio)
    _require(t.batch_size > 0, "train.batch_size", "must be positive", t.batch_size)
    _require(t.micro_batch_size >= 0, "train.micro_batch_size", "must be >= 0", t.micro_batch_size)
    if t.micro_batch_size:
        _require(t.batch_size % t.micro_batch_size == 0, "train.micro_batch_size",
                 f"must divide train.batch_size={t.batch_size}", t.micro_batch_size)
    _require(t.max_steps > 0, "train.max_steps", "must be positive", t.max_steps)
    _require(t.max_time >= 0, "train.max_time", "seconds, >= 0", t.max_time)
    _require(t.warmup_steps >= 0, "train.warmup_steps", "must be >= 0", t.warmup_steps)
    _require(t.schedule in ("cosine", "wsd"), "train.schedule", "cosine or wsd", t.schedule)
    _require(0.0 <= t.cooldown_frac <= 1.0, "train.cooldown_frac", "must be in [0, 1]", t.cooldown_frac)
    _require(0 <= t.weight_decay <= 10, "train.weight_decay", "must be in [0, 10]", t.weight_decay)
    _require(t.optimizer in ("adamw", "muon"), "train.optimizer", "adamw or muon", t.optimizer)
    _require(0 < t.muon_lr_ratio <= 100, "train.muon_lr_ratio", "must be in (0, 100]", t.muon_lr_ratio)
    _require(0 < t.key_shift_lr_ratio <= 100, "train.key_shift_lr_ratio", "must be in (0, 100]",
             t.key_shift_lr_ratio)
    _require(not (t.optimizer == "muon" and t.fsdp), "train.optimizer", "muon needs whole matrices: use DDP "
             "(train.fsdp false) or adamw", t.optimizer)
    _require(0 <= t.beta1 < 1 and 0 <= t.beta2 < 1, "train.beta1/beta2", "must be in [0, 1)", (t.beta1, t.beta2))
    _require(t.grad_clip >= 0, "train.grad_clip", "must be >= 0", t.grad_clip)
    _require(t.eval_interval > 0, "train.eval_interval", "must be positive", t.eval_interval)
    _require(t.eval_tokens > 0, "train.eval_tokens", "must be positive", t.eval_tokens)
    _require(t.log_interval > 0, "train.log_interval", "steps between progress updates, must be positive",
             t.log_interval)
    _require(t.checkpoint_interval >= 0, "train.checkpoint_interval", "steps, >= 0 (0 = at each evaluation)",
             t.checkpoint_interval)
    _require(0 <= t.seed < 2**63, "train.seed", "must be in [0, 2**63)", t.seed)
    _require(t.threads >= 0, "train.threads", "must be >= 0 (0 = one per core)", t.threads)
    dev = t.device
    _require(dev in ("auto", "cpu", "cuda", "mps") or (dev.startswith("cuda:") and dev[5:].isdigit()), "train.device",
             "auto, cpu, cuda, cuda:N or mps", dev)
    _require(t.keep_last >= 1, "train.keep_last", "must be >= 1", t.keep_last)
    _require(t.guard_k > 0, "train.guard_k", "standard deviations, must be positive", t.guard_k)
    _require(t.guard_window >= 2, "train.guard_window", "must be >= 2 steps", t.guard_window)
    _require(t.guard_max_bad >= 1, "train.guard_max_bad", "must be >= 1", t.guard_max_bad)
    _require(0.0 < t.guard_lr_factor <= 1.0, "train.guard_lr_factor", "must be in (0, 1]", t.guard_lr_factor)
    _require(t.dtype in ("auto", "bf16", "fp16", "fp32"), "train.dtype", "auto, bf16, fp16 or fp32", t.dtype)
    ac = t.activation_checkpointing
    _require(ac in ("none", "blocks") or (ac.startswith("every_") and ac[6:].isdigit() and int(ac[6:]) > 0),
             "train.activation_checkpointing", "none, blocks or every_<k>", ac)
    validate_sample(s)
    v = cfg.viz
    _require(v.every >= 1, "viz.every", "evaluations between snapshots, must be >= 1", v.every)
    _require(v.prompt_tokens >= 2, "viz.prompt_tokens", "must be >= 2", v.prompt_tokens)
    _require(v.induction_tokens >= 2, "viz.induction_tokens", "must be >= 2", v.induction_tokens)


SAMPLE_DTYPES = ("fp32", "bf16", "fp16")


def validate_sample(s: SampleConfig) -> None:
    _require(s.temperature >= 0, "sample.temperature", "must be >= 0 (0 = greedy)", s.temperature)
    _require(0.0 < s.top_p <= 1.0, "sample.top_p", "must be in (0, 1]", s.top_p)
    _require(s.top_k >= 0, "sample.top_k", "must be >= 0 (0 = off)", s.top_k)
    _require(s.max_new_tokens >= 0, "sample.max_new_tokens", "must be >= 0", s.max_new_tokens)
    _require(s.num_samples >= 0, "sample.num_samples", "must be >= 0", s.num_samples)
    _require(0 <= s.seed < 2**63, "sample.seed", "must be in [0, 2**63)", s.seed)
    _require(math.isfinite(s.temperature) and s.temperature <= 100, "sample.temperature", "must be at most 100",
             s.temperature)
    _require(s.dtype in SAMPLE_DTYPES, "sample.dtype", f"must be one of {', '.join(SAMPLE_DTYPES)}", s.dtype)


def to_dict(cfg: RunConfig) -> dict:
    return dataclasses.asdict(cfg)


def flat_dict(cfg: RunConfig) -> dict:
    """{'train.lr': 0.001, ...}: every key of a config with its value."""
    return _flatten(to_dict(cfg))


# What a resumed run may change (`scratchlm train --resume RUN --KEY VALUE`): its budget, and
# how it is run and reported, never what is trained (the model, data, tokenizer, optimizer).
RESUMABLE_KEYS = {"train.max_steps", "train.max_time", "train.device", "train.threads", "train.compile",
                  "train.log_interval", "train.eval_interval", "train.checkpoint_interval", "train.keep_last",
                  "train.keep_best"} | {k for k in _all_keys() if k.startswith(("sample.", "viz."))}


def from_dict(d: dict) -> RunConfig:
    """Rebuild a saved config (from a run folder or checkpoint), with the same checks."""
    return build_config(base=d)
