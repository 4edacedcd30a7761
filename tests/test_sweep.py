"""`scratchlm sweep lr`: the range test leaves the model alone, ramps the rate exponentially,
smooths and stops on blow-up; the grid trains each rate and reports the validation losses."""

import json
import math

import pytest
import torch

from scratchlm.model import GPT, GPTConfig
from scratchlm.cli import main as scratchlm_main
from scratchlm.sweep import grid_rates, lr_range_test


def main(argv):
    return scratchlm_main(["sweep", *argv])

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
    # a ramp to lr 100 stops before the end (NaN or blow-up; the blow-up rule alone is tested below)
    assert res["steps_run"] < 80 and ("blew up" in res["stopped"] or "became" in res["stopped"])
    # bias-corrected exponential moving average of the raw losses
    avg = 0.0
    for i, (loss, s) in enumerate(zip(res["losses"], res["smoothed"])):
        avg = 0.9 * avg + 0.1 * loss
        assert s == pytest.approx(avg / (1 - 0.9 ** (i + 1)))
    i_min = res["smoothed"].index(min(res["smoothed"]))
    assert res["lr_min_loss"] == lrs[i_min] and res["suggested_lr"] == pytest.approx(lrs[i_min] / 10)
    assert res["min_smoothed_loss"] < res["smoothed"][0] - 0.5  # it did learn the pattern on the way


class Bowl(torch.nn.Module):
    """loss = 1 + mean(w²): finite at any step size, so only the smoothed blow-up rule can stop
    the ramp. Adam moves each weight by about lr per step: once lr passes ~1 the steps overshoot
    the bottom by more and more, and the loss climbs (to ~lr², never to inf)."""

    def __init__(self):
        super().__init__()
        self.w = torch.nn.Parameter(torch.ones(4, 4))

    def forward(self, x, y):
        return None, 1 + (self.w ** 2).mean()


def test_range_test_stops_on_a_finite_blow_up_of_the_smoothed_loss():
    res = lr_range_test(Bowl(), lambda i: (None, None), steps=60, min_lr=1e-3, max_lr=1e3, grad_clip=0.0)
    assert all(math.isfinite(x) for x in res["losses"])  # no NaN: the stop comes from the smoothed loss alone
    assert res["stopped"].startswith("smoothed loss blew up") and res["steps_run"] < 60
    first, best, last = res["smoothed"][0], res["min_smoothed_loss"], res["smoothed"][-1]
    assert best < first - 0.2 and last > best + (first - best) / 2  # back more than halfway up to the start


def test_grid_rates_bracket_the_suggestion_and_include_3e_4():
    assert grid_rates(1e-3) == [3e-4, 1e-3, 3e-3]  # 3.3e-4 is within 25% of 3e-4: kept once
    assert grid_rates(1e-2) == [3e-4, 3.3e-3, 1e-2, 3e-2]


def test_sweep_lr_command_writes_results_and_plots(tmp_path, small_corpus, capsys):
    out = tmp_path / "sweep"
    rc = main(["lr", "--preset", "tiny", "--data", str(small_corpus), *SMALL, "--steps", "40", "--max-lr", "10",
               "--grid-steps", "8", "--out", str(out)])  # the automatic grid around the suggestion
    assert rc == 0
    text = capsys.readouterr().out
    assert "suggested learning rate" in text and "| learning rate | final val loss |" in text
    res = json.loads((out / "lr_range.json").read_text())
    assert res["weights_untouched"] is True
    assert res["suggested_lr"] == pytest.approx(res["lr_min_loss"] / 10)
    grid = json.loads((out / "grid.json").read_text())
    assert [r["lr"] for r in grid["rows"]] == grid_rates(res["suggested_lr"])
    assert all(math.isfinite(r["val_loss"]) and not r["diverged"] for r in grid["rows"])
    assert grid["best_lr"] == min(grid["rows"], key=lambda r: r["val_loss"])["lr"]
    for png in ("lr_range.png", "grid.png"):
        assert (out / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # each grid rate is a normal run folder, trained with that rate
    for r in grid["rows"]:
        assert json.loads((out / "grid" / f"lr_{r['lr']:.2g}" / "config.json").read_text())["train"]["lr"] == r["lr"]
    assert main(["lr", "--preset", "tiny", "--out", str(out)]) == 2  # a non-empty --out needs --overwrite


def test_a_diverging_rate_is_recorded_and_the_grid_goes_on(tmp_path, small_corpus, capsys):
    out = tmp_path / "sweep"
    # lr 10 (the most validation allows) without clipping: the loss ends far above a uniform guess
    rc = main(["lr", "--preset", "tiny", "--data", str(small_corpus), *SMALL, "--steps", "5", "--grid-steps", "6",
               "--grid", "10,3e-3", "--train.grad_clip", "0", "--train.guard_max_bad", "1", "--out", str(out)])
    assert rc == 0
    text = capsys.readouterr().out
    assert "| 10 | diverged | diverged |" in text and "best: lr 0.003" in text
    huge, ok = json.loads((out / "grid.json").read_text())["rows"]
    assert huge["diverged"] is True  # lr 10 ends far above ln(V): worse than guessing
    assert ok["diverged"] is False and math.isfinite(ok["val_loss"])
    assert (out / "grid.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

