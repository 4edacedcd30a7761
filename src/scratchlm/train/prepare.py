"""Everything before the first step: corpus → tokenizer → token cache, then the run folder's files.

`prepare` writes nothing into the run folder: `write_run_files` does, once the trainer has
been built (so a refused start leaves no half-made run behind). A run folder holds all a
later command needs, nothing from outside it (train/run_folder.py: marker and lock):

    runs/NAME/
        config.json      the resolved configuration (data.path made absolute)
        tokenizer.json   the tokenizer the model was trained with
        split.json       which plays / files are train and which are validation
        metrics.jsonl    one JSON line per step and per evaluation
        checkpoints/     step_*/, best/, final/
        samples.txt      text sampled at the end of training
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from pathlib import Path

from ..config import RESUMABLE_KEYS, RunConfig, build_config, flat_dict, to_dict
from ..data.corpus import Corpus, load_corpus
from ..data.dataset import cache_root, tokenize_corpus
from ..errors import ScratchLMError
from ..tokenizer import BPETokenizer, CharTokenizer, WordBPETokenizer, load_tokenizer, save_tokenizer, tokenizer_hash


@dataclass
class Prepared:
    cfg: RunConfig
    run_dir: Path
    tok: object
    tok_hash: str
    data: dict
    corpus: Corpus
    notes: list[str]


def train_tokenizer(corpus: Corpus, dc, say=print):
    """Train (or fetch from the cache) the tokenizer on the training split only."""
    if dc.tokenizer == "char":
        return CharTokenizer.train("".join(corpus.train + corpus.val)), "character-level"
    if dc.tokenizer == "wordbpe":  # the guide's word-level BPE: fast enough to train every time
        t0 = time.perf_counter()
        tok = WordBPETokenizer.train("\n".join(corpus.train), vocab_size=dc.vocab_size,
                                     special_tokens=("<|endoftext|>",))
        return tok, f"word-level BPE trained in {time.perf_counter() - t0:.1f} s"
    key = f"{corpus.fingerprint()}-bpe-{dc.vocab_size}-{dc.pattern if dc.pattern in ('gpt2', 'gpt4') else 'custom'}"
    path = cache_root() / "tokenizers" / f"{key}.json"
    if path.exists():
        tok = load_tokenizer(path)
        if tok.pattern_name == dc.pattern or dc.pattern not in ("gpt2", "gpt4"):
            return tok, f"byte-level BPE from cache ({path.name})"
    t0 = time.perf_counter()
    megabytes = sum(map(len, corpus.train)) / 1e6
    say(f"training a byte-level BPE tokenizer (vocab {dc.vocab_size}) on {megabytes:.1f} MB ...")
    tok = BPETokenizer.train(corpus.train, dc.vocab_size, pattern=dc.pattern, progress=True)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".{os.getpid()}.tmp")  # a name of its own: other processes may write the same entry
    save_tokenizer(tok, tmp)
    tmp.replace(path)
    return tok, f"byte-level BPE trained in {time.perf_counter() - t0:.1f} s"


def load_run_config(run_dir: str | Path) -> dict:
    """A run folder's config.json as a dict, checked (one clear line when it is damaged)."""
    path = Path(run_dir) / "config.json"
    if not path.is_file():
        raise ScratchLMError(f"nothing to resume in {run_dir} (no config.json)")
    try:
        d = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError, ValueError) as e:
        raise ScratchLMError(f"{path} is damaged ({str(e).splitlines()[0][:100]}); restore it from "
                             "checkpoints/*/state.json, whose 'config' is the same") from None
    if not isinstance(d, dict):
        raise ScratchLMError(f"{path} is not a scratchlm config (a JSON {type(d).__name__}, not an object)")
    build_config(base=d)  # unknown keys or bad values: refused here, naming the key
    return d


def _absolute_data_path(cfg: RunConfig) -> None:
    """A user corpus path made absolute, so that the run can be resumed from any folder."""
    if cfg.data.path:
        cfg.data.path = os.path.abspath(cfg.data.path)


