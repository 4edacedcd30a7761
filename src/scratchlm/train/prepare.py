"""Everything before the first step: corpus → tokenizer → token cache → run folder.

A run folder holds all a later command needs, nothing from outside it:

    runs/NAME/
        config.json      the resolved configuration
        tokenizer.json   the tokenizer the model was trained with
        split.json       which plays / files are train and which are validation
        metrics.jsonl    one JSON line per step and per evaluation
        checkpoints/     step_*/, best/, final/
        samples.txt      text sampled at the end of training
"""

from __future__ import annotations

import json
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

from ..config import RunConfig, from_dict, to_dict
from ..data.corpus import Corpus, load_corpus
from ..data.dataset import cache_root, tokenize_corpus
from ..errors import ScratchLMError
from ..tokenizer import CharTokenizer, load_tokenizer, save_tokenizer, tokenizer_hash


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
    from ..tokenizer.bpe import BPETokenizer

    key = f"{corpus.fingerprint()}-bpe-{dc.vocab_size}-{dc.pattern if dc.pattern in ('gpt2', 'gpt4') else 'custom'}"
    path = cache_root() / "tokenizers" / f"{key}.json"
    if path.exists():
        tok = load_tokenizer(path)
        if getattr(tok, "pattern_name", dc.pattern) == dc.pattern or dc.pattern not in ("gpt2", "gpt4"):
            return tok, f"byte-level BPE from cache ({path.name})"
    t0 = time.perf_counter()
    say(f"training a byte-level BPE tokenizer (vocab {dc.vocab_size}) on {sum(map(len, corpus.train)) / 1e6:.1f} MB ...")
    tok = BPETokenizer.train(corpus.train, dc.vocab_size, pattern=dc.pattern, progress=True)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".{os.getpid()}.tmp")  # a name of its own: other processes may write the same entry
    save_tokenizer(tok, tmp)
    tmp.replace(path)
    return tok, f"byte-level BPE trained in {time.perf_counter() - t0:.1f} s"


def _holds_run(run_dir: Path) -> bool:
    return (run_dir / "config.json").exists() or (run_dir / "checkpoints").exists()


def prepare(cfg: RunConfig | None, out: str | Path, *, resume: bool = False, overwrite: bool = False, say=print, master: bool = True) -> Prepared:
    """Load the corpus, get the tokenizer and the token cache, and (rank 0, new runs) write
    the run folder. Under torchrun rank 0 runs this first; the other ranks (master=False)
    then find the caches filled and only read, and leave the run folder to rank 0
    (on other machines they fill their own caches; temporary files have per-process
    names and are renamed into place, so concurrent writers are safe).
    A resumed run's folder is not touched here: `write_run_files` updates it once the
    checkpoint has been accepted, so a refused resume leaves it exactly as it was."""
    run_dir = Path(out)
    notes = []
    tok = None
    if resume:
        if not (run_dir / "config.json").exists():
            raise ScratchLMError(f"nothing to resume in {run_dir} (no config.json)")
        saved = from_dict(json.loads((run_dir / "config.json").read_text()))
        if cfg is not None and to_dict(cfg)["model"] != to_dict(saved)["model"]:
            raise ScratchLMError(f"--resume {run_dir}: the run's model shape differs from the one asked for; drop the --model.* overrides")
        cfg = cfg or saved  # the caller may have merged overrides (e.g. a longer budget) into it
        tok = load_tokenizer(run_dir / "tokenizer.json")
    elif not master:
        # rank 0 has prepared this run already: use exactly its tokenizer (a rank on another
        # machine that cannot see the folder gets the same one below, deterministically)
        if (run_dir / "tokenizer.json").exists():
            tok = load_tokenizer(run_dir / "tokenizer.json")
    elif _holds_run(run_dir):
        if not overwrite:
            raise ScratchLMError(f"{run_dir} already holds a run; use --resume {run_dir} to continue it, "
                                 "--overwrite to replace it, or another --out")
        shutil.rmtree(run_dir)
    corpus = load_corpus(cfg.data.path, cfg.data.val_fraction)
    for s in corpus.skipped:
        say(f"skipped: {s}")
    if tok is None:
        tok, how = train_tokenizer(corpus, cfg.data, say)
        notes.append(f"tokenizer  {how}, vocab {tok.vocab_size}")
    cfg.model.vocab_size = tok.vocab_size
    h = tokenizer_hash(tok)
    t0 = time.perf_counter()
    data = tokenize_corpus(corpus, tok, h)
    n_bytes = corpus.n_bytes
    n_tok = len(data["train"]) + len(data["val"])
    notes.append(f"corpus     {corpus.name}: {n_bytes / 1e6:.2f} MB → {n_tok:,} tokens, {n_bytes / max(1, n_tok):.2f} bytes/token "
                 f"(tokenized/cached in {time.perf_counter() - t0:.1f} s); validation: {corpus.split.get('kind')}")
    p = Prepared(cfg, run_dir, tok, h, data, corpus, notes)
    if master and not resume:
        write_run_files(p, with_tokenizer=True)
    return p


def write_run_files(p: Prepared, with_tokenizer: bool = False) -> None:
    """config.json (with any overrides of a resume), split.json and, new runs, tokenizer.json."""
    p.run_dir.mkdir(parents=True, exist_ok=True)
    (p.run_dir / "config.json").write_text(json.dumps(to_dict(p.cfg), indent=1))
    if with_tokenizer:
        save_tokenizer(p.tok, p.run_dir / "tokenizer.json")
    (p.run_dir / "split.json").write_text(json.dumps(p.corpus.split, indent=1))
