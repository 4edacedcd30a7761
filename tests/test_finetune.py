"""Fine-tuning end to end: a tiny base run, the grown vocabulary, the job over the core Trainer,
exact-match evaluation, resume, and the commands' one-line errors."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from scratchlm.config import build_config, to_dict
from scratchlm.errors import ScratchLMError
from scratchlm.finetune.data import ASSISTANT, END, USER, chat_ids
from scratchlm.finetune.evaluate import chat_ready, majority_baseline, read_questions, score_model
from scratchlm.finetune.sft import run_finetune
from scratchlm.inference import load_run
from scratchlm.model import GPT
from scratchlm.tokenizer import save_tokenizer, tokenizer_hash
from scratchlm.tokenizer.bpe import BPETokenizer
from scratchlm.train import checkpoint as ckpt

from conftest import SMALL_TEXT

NAMES = ["ANNA", "BEN", "CARL", "DORA", "EVE", "FRED"]


def make_base_run(path: Path, block_size: int = 64, n_embd: int = 64) -> Path:
    """A run folder as `scratchlm train` leaves it, with random weights (no training needed)."""
    tok = BPETokenizer.train(SMALL_TEXT + " ".join(NAMES) * 20, 300)
    cfg = build_config("tiny", overrides={"model.vocab_size": tok.vocab_size, "model.block_size": block_size,
                                          "model.n_layer": 2, "model.n_head": 4, "model.n_embd": n_embd})
    torch.manual_seed(0)
    model = GPT(cfg.model)
    path.mkdir(parents=True)
    save_tokenizer(tok, path / "tokenizer.json")
    (path / "config.json").write_text(json.dumps(to_dict(cfg)))
    ckpt.save_checkpoint(path / "checkpoints" / "final", ckpt.plain_state_dict(model), None,
                         {"step": 0, "config": to_dict(cfg), "tokenizer_hash": tokenizer_hash(tok)})
    return path


def toy_questions(path: Path) -> Path:
    """'Who speaks first?' over two-speaker passages: every ordered pair of names (30 questions)."""
    rows = []
    for a in NAMES:
        for b in NAMES:
            if a != b:
                passage = f"{a}:\nSpeak, speak.\n\n{b}:\nResolved."
                rows.append({"messages": [{"role": "user", "content": f"{passage}\n\nWho speaks first?"},
                                          {"role": "assistant", "content": a}], "kind": "first"})
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


FAST = ["train.lr=3e-3", "train.warmup_steps=5", "train.batch_size=15", "train.eval_interval=1000",
        "train.guard=false", "train.dtype=fp32", "train.device=cpu", "train.threads=1",
        "train.optimizer=adamw", "train.schedule=cosine", "train.min_lr_ratio=0.1"]  # from random weights, AdamW


def test_grown_model_keeps_old_rows_and_predictions(tmp_path):
    base = load_run(make_base_run(tmp_path / "base"))
    old = base.model.transformer.wte.weight.detach().clone()
    ids = torch.tensor([[5, 6, 7, 8]])
    with torch.no_grad():
        before, _ = base.model(ids)
    model, tok, grown = chat_ready(base)
    assert grown and tok.vocab_size == old.shape[0] + 3
    w = model.transformer.wte.weight.detach()
    torch.testing.assert_close(w[: old.shape[0]], old)
    torch.testing.assert_close(w[old.shape[0]:], old.mean(0, keepdim=True).expand(3, -1))
    assert model.lm_head.weight is model.transformer.wte.weight  # still tied
    with torch.no_grad():
        after, _ = model(ids)
    torch.testing.assert_close(after[..., : old.shape[0]], before)  # old tokens: the same logits


def test_the_head_at_the_answers_only_gives_the_same_loss_and_gradients():
    """Fine-tuning's `head_at_targets` skips the head where the target is -100: same loss, same gradients."""
    cfg = build_config("tiny", overrides={"model.vocab_size": 50, "model.block_size": 16, "model.n_layer": 2,
                                          "model.n_head": 2, "model.n_embd": 32}).model
    torch.manual_seed(0)
    model, x = GPT(cfg), torch.randint(0, 50, (3, 16))
    y = torch.full_like(x, -100)
    y[:, 10:13], y[1, 2] = x[:, 11:14], 7  # a few answer positions per row
    results = []
    for flag in (False, True):
        model.zero_grad()
        model.head_at_targets = flag
        logits, loss = model(x, y)
        loss.backward()
        results.append((logits.shape, loss.detach(), [p.grad.clone() for p in model.parameters()]))
    (full, loss0, g0), (kept, loss1, g1) = results
    assert full == (3, 16, 50) and kept == (10, 50)  # 3 × 3 answers + 1: the head ran at 10 positions, not 48
    torch.testing.assert_close(loss1, loss0)
    for a, b in zip(g0, g1):
        torch.testing.assert_close(b, a)
    model.eval()  # evaluation and generation see every position's logits
    assert model(x, y)[0].shape == (3, 16, 50)