def check_resume_changes(cfg: RunConfig, saved: RunConfig, run_dir: Path) -> None:
    """Only budget and bookkeeping keys may change on resume; anything else would make the
    run something other than the one its checkpoints and tokenizer belong to."""
    new, old, may = flat_dict(cfg), flat_dict(saved), sorted(RESUMABLE_KEYS)
    for key, value in new.items():
        if key not in RESUMABLE_KEYS and old.get(key) != value:
            raise ScratchLMError(f"--resume {run_dir}: {key} cannot change on resume (the run has {old.get(key)!r}, "
                                 f"asked {value!r}); only {', '.join(k for k in may if k.startswith('train.'))}, "
                                 "sample.* and viz.* may. Start a new run (another --out) for other settings")


def prepare(cfg: RunConfig | None, out: str | Path, *, resume: bool = False, say=print, master: bool = True,
            verify: bool = False, tokenizer=None) -> Prepared:
    """Load the corpus, get the tokenizer and the token cache (nothing is written into the run
    folder: see `write_run_files`). Under torchrun rank 0 runs this first; the other ranks
    (master=False) then find the caches filled and only read them (on other machines they
    fill their own caches; temporary files have per-process names and are renamed into
    place, so concurrent writers are safe). `verify`: check the token cache's checksums.
    `tokenizer`: use this one (e.g. the tokenizer of the weights a run starts from) instead of training one."""
    run_dir = Path(out)
    notes = []
    tok = None
    if resume:
        saved = build_config(base=load_run_config(run_dir))
        _absolute_data_path(saved)  # an older run stored it as given (relative to where it was started)
        cfg = cfg or saved  # the caller may have merged overrides (e.g. a longer budget) into it
        _absolute_data_path(cfg)
        check_resume_changes(cfg, saved, run_dir)
        tok = load_tokenizer(run_dir / "tokenizer.json")
    else:
        _absolute_data_path(cfg)
        tok = tokenizer
        if tok is None and not master and (run_dir / "tokenizer.json").exists():
            tok = load_tokenizer(run_dir / "tokenizer.json")  # rank 0's, exactly
    corpus = load_corpus(cfg.data.path, cfg.data.val_fraction)
    for s in corpus.skipped:
        say(f"skipped: {s}")
    if tok is None:
        tok, how = train_tokenizer(corpus, cfg.data, say)
        notes.append(f"tokenizer  {how}, vocab {tok.vocab_size}")
    cfg.model.vocab_size = tok.vocab_size
    h = tokenizer_hash(tok)
    t0 = time.perf_counter()
    data = tokenize_corpus(corpus, tok, h, verify=verify, warn=notes.append)
    n_bytes = corpus.n_bytes
    n_tok = len(data["train"]) + len(data["val"])
    notes.append(f"corpus     {corpus.name}: {n_bytes / 1e6:.2f} MB → {n_tok:,} tokens, "
                 f"{n_bytes / max(1, n_tok):.2f} "
                 f"bytes/token (tokenized/cached in {time.perf_counter() - t0:.1f} s); validation: "
                 f"{corpus.split.get('kind')}")
    return Prepared(cfg, run_dir, tok, h, data, corpus, notes)


def write_run_files(p: Prepared, with_tokenizer: bool = False) -> None:
    """config.json (with any overrides of a resume), split.json and, new runs, tokenizer.json;
    each written to a temporary name and renamed, so a crash leaves the old file or the new one."""
    files = {"config.json": json.dumps(to_dict(p.cfg), indent=1), "split.json": json.dumps(p.corpus.split, indent=1)}
    for name, text in files.items():
        tmp = p.run_dir / f".{name}.{os.getpid()}.tmp"
        try:
            tmp.write_text(text)
            os.replace(tmp, p.run_dir / name)
        finally:
            tmp.unlink(missing_ok=True)
    if with_tokenizer:
        save_tokenizer(p.tok, p.run_dir / "tokenizer.json")
