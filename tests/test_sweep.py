"""`scratchlm sweep lr`: the range test leaves the model alone, ramps the rate exponentially,
smooths and stops on blow-up; the grid trains each rate and reports the validation losses."""

import json
import math

import pytest
import torch

from scratchlm.model import GPT, GPTConfig
from scratchlm.sweep import grid_rates, lr_range_test, main

SMALL = ["--data.tokenizer", "char", "--model.n_layer", "2", "--model.n_head", "2", "--model.n_embd", "32",
         "--model.block_size", "32", "--train.batch_size", "8", "--train.eval_tokens", "1024"]


def _tiny_problem():
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=16, block_size=16, n_layer=1, n_head=2, n_embd=16))
    g = torch.Generator().manual_seed(0)
    base = torch.arange(16).repeat(3)  # a learnable pattern: each token is followed by the next

    def get_batch(i):
        starts = torch.randint(0, 16, (8,), generator=g)
        x = torch.stack([base[s:s + 16] for s in starts])
        y = torch.stack([base[s + 1:s + 17] for s in starts])
        return x, y

    return model, get_batch


def test_range_test_leaves_weights_untouched_and_stops_on_blow_up():
    model, get_batch = _tiny_problem()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    res = lr_range_test(model, get_batch, steps=80, min_lr=1e-5, max_lr=100.0, grad_clip=0.0)
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())
    # exponential ramp: a constant ratio between consecutive rates, starting at min_lr
    lrs = res["lrs"]
    assert lrs[0] == pytest.approx(1e-5)
    ratios = [b / a for a, b in zip(lrs, lrs[1:])]
    assert max(ratios) == pytest.approx(min(ratios)) and ratios[0] == pytest.approx((100.0 / 1e-5) ** (1 / 79))
    # a ramp to lr 100 blows up before the end
    assert res["steps_run"] < 80 and ("blew up" in res["stopped"] or "became" in res["stopped"])
    # bias-corrected exponential moving average of the raw losses
    avg = 0.0
    for i, (loss, s) in enumerate(zip(res["losses"], res["smoothed"])):
        avg = 0.9 * avg + 0.1 * loss
        assert s == pytest.approx(avg / (1 - 0.9 ** (i + 1)))
    i_min = res["smoothed"].index(min(res["smoothed"]))
    assert res["lr_min_loss"] == lrs[i_min] and res["suggested_lr"] == pytest.approx(lrs[i_min] / 10)
    assert res["min_smoothed_loss"] < res["smoothed"][0] - 0.5  # it did learn the pattern on the way


def test_grid_rates_bracket_the_suggestion_and_include_3e_4():
    assert grid_rates(1e-3) == [3e-4, 1e-3, 3e-3]  # 3.3e-4 is within 25% of 3e-4: kept once
    assert grid_rates(1e-2) == [3e-4, 3.3e-3, 1e-2, 3e-2]


def test_sweep_lr_command_writes_results_and_plots(tmp_path, small_corpus, capsys):
    out = tmp_path / "sweep"
    rc = main(["lr", "--preset", "tiny", "--data", str(small_corpus), *SMALL, "--steps", "40", "--max-lr", "10",
               "--grid-steps", "8", "--grid", "3e-4,3e-3", "--out", str(out)])
    assert rc == 0
    text = capsys.readouterr().out
    assert "suggested learning rate" in text and "| learning rate | final val loss |" in text
    res = json.loads((out / "lr_range.json").read_text())
    assert res["weights_untouched"] is True
    assert res["suggested_lr"] == pytest.approx(res["lr_min_loss"] / 10)
    grid = json.loads((out / "grid.json").read_text())
    assert [r["lr"] for r in grid["rows"]] == [3e-4, 3e-3]
    assert all(math.isfinite(r["val_loss"]) for r in grid["rows"])
    assert grid["best_lr"] == min(grid["rows"], key=lambda r: r["val_loss"])["lr"]
    for png in ("lr_range.png", "grid.png"):
        assert (out / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # each grid rate is a normal run folder, trained with that rate
    for lr in ("0.0003", "0.003"):
        assert json.loads((out / "grid" / f"lr_{lr}" / "config.json").read_text())["train"]["lr"] == float(lr)
    assert main(["lr", "--preset", "tiny", "--out", str(out)]) == 2  # a non-empty --out needs --overwrite