def test_a_key_shift_added_for_fine_tuning_starts_as_a_no_op(tmp_path):
    from scratchlm.finetune.sft import grow_vocabulary

    base = load_run(make_base_run(tmp_path / "base"))
    cfg = base.config
    cfg.model.vocab_size += 3
    cfg.model.key_shift, cfg.model.shift_taps = True, 2
    model = grow_vocabulary(base.model, cfg).eval()
    assert all(not p.any() for b in model.transformer.h for p in (b.attn.k_shift, b.attn.k_shift_far, b.attn.q_shift))
    ids = torch.tensor([[5, 6, 7, 8, 9]])
    with torch.no_grad():
        torch.testing.assert_close(model(ids)[0][..., :-3], base.model(ids)[0])
    summary = run_finetune(tmp_path / "base", toy_questions(tmp_path / "toy.jsonl"), tmp_path / "ft",
                           overrides=FAST + ["train.max_steps=3", "model.key_shift=true"])
    assert summary["step"] == 3 and load_run(tmp_path / "ft").config.model.key_shift


def test_the_key_shift_learns_at_its_own_rate(tmp_path):
    """train.key_shift_lr_ratio: the trainer's schedule gives the shift's group lr × the ratio. Adam's first
    step moves each entry by exactly its lr (m̂ / sqrt(v̂) = ±1), so one step shows the ratio."""
    base, data = make_base_run(tmp_path / "base"), toy_questions(tmp_path / "toy.jsonl")
    moved = {}
    for ratio in (1, 10):
        run_finetune(base, data, tmp_path / f"ft{ratio}",
                     overrides=FAST + ["train.max_steps=1", f"train.key_shift_lr_ratio={ratio}"])
        blocks = load_run(tmp_path / f"ft{ratio}").model.transformer.h
        moved[ratio] = max(b.attn.k_shift.abs().max().item() for b in blocks)
    assert moved[1] == pytest.approx(3e-3 / 5, rel=1e-2)  # the first warm-up step's lr (lr / warmup_steps), less eps
    assert moved[10] == pytest.approx(10 * moved[1], rel=1e-3)


@pytest.fixture(scope="module")
def finetuned(tmp_path_factory):
    """A tiny model from random weights, fine-tuned on the toy task (shared by the tests below)."""
    tmp = tmp_path_factory.mktemp("ft")
    base = make_base_run(tmp / "base")
    data = toy_questions(tmp / "toy.jsonl")
    summary = run_finetune(base, data, tmp / "ft", val_data=data, overrides=FAST + ["train.max_steps=150"])
    return tmp, summary


def test_tiny_model_learns_a_toy_question_task(finetuned):
    """From random weights, 'who speaks first' is learned to 100% on a fixed set within seconds."""
    tmp, summary = finetuned
    assert summary["step"] == 150 and summary["stopped_by"] == "steps"
    run = load_run(tmp / "ft" / "checkpoints" / "final")
    rows = read_questions(tmp / "toy.jsonl")
    score = score_model(run.model, run.tokenizer, rows)
    assert score.accuracy() == 1.0, score
    assert majority_baseline(rows)[0].accuracy() == pytest.approx(5 / 30)
    template = json.loads((tmp / "ft" / "chat_template.json").read_text())
    assert template["added_tokens"] == [USER, ASSISTANT, END]
    assert template["token_ids"] == chat_ids(run.tokenizer)
    info = json.loads((tmp / "ft" / "finetune.json").read_text())
    assert info["train_conversations"] == 30 and info["dropped_too_long"] == 0


def test_chat_through_stdin(finetuned):
    """`scratchlm chat` answers a question typed on standard input, then a second one; the first
    exchange is dropped when the context fills up, and the screen says so."""
    tmp, _ = finetuned
    q1 = "BEN:\\nSpeak, speak.\\n\\nEVE:\\nResolved.\\n\\nWho speaks first?"
    q2 = "DORA:\\nSpeak, speak.\\n\\nANNA:\\nResolved.\\n\\nWho speaks first?"
    r = _cli("chat", tmp / "ft", "--temperature", "0", "--max-new-tokens", "8", stdin=f"{q1}\n{q2}\n")
    assert r.returncode == 0, r.stderr
    answers = [line.split("model> ", 1)[1] for line in r.stdout.splitlines() if "model> " in line]
    assert answers == ["BEN", "DORA"]
    assert "dropped the oldest 2 turn(s)" in r.stdout  # context 64: one exchange at a time


