"""The per-emotion table end to end on JAFFE (skipped without it): a CNN from scratch and the
same CNN started from a GASA encoder, per-class accuracy records, the transposed layout."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from evalkit.benchmarks import load_benchmark
from evalkit.report import build_table, to_latex, to_markdown
from evalkit.results import ResultStore
from evalkit.runner import RunOptions, run_benchmark
from helpers import real_data_dir


def _data_dir() -> str:
    return real_data_dir("jaffe", "JAFFE")


CLASSES = ["angry", "disgust", "fear", "happy", "neutral", "sad", "surprise"]
SPEC = """
name = "tinyemo"
title = "Tiny emotion"
metric = "emotion"
higher_is_better = true
pm_over = "seeds"
digits = 1
transpose = "Emotion"
source = "evalkit tests"

[protocol]
size = 32
""" + "".join(f'''
[[columns]]
id = "{c}"
label = "{c}"
source = "jaffe"
field = "details.per_class.{c}"
''' for c in CLASSES) + """
[[columns]]
id = "jaffe"
label = "Mean"
dataset = "jaffe"

[[rows]]
id = "cnn"
label = "CNN"
model = "emotion_cnn"
[rows.train]
epochs = 2
batch_size = 32
[rows.model_kwargs]
channels = [4, 8]
fc = 16

[[rows]]
id = "cnn-gasa"
label = "CNN + GASA"
model = "emotion_cnn"
pipeline = "gasa-pretrained"
pipeline_kwargs = { model = "gasa", task = "pose-jaffe", epochs = 2, batch_size = 32, model_kwargs = { channels = [4, 8], block_epochs = 1, finetune_epochs = 0, d_channels = [4] } }
[rows.train]
epochs = 2
batch_size = 32
[rows.model_kwargs]
channels = [4, 8]
fc = 16
"""


def test_emotion_cells_pretraining_and_transposed_report(tmp_path):
    data_dir = _data_dir()
    p = tmp_path / "tinyemo.toml"
    p.write_text(SPEC)
    bench = load_benchmark(str(p))
    opts = RunOptions(seeds=(0,), results_dir=tmp_path / "res", cache_dir=tmp_path / "cache", data_dir=data_dir, progress=False)
    recs = {r["row"]: r for r in run_benchmark(bench, opts=opts, log=lambda s: None)}
    assert set(recs) == {"cnn", "cnn-gasa"}
    d = recs["cnn"]["details"]
    assert d["classes"] == CLASSES and d["n_test"] == 44 and sum(map(sum, d["confusion"])) == 44
    assert recs["cnn"]["value"] == pytest.approx(sum(d["per_class"].values()) / 7)
    pre = recs["cnn-gasa"]["train"]["pretrain"]
    assert pre["model"] == "gasa" and pre["task"] == "pose-jaffe" and Path(pre["checkpoint"]).exists()
    # a run shared with the gasa-reconstruction table: every epoch's snapshot is kept for its timing curve
    assert sorted(p.name for p in Path(pre["checkpoint"]).parent.glob("epoch_*.pt")) == ["epoch_1.pt", "epoch_2.pt"]
    # the pre-trained classifier's trunk started from the GASA encoder
    from evalkit.checkpoints import load_evalkit_checkpoint

    gasa = load_evalkit_checkpoint(pre["checkpoint"], torch.device("cpu")).model
    cnn = load_evalkit_checkpoint(recs["cnn-gasa"]["checkpoint"]["path"], torch.device("cpu")).model
    assert cnn.hparams["encoder_checkpoint"] == pre["checkpoint"] and gasa.hparams["channels"] == [4, 8]
    scratch = load_evalkit_checkpoint(recs["cnn"]["checkpoint"]["path"], torch.device("cpu")).model
    assert scratch.hparams.get("encoder_checkpoint") is None
    table = build_table(bench, ResultStore(tmp_path / "res").records("tinyemo"))
    assert [r[1] for r in table.rows] == CLASSES + ["Mean"] and [c[1] for c in table.columns] == ["CNN", "CNN + GASA"]
    md = to_markdown(table)
    assert "| Emotion | CNN | CNN + GASA |" in md and "per row in bold" in md
    assert "Emotion & CNN & CNN + GASA" in to_latex(table)


def test_eval_emotion_cli_scores_a_user_classifier(tmp_path, monkeypatch):
    data_dir = _data_dir()
    import json

    from click.testing import CliRunner

    from evalkit.cli import main

    (tmp_path / "emo_user.py").write_text(
        "import torch\n"
        "class AlwaysHappy(torch.nn.Module):\n"
        "    def predict_logits(self, x):\n"
        "        out = torch.zeros(len(x), 7)\n"
        "        out[:, 3] = 1.0\n"
        "        return out\n"
        "def build():\n"
        "    return AlwaysHappy()\n"
        "def build_six():\n"
        "    m = AlwaysHappy()\n"
        "    m.predict_logits = lambda x: torch.zeros(len(x), 6)\n"
        "    return m\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    r = CliRunner().invoke(main, ["eval", "emotion", "--model", "emo_user:build", "--random-init", "--dataset", "jaffe", "--data-dir", data_dir, "--json"])
    assert r.exit_code == 0, r.output
    out = json.loads(r.output)
    per = out["details"]["per_class"]
    assert per["happy"] == 100.0 and all(v == 0.0 for c, v in per.items() if c != "happy")
    assert out["value"] == pytest.approx(100 / 7)
    r = CliRunner().invoke(main, ["eval", "emotion", "--model", "emo_user:build_six", "--random-init", "--dataset", "jaffe", "--data-dir", data_dir])
    assert r.exit_code == 2 and "7 classes" in r.output
