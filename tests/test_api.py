"""The public Python API: scratchlm.train / load_run / generate, as a notebook would use them."""

from __future__ import annotations

import torch

import scratchlm
from scratchlm.train.loop import Trainer  # the package stays a package while being callable


def test_train_load_generate(tmp_path, small_corpus):
    out = tmp_path / "run"
    summary = scratchlm.train("tiny", out=out, overrides={
        "data.path": str(small_corpus), "data.tokenizer": "char", "model.n_layer": 1, "model.n_embd": 32,
        "model.n_head": 2, "model.block_size": 32, "train.batch_size": 4, "train.max_steps": 6,
        "train.eval_interval": 3, "train.eval_tokens": 256, "train.warmup_steps": 1})
    assert summary["step"] == 6 and summary["run_dir"] == str(out)
    assert torch.isfinite(torch.tensor(summary["val_loss"]))

    run = scratchlm.load_run(out)
    assert not run.model.training and run.config.model.n_layer == 1 and run.run_dir == out
    ids = torch.tensor([run.tokenizer.encode("Speak, speak.")])
    logits, loss = run.model(ids)
    assert logits.shape == (1, ids.size(1), run.config.model.vocab_size) and loss is None

    text = "".join(scratchlm.generate(run, "ALL:", max_new_tokens=20, temperature=0))
    again = "".join(scratchlm.generate(run, "ALL:", max_new_tokens=20, temperature=0))
    assert text == again and len(text) > 0
    assert Trainer is scratchlm.train.loop.Trainer