def test_sample_and_eval_commands_on_a_finetuned_run(finetuned):
    tmp, _ = finetuned
    r = _cli("sample", tmp / "ft", "--prompt", "ANNA:", "--max-new-tokens", "5", "--num-samples", "1")
    assert r.returncode == 0, r.stderr
    r = _cli("eval", tmp / "ft", "--data", tmp / "toy.jsonl", "--limit", "6", "--figure", tmp / "fig")
    assert r.returncode == 0, r.stderr
    assert "exact match on 6 questions" in r.stdout
    row = next(line for line in r.stdout.splitlines() if line.startswith("first"))
    assert "100.0%" in row  # this run; the base model (random weights) and the majority answer follow
    assert (tmp / "fig" / "copying_heads.png").stat().st_size > 0


def test_copy_scores_find_the_answer_in_the_passage(finetuned):
    from scratchlm.finetune.copying import copy_scores

    tmp, _ = finetuned
    run = load_run(tmp / "ft")
    q = "CARL:\nSpeak, speak.\n\nFRED:\nResolved.\n\nWho speaks first?"
    s = copy_scores(run.model, run.tokenizer, q, "CARL")
    marked = run.tokenizer.decode([s["ids"][i] for i in s["source"].nonzero()[0]])
    assert marked == "CARL" or marked.startswith("CARL")  # the tokens that spell the name (a token may run on)
    L, H = run.model.config.n_layer, run.model.config.n_head
    assert s["share"].shape == (L, H) and ((s["share"] >= 0) & (s["share"] <= 1)).all()


def test_fine_tuning_trains_attention_and_leaves_the_mlps_as_they_were(finetuned):
    """train.freeze=mlp, fine-tuning's default: the MLPs end exactly as the base had them (no gradient, no
    optimizer state), while attention has learned."""
    tmp, _ = finetuned
    base = ckpt.load_checkpoint(tmp / "base" / "checkpoints" / "final", with_trainer=False)[1]
    model, trainer = ckpt.load_checkpoint(tmp / "ft" / "checkpoints" / "final")[1:3]
    mlp = [k for k in base if ".mlp." in k]
    assert len(mlp) == 2 * 4  # 2 layers × c_fc and c_proj, weight and bias
    for k in mlp:
        torch.testing.assert_close(model[k], base[k], rtol=0, atol=0)
    assert not torch.equal(model["transformer.h.0.attn.c_attn.weight"], base["transformer.h.0.attn.c_attn.weight"])
    n_trained = sum(1 for k in model if ".mlp." not in k and k != "lm_head.weight")  # the head is the embedding
    assert len(trainer["optimizer"]["state"]) == n_trained


def test_resume_continues_exactly(tmp_path):
    """A fine-tuning run stopped and resumed ends with the weights of one that was not stopped."""
    base = make_base_run(tmp_path / "base")
    data = toy_questions(tmp_path / "toy.jsonl")
    common = FAST + ["train.eval_interval=4", "train.batch_size=6", "train.micro_batch_size=3"]
    run_finetune(base, data, tmp_path / "whole", overrides=common + ["train.max_steps=8"])
    run_finetune(base, data, tmp_path / "split", overrides=common + ["train.max_steps=4"])
    run_finetune(None, None, tmp_path / "split", overrides=["train.max_steps=8"], resume=True)
    a = ckpt.load_checkpoint(tmp_path / "whole" / "checkpoints" / "final", with_trainer=False)[1]
    b = ckpt.load_checkpoint(tmp_path / "split" / "checkpoints" / "final", with_trainer=False)[1]
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=0)
    with pytest.raises(ScratchLMError, match="train.freeze cannot change on resume"):  # the optimizer state would not fit
        run_finetune(None, None, tmp_path / "split", overrides=["train.max_steps=12", "train.freeze="], resume=True)


@pytest.mark.slow  # bf16 is emulated on a CPU without AVX512-BF16/AMX: two minutes for three steps there
def test_bf16_autocast_and_the_guard(tmp_path):
    """The loop's bf16 autocast and guard apply to fine-tuning as they are: finite losses, step 0 saved."""
    base = make_base_run(tmp_path / "base")
    data = toy_questions(tmp_path / "toy.jsonl")
    s = run_finetune(base, data, tmp_path / "ft", overrides=FAST + ["train.dtype=bf16", "train.guard=true",
                                                                     "train.max_steps=3"])
    assert s["step"] == 3 and np.isfinite(s["final_train_loss"]) and np.isfinite(s["val_loss"])
    assert (tmp_path / "ft" / "checkpoints" / "step_0000000").is_dir()  # the guard's rollback point


def test_run_without_a_tokenizer_is_one_line(tmp_path):
    base = make_base_run(tmp_path / "base")
    (base / "tokenizer.json").unlink()
    with pytest.raises(ScratchLMError, match="tokenizer file not found"):
        run_finetune(base, toy_questions(tmp_path / "toy.jsonl"), tmp_path / "ft", overrides=FAST)
    assert not (tmp_path / "ft").exists()  # a refused start leaves nothing behind


