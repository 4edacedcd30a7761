"""`scratchlm ablate`: the baseline and each change trained for the same time; a table, CSV, JSON and a plot."""

import csv
import json
import math

import pytest

import scratchlm.ablate as ablate
from scratchlm.cli import main
from scratchlm.config import build_config
from scratchlm.errors import ScratchLMError

SMALL = ["--preset", "tiny", "--data.tokenizer", "char", "--model.n_layer", "1", "--model.n_embd", "32",
         "--model.block_size", "32", "--train.batch_size", "8", "--train.eval_tokens", "256"]


def test_parse_change():
    assert ablate.parse_change("norm=rmsnorm") == {"model.norm": "rmsnorm"}
    assert ablate.parse_change("model.mlp=swiglu, train.lr=1e-3") == {"model.mlp": "swiglu", "train.lr": "1e-3"}
    assert ablate.label({"model.mlp": "swiglu", "train.lr": "1e-3"}) == "mlp=swiglu, train.lr=1e-3"
    with pytest.raises(ScratchLMError, match="KEY=VALUE"):
        ablate.parse_change("rmsnorm")


def test_every_change_is_checked_before_anything_trains():
    cfg = build_config("tiny")
    with pytest.raises(ScratchLMError) as e:
        ablate.plan(cfg, ["norm=rmsnorm", "norm=batchnorm"], budget=1)
    assert "norm=batchnorm" in str(e.value) and "layernorm, rmsnorm" in str(e.value) and "\n" not in str(e.value)
    with pytest.raises(ScratchLMError, match="did you mean"):
        ablate.plan(cfg, ["model.nrom=rmsnorm"], budget=1)
    with pytest.raises(ScratchLMError, match="budget"):
        ablate.plan(cfg, [], budget=0)


def test_plan_gives_every_run_the_same_budget_seed_and_data():
    cfg = build_config("tiny", overrides=["train.seed=5"])
    runs = ablate.plan(cfg, ["norm=rmsnorm", "position=rope"], budget=7, lrs=[1e-3, 3e-3])
    assert [(r["change"], r["lr"]) for r in runs] == [
        ("baseline", 1e-3), ("norm=rmsnorm", 1e-3), ("position=rope", 1e-3),
        ("baseline", 3e-3), ("norm=rmsnorm", 3e-3), ("position=rope", 3e-3)]
    for r in runs:
        c = r["config"]
        assert (c.train.max_time, c.train.seed, c.data.path, c.train.lr) == (7.0, 5, cfg.data.path, r["lr"])
    assert runs[1]["config"].model.norm == "rmsnorm" and runs[2]["config"].model.position == "rope"
    assert len({r["name"] for r in runs}) == len(runs)  # one run folder each


def test_ablate_command_trains_prints_and_writes(tmp_path, small_corpus, capsys):
    out = tmp_path / "abl"
    rc = main(["ablate", *SMALL, "--data", str(small_corpus), "--budget", "1", "--change", "norm=rmsnorm",
               "--out", str(out)])
    assert rc == 0
    text = capsys.readouterr().out
    assert "| change | parameters | tokens/s | val loss | bits per byte | Δ bpb vs baseline | diverged |" in text
    assert "| baseline |" in text and "| norm=rmsnorm |" in text
    with open(out / "ablation.csv", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    assert [r["change"] for r in rows] == ["baseline", "norm=rmsnorm"]
    for r in rows:
        assert r["diverged"] == "False" and int(r["steps"]) > 0 and float(r["tokens_per_s"]) > 0
        assert 0 < float(r["val_bpb"]) < 10 and int(r["parameters"]) > 0
    assert float(rows[0]["delta_bpb"]) == 0.0
    assert math.isclose(float(rows[1]["delta_bpb"]), float(rows[1]["val_bpb"]) - float(rows[0]["val_bpb"]))
    data = json.loads((out / "ablation.json").read_text())
    assert data["budget"] == 1.0 and data["command"].startswith("scratchlm ablate") and len(data["rows"]) == 2
    assert (out / "ablation.png").stat().st_size > 1000
    assert (out / "runs" / "norm=rmsnorm" / "checkpoints" / "final").is_dir()  # a run folder to sample from
    # a non-empty --out is refused without --overwrite
    assert main(["ablate", *SMALL, "--data", str(small_corpus), "--budget", "1", "--out", str(out)]) == 2


def test_a_diverged_run_is_a_row_not_an_error(tmp_path, monkeypatch):
    def guard_gives_up(cfg, out, **kw):
        raise ScratchLMError("the loss is NaN and rolling back did not help")

    monkeypatch.setattr(ablate, "run_training", guard_gives_up)
    rows = ablate.run_ablation(build_config("tiny"), ["norm_position=post"], budget=1, out=tmp_path)
    assert [r["diverged"] for r in rows] == [True, True] and "NaN" in rows[1]["error"]
    assert "| baseline | " in ablate.table(rows) and "| yes |" in ablate.table(rows)
    paths = ablate.write_results(rows, tmp_path)
    assert json.loads((tmp_path / "ablation.json").read_text())["rows"][0]["val_bpb"] is None  # NaN -> null
    assert tmp_path / "ablation.png" in paths


@pytest.mark.slow
def test_learning_rate_axis(tmp_path, small_corpus, capsys):
    out = tmp_path / "abl"
    assert main(["ablate", *SMALL, "--data", str(small_corpus), "--budget", "1", "--change", "norm_position=post",
                 "--lrs", "1e-3,1e-2", "--out", str(out)]) == 0
    rows = json.loads((out / "ablation.json").read_text())["rows"]
    assert [(r["change"], r["lr"]) for r in rows] == [("baseline", 1e-3), ("norm_position=post", 1e-3),
                                                      ("baseline", 1e-2), ("norm_position=post", 1e-2)]
    assert "| lr |" in capsys.readouterr().out.replace("| change | lr |", "| lr |")
