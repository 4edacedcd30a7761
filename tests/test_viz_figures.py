"""Each figure: the right number of panels, labelled axes, not blank; files written; clear errors."""

import json
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from scratchlm.cli import main
from scratchlm.config import build_config, to_dict
from scratchlm.model import GPT
from scratchlm.tokenizer.char import CharTokenizer
from scratchlm.viz import figures
from scratchlm.viz.capture import token_labels
from scratchlm.viz.live import induction_ids
from scratchlm.viz.snapshots import load_snapshots, measure, save_snapshot
from scratchlm.viz.style import panels, pixels

TEXT = "ROMEO: But soft, what light through yonder window breaks?\nIt is the east, and Juliet is the sun.\n"
PROMPT = "ROMEO: But soft, what light"


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A small untrained model with a character tokenizer, a run folder with metrics and 3 snapshots."""
    run_dir = tmp_path_factory.mktemp("run")
    tok = CharTokenizer.train(TEXT)
    cfg = build_config(overrides={"data.tokenizer": "char", "model.vocab_size": tok.vocab_size, "model.n_layer": 2,
                                  "model.n_head": 2, "model.n_embd": 16, "model.block_size": 32})
    torch.manual_seed(0)
    model = GPT(cfg.model).eval()
    (run_dir / "config.json").write_text(json.dumps(to_dict(cfg)))
    lines = [{"step": s, "loss": 4 - s / 10, "lr": 1e-3, "grad_norm": 1.0 / s, "tokens_per_s": 1000.0 + s}
             for s in range(1, 31)]
    lines += [{"event": "eval", "step": s, "val_loss": 4 - s / 12, "val_bpb": 5 - s / 10} for s in (10, 20, 30)]
    (run_dir / "metrics.jsonl").write_text("\n".join(json.dumps(r) for r in lines) + "\n")
    (run_dir / "diagnostics.jsonl").write_text(json.dumps(
        {"kind": "finding", "key": "spike", "symptom": "loss spikes", "step": 12, "evidence": "", "cause": "",
         "fix": "", "numbers": {}}) + "\n")
    probe = tok.encode(PROMPT)[:12]
    ind = induction_ids(tok, tok.vocab_size, 32, 8)
    for step in (0, 10, 20):
        with torch.no_grad():  # the model changes a little between snapshots
            for p in model.parameters():
                p.add_(torch.randn_like(p) * 0.05)
        save_snapshot(run_dir, step, measure(model, probe, ind), probe, token_labels(tok, probe), ind,
                      float("nan") if step == 0 else 3.0 - step / 20)
    return SimpleNamespace(model=model, tokenizer=tok, config=cfg, run_dir=run_dir, checkpoint=None)


def check(fig, n_panels):
    """n panels (colour bars aside), each with a title or labelled axes, and a picture that is not blank."""
    got = panels(fig)
    assert len(got) == n_panels, f"{len(got)} panels, expected {n_panels}"
    for ax in got:
        if ax.axison:
            assert ax.get_title() or ax.get_xlabel() or ax.get_ylabel(), "a panel without title or labels"
    assert fig._suptitle is not None and fig._suptitle.get_text()
    img = pixels(fig)[..., :3].astype(float)
    assert img.std() > 10, "the figure looks blank"
    import matplotlib.pyplot as plt

    plt.close(fig)


def test_qkv_figures(run):
    w = figures.walkthrough(run, PROMPT, layer=1, head=1)
    assert w.X.shape == (len(PROMPT), 16) and w.Q.shape == (len(PROMPT), 8)
    check(figures.make_qkv_projections(w, "run x"), 4)
    fig = figures.make_qkv_attention(w, "run x")
    for ax in panels(fig):
        assert ax.get_xlabel() and ax.get_ylabel()
    check(fig, 4)
    check(figures.make_qkv_cube(w, "run x"), 3)


def test_attention_grid(run):
    from scratchlm.viz.capture import attention_maps

    ids = run.tokenizer.encode(PROMPT)
    fig = figures.make_attention_grid(attention_maps(run.model, ids), token_labels(run.tokenizer, ids), "t")
    check(fig, 2 * 2)


def test_evolution_figures(run):
    snaps = load_snapshots(run.run_dir)
    assert list(snaps.steps) == [0, 10, 20]
    check(figures.make_filmstrip(snaps, "t"), 3)  # one frame per snapshot
    check(figures.make_metrics_heatmaps(snaps, "t"), 4)


def test_curves_mark_findings(run):
    rec = figures.read_curves(run.run_dir)
    rec["run_dir"] = str(run.run_dir)
    fig = figures.make_curves(rec, "t")
    text = " ".join(t.get_text() for t in fig.axes[5].texts)
    assert "step 12: loss spikes" in text
    check(fig, 6)


def test_sampling_figure(run):
    logits = figures.next_token_logits(run, PROMPT)
    labels = token_labels(run.tokenizer, range(logits.numel()))
    fig = figures.make_sampling(logits, labels, (0.5, 1.0, 2.0), top_k=5, top_p=0.5, title="t")
    check(fig, 3 * 2)  # a probability axis and a cumulative axis per temperature


def test_tokens_figure(run):
    check(figures.make_tokens(run.tokenizer, TEXT, "t"), 1)
    with pytest.raises(Exception, match="empty"):
        figures.make_tokens(run.tokenizer, "", "t")


def test_files_written(run, tmp_path):
    paths = figures.curves(run.run_dir, tmp_path)
    assert sorted(p.name for p in paths) == ["curves.png", "curves.svg"]
    assert all(p.stat().st_size > 1000 for p in paths)
    paths = figures.evolution(run.run_dir, tmp_path)
    assert {p.name for p in paths} >= {"attention_filmstrip.png", "attention_metrics.svg", "attention_evolution.gif"}
    from PIL import Image

    with Image.open(tmp_path / "attention_evolution.gif") as gif:
        assert gif.n_frames == 3


def test_snapshot_files_have_the_expected_shapes(run):
    f = np.load(run.run_dir / "attention" / "step_0000010.npz", allow_pickle=False)
    T = 12
    assert f["maps"].shape == (2, 2, T, T) and f["maps"].dtype == np.float16
    assert f["ids"].shape == (T,) and f["tokens"].shape == (T,) and f["induction_ids"].shape == (16,)
    for k in ("entropy", "prev_token", "first_token", "induction"):
        assert f[k].shape == (2, 2) and np.all((f[k] >= 0) & (f[k] <= 1))
    assert int(f["step"]) == 10


def test_evolution_without_snapshots_is_a_one_line_error(tmp_path, capsys):
    (tmp_path / "config.json").write_text("{}")
    assert main(["viz", "evolution", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "no attention snapshots" in err and "\n" not in err


def test_cli_bad_input(tmp_path, capsys):
    assert main(["viz", "curves", str(tmp_path / "nope")]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert main(["viz", "tokens", str(tmp_path), "--text", "hi"]) == 2
    assert "tokenizer.json" in capsys.readouterr().err