def test_shape_overrides_are_refused(tmp_path):
    base = make_base_run(tmp_path / "base")
    with pytest.raises(ScratchLMError, match="keeps the base model's shape"):
        run_finetune(base, toy_questions(tmp_path / "toy.jsonl"), tmp_path / "ft", overrides=["model.n_layer=3"])


def _cli(*args, stdin=None, timeout=120):
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONIOENCODING="utf-8")
    return subprocess.run([sys.executable, "-m", "scratchlm", *map(str, args)], input=stdin, capture_output=True,
                          text=True, env=env, timeout=timeout)


def test_cli_errors_are_one_line(tmp_path):
    base = make_base_run(tmp_path / "base")
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"prompt": "a", "response": "b"}\n{"messages": [{"role": "robot", "content": "x"}]}\n')
    r = _cli("finetune", "--init-from", base, "--data", bad, "--out", tmp_path / "ft")
    assert r.returncode == 2
    assert r.stderr.strip().splitlines() == [f"error: {bad} line 2: message 1 has unknown role 'robot' "
                                             "(roles: system, user, assistant)"]
    r = _cli("chat", base)  # a base run has no chat tokens
    assert r.returncode == 2 and "not fine-tuned" in r.stderr and len(r.stderr.strip().splitlines()) == 1


@pytest.mark.slow
def test_two_ranks_under_torchrun_match_one_process(tmp_path):
    """`torchrun --nproc_per_node 2 -m scratchlm finetune`: 2 ranks × 1 micro-batch of 3 draw the rows 1 process
    × 2 micro-batches of 3 draws, and DDP averages the gradients: the same losses to float rounding."""
    base = make_base_run(tmp_path / "base")
    data = toy_questions(tmp_path / "toy.jsonl")
    common = FAST + ["train.batch_size=6", "train.micro_batch_size=3", "train.max_steps=4", "train.eval_interval=4"]
    run_finetune(base, data, tmp_path / "one", overrides=common)
    env = dict(os.environ, OMP_NUM_THREADS="1")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "-m", "scratchlm",
           "finetune", "--init-from", str(base), "--data", str(data), "--out", str(tmp_path / "two"), "--quiet",
           *[f"--{o}" for o in common]]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]

    def losses(run_dir):
        rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
        return [r["loss"] for r in rows if "loss" in r], [r["val_loss"] for r in rows if r.get("event") == "eval"]

    (train1, val1), (train2, val2) = losses(tmp_path / "one"), losses(tmp_path / "two")
    assert len(train1) == len(train2) == 4
    np.testing.assert_allclose(train2, train1, rtol=1e-5)
    np.testing.assert_allclose(val2, val1, rtol=1e-5)


def test_the_live_doctor_watches_a_fine_tuning_run(tmp_path, capsys):
    """The doctor reads the batches' tokens for its unigram level and repetition reference: chat batches too."""
    from scratchlm.doctor import live

    base = make_base_run(tmp_path / "base")
    run_finetune(base, toy_questions(tmp_path / "toy.jsonl"), tmp_path / "ft", events=live.attach(quiet=True),
                 overrides=FAST + ["train.max_steps=4", "train.eval_interval=2"])
    assert "internal error" not in capsys.readouterr().out
    probes = [json.loads(line) for line in (tmp_path / "ft" / "probes.jsonl").read_text().splitlines()]
    assert probes[0]["kind"] == "start" and probes[0]["unigram_loss"] > 0
    assert probes[0]["from_weights"]  # so the ln(vocab) check of the first loss is off, live and in `doctor`
    from scratchlm.doctor.diagnose import diagnose
    row = next(r for r in diagnose(tmp_path / "ft")["rows"] if r["key"] == "initial_loss")
    assert row["finding"] is None and "trained weights" in row["evidence"]
    assert any(p["kind"] == "repetition" for p in probes)


def test_saved_scores_are_plain_json_the_guide_reads(tmp_path):
    from scratchlm.finetune.evaluate import Score, save_result
    from scratchlm.report.chapters import eval_table

    score = Score()
    for kind, ok in (("first", True), ("first", False), ("next", False)):
        score.add(kind, ok)
    score.first_hit = ("Who speaks first?", "VIOLA")
    path = save_result({"model": score, "majority": score, "examples": [("q", "a", "a")]}, 3, tmp_path)
    data = json.loads(path.read_text())
    assert data["model"]["correct"] == {"first": 1, "next": 0} and data["model"]["total"] == {"first": 2, "next": 1}
    header, rows, examples = eval_table(data)
    assert rows[0] == ["first", "2", "50.0%", "50.0%"] and len(examples) == 1
