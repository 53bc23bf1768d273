"""Semi-supervised and clustering protocols: labelled subsets, the runner's training data,
evaluators, derived report columns, and the ``evalkit eval`` / ``evalkit data subset`` commands."""
from __future__ import annotations

import textwrap

import numpy as np
import pytest
import torch
from click.testing import CliRunner

import evalkit.training as training
from evalkit.benchmarks import load_benchmark
from evalkit.cli import main
from evalkit.data import DataError, labelled_subset, load, masked_labels, subset_fingerprint
from evalkit.protocols.clustering import KMeansClusterer, evaluate_clusterer
from evalkit.protocols.semi_supervised import evaluate_classifier
from evalkit.report import build_table, to_markdown
from evalkit.results import ResultStore
from evalkit.runner import RunOptions, run_benchmark


def cli(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def ok(result):
    assert result.exit_code == 0, f"exit {result.exit_code}\n{result.output}\n{result.exception!r}"
    return result


# ----------------------------------------------------------------------------- labelled subsets
def test_labelled_subset_is_class_balanced_seeded_and_from_the_given_split():
    y = np.asarray(load("digits", "train").labels)
    a = labelled_subset(y, 50, seed=0)
    assert a.size == 50 and np.all(np.bincount(y[a], minlength=10) == 5)
    assert np.array_equal(a, labelled_subset(y, 50, seed=0))
    assert not np.array_equal(a, labelled_subset(y, 50, seed=1))
    assert a.min() >= 0 and a.max() < y.size and np.unique(a).size == a.size
    assert np.array_equal(labelled_subset(y, 0, seed=3), np.arange(y.size))
    odd = labelled_subset(y, 25, seed=0)  # Odena's 25 labels: 2 or 3 per class
    counts = np.bincount(y[odd], minlength=10)
    assert odd.size == 25 and counts.min() == 2 and counts.max() == 3
    with pytest.raises(DataError, match="class .* has only"):
        labelled_subset(np.array([0] * 50 + [1] * 3), 10, seed=0)
    m = masked_labels(y, a)
    assert np.array_equal(m[a], y[a]) and np.all(np.delete(m, a) == -1)
    assert subset_fingerprint(a) == subset_fingerprint(a.copy()) != subset_fingerprint(odd)


SEMI_TOML = """
name = "tinysemi"
title = "Tiny semi-supervised (%)"
metric = "semi-supervised"
higher_is_better = false
pm_over = "seeds"
digits = 2
source = "evalkit tests"
default_columns = ["d50", "dall"]

[protocol]
train_split = "train"
test_split = "test"
n_classes = 10

[[columns]]
id = "d50"
label = "digits (50)"
dataset = "digits"
[columns.protocol]
n_labels = 50

[[columns]]
id = "dall"
label = "digits (all)"
dataset = "digits"
[columns.protocol]
n_labels = 0

[[columns]]
id = "missing"
label = "nowhere (50)"
dataset = "digits"
empty_note = "How to run it."

[[rows]]
id = "nn"
label = "NN"
model = "mlp_classifier"
published = { d50 = [20.0] }
skip_columns = { dall = "Not this one." }
[rows.train]
epochs = 2
batch_size = 50
[rows.model_kwargs]
hidden = [32]
batch_size = 50
"""


def _spec(tmp_path, text, name):
    p = tmp_path / f"{name}.toml"
    p.write_text(text)
    return load_benchmark(str(p))


def test_runner_trains_on_the_masked_training_split_only(tmp_path, monkeypatch):
    """The model sees the training split's images with every label outside the seeded,
    class-balanced subset set to -1; no test (or validation) image is among them."""
    seen = []
    real_fit = training.fit

    def spy(model, images, labels, cfg, *a, **kw):
        seen.append((images.clone(), labels.clone(), cfg.seed))
        return real_fit(model, images, labels, cfg, *a, **kw)

    monkeypatch.setattr(training, "fit", spy)
    bench = _spec(tmp_path, SEMI_TOML, "tinysemi")
    opts = RunOptions(seeds=(0, 1), results_dir=tmp_path / "res", cache_dir=tmp_path / "cache", progress=False)
    recs = run_benchmark(bench, opts=opts, log=lambda s: None)
    assert sorted((r["column"], r["seed"]) for r in recs) == [("d50", 0), ("d50", 1)]  # dall skipped for this row
    train, test, valid = (load("digits", s) for s in ("train", "test", "valid"))
    y_true = np.asarray(train.labels)
    held_out = {x.tobytes() for x in np.concatenate([test.images, valid.images])}
    for images, labels, seed in seen:
        assert torch.equal(images, train.tensor())
        assert not any(x.tobytes() in held_out for x in train.images)
        keep = np.flatnonzero(labels.numpy() >= 0)
        assert np.array_equal(keep, labelled_subset(y_true, 50, seed=seed))
        assert np.array_equal(labels.numpy()[keep], y_true[keep])
    assert {r["details"]["labelled_subset"] for r in recs} == {subset_fingerprint(labelled_subset(y_true, 50, s)) for s in (0, 1)}
    for r in recs:
        assert 0.0 <= r["value"] <= 100.0 and r["details"]["n_labels"] == 50
        assert abs(r["value"] - 100 * r["details"]["error"]) < 1e-9
    # the report: mean ± std over the two seeds, the skip and empty-column notes
    table = build_table(bench, ResultStore(tmp_path / "res").records("tinysemi"))
    cell = table.rows[0][2][0]
    vals = [r["value"] for r in recs]
    assert cell.reproduced == f"{np.mean(vals):.2f} ± {np.std(vals, ddof=1):.2f}"
    md = to_markdown(table)
    assert "Not this one." in md and "How to run it." in md and "mean ± standard deviation over seeds" in md


def test_semi_supervised_models_with_different_subsets_do_not_share_a_cache(tmp_path):
    bench = _spec(tmp_path, SEMI_TOML, "tinysemi")
    opts = RunOptions(seeds=(0,), results_dir=tmp_path / "res", cache_dir=tmp_path / "cache", progress=False)
    run_benchmark(bench, columns=["d50"], opts=opts, log=lambda s: None)
    bench.columns[0].protocol["n_labels"] = 100
    run_benchmark(bench, columns=["d50"], opts=opts, log=lambda s: None)
    runs = list((tmp_path / "cache" / "runs").glob("mlp_classifier-*"))
    assert len(runs) == 2


CLUSTER_TOML = """
name = "tinyclu"
title = "Tiny clustering (%)"
metric = "clustering"
higher_is_better = false
pm_over = "seeds"
source = "evalkit tests"
default_columns = ["err", "hung", "nmi"]

[protocol]
valid_split = "valid"

[[columns]]
id = "err"
label = "error"
dataset = "digits"

[[columns]]
id = "hung"
label = "Hungarian"
source = "err"
field = "details.hungarian_accuracy_pct"
higher_is_better = true

[[columns]]
id = "nmi"
label = "NMI"
source = "err"
field = "details.nmi"
higher_is_better = true

[[rows]]
id = "km"
label = "k-means pixels"
pipeline = "kmeans-on-pixels"
[rows.pipeline_kwargs]
n_clusters = 12

[[rows]]
id = "km4"
label = "k-means pixels, 4"
pipeline = "kmeans-on-pixels"
[rows.pipeline_kwargs]
n_clusters = 4
"""


def test_clustering_runner_and_derived_columns(tmp_path):
    bench = _spec(tmp_path, CLUSTER_TOML, "tinyclu")
    opts = RunOptions(seeds=(0,), results_dir=tmp_path / "res", cache_dir=tmp_path / "cache", progress=False)
    recs = run_benchmark(bench, opts=opts, log=lambda s: None)
    assert sorted(r["row"] for r in recs) == ["km", "km4"] and {r["column"] for r in recs} == {"err"}
    by = {r["row"]: r for r in recs}
    # 12 clusters on digits separate the classes far better than 4 can (4 clusters: >= 60% error)
    assert by["km"]["value"] < 40.0 and by["km4"]["value"] >= 60.0
    assert by["km"]["details"]["n_clusters"] == 12 and by["km"]["details"]["reference"] == "validation"
    table = build_table(bench, ResultStore(tmp_path / "res").records("tinyclu"))
    rows = {rid: cells for rid, _, cells in table.rows}
    assert rows["km"][1].reproduced == f"{by['km']['details']['hungarian_accuracy_pct']:.1f}"
    assert rows["km"][0].best and rows["km"][2].best  # lower error, higher NMI
    assert len(table.provenance) == 2  # derived columns add no provenance lines
    md = to_markdown(table)
    assert "| Model | error | Hungarian | NMI |" in md  # no published values anywhere: no paper sub-columns


def test_kmeans_clusterer_probs_are_softmax_of_distances():
    x = torch.tensor([[0.0], [0.1], [5.0], [5.2]]).view(4, 1, 1, 1)
    km = KMeansClusterer(2, seed=0).fit(x)
    p = km.cluster_probs(x).numpy()
    assert p.shape == (4, 2) and np.allclose(p.sum(1), 1)
    assert p[0].argmax() == p[1].argmax() != p[2].argmax() == p[3].argmax()


# ----------------------------------------------------------------------------- user models
USER_CLASSIFIERS = '''
import torch
from torch import nn


class Oracle(nn.Module):
    """Predicts the label of a digits image by nearest class mean (fitted in the factory)."""

    def __init__(self, means):
        super().__init__()
        self.register_buffer("means", means)

    def predict_logits(self, x):
        return -torch.cdist(x.flatten(1), self.means)

    def cluster_probs(self, x):
        return torch.softmax(self.predict_logits(x) * 10, 1)


def build():
    from evalkit.data import load
    d = load("digits", "train")
    x, y = d.tensor().flatten(1), torch.as_tensor(d.labels.copy())
    return Oracle(torch.stack([x[y == k].mean(0) for k in range(10)]))


def build_nan():
    m = build()
    m.means[0, 0] = float("nan")
    return m


class Nothing(nn.Module):
    pass


def build_nothing():
    return Nothing()
'''


@pytest.fixture
def classifiers(tmp_path, monkeypatch):
    (tmp_path / "userclf.py").write_text(textwrap.dedent(USER_CLASSIFIERS))
    monkeypatch.syspath_prepend(str(tmp_path))
    return "userclf"


def test_eval_semi_supervised_and_clustering_of_a_user_model(classifiers):
    r = ok(cli("eval", "semi-supervised", "--model", f"{classifiers}:build", "--random-init", "--labels", 50, "--dataset", "digits", "--json"))
    import json

    out = json.loads(r.output)
    model = __import__(classifiers).build()
    test = load("digits", "test")
    pred = model.predict_logits(test.tensor()).argmax(1).numpy()
    assert out["value"] == pytest.approx(100 * np.mean(pred != np.asarray(test.labels)))
    assert out["details"]["n_labels"] == 50
    r = ok(cli("eval", "clustering", "--model", f"{classifiers}:build", "--random-init", "--dataset", "digits"))
    assert "cluster-assignment error on digits test" in r.output and "Hungarian" in r.output


@pytest.mark.parametrize(
    "factory, command, needle",
    [("build_nothing", "semi-supervised", "predict_logits"), ("build_nothing", "clustering", "cluster_probs"), ("build_nan", "semi-supervised", "NaN")],
)
def test_eval_bad_user_models_fail_clearly(classifiers, factory, command, needle):
    extra = ["--labels", 50] if command == "semi-supervised" else []
    r = cli("eval", command, "--model", f"{classifiers}:{factory}", "--random-init", "--dataset", "digits", *extra)
    assert r.exit_code == 2 and needle in r.output and "Traceback" not in r.output


def test_data_subset_command(tmp_path):
    out = tmp_path / "idx.npy"
    r = ok(cli("data", "subset", "digits", "--labels", 50, "--seed", 2, "--out", out))
    y = np.asarray(load("digits", "train").labels)
    assert np.array_equal(np.load(out), labelled_subset(y, 50, seed=2)) and "50 indices" in r.output
    r = cli("data", "subset", "digits", "--labels", 99999)
    assert r.exit_code == 2 and "n_labels=99999" in r.output


def test_evaluate_classifier_checks_output_shape():
    class Bad(torch.nn.Module):
        def predict_logits(self, x):
            return torch.zeros(x.shape[0], 3)

    with pytest.raises(Exception, match="10 classes"):
        evaluate_classifier(Bad(), dataset="digits", protocol={"n_classes": 10})


def test_evaluate_clusterer_with_a_perfect_clusterer_has_zero_error():
    class Perfect(torch.nn.Module):
        """Clusters by the true label, found by looking the image up in the data set."""

        def __init__(self):
            super().__init__()
            self.table = {}
            for s in ("valid", "test"):
                d = load("digits", s)
                for img, lab in zip(d.images, d.labels):
                    self.table[img.tobytes()] = int(lab)

        def cluster_probs(self, x):
            imgs = (x * 255).round().to(torch.uint8).numpy()
            return torch.nn.functional.one_hot(torch.tensor([self.table[i.tobytes()] for i in imgs]), 10).float()

    m = evaluate_clusterer(Perfect(), dataset="digits", protocol={})
    assert m.value == 0.0 and m.details["hungarian_accuracy"] == 1.0


FIG_TOML = SEMI_TOML.replace('''[[rows]]
id = "nn"''', '''[[rows]]
id = "dimred"
label = "AAE 2-D"
model = "aae_dimred"
skip_columns = { dall = "" }
[rows.train]
epochs = 1
batch_size = 100
[rows.model_kwargs]
hidden = [16]
disc_hidden = [16]
optimizer = "adam"

[[rows]]
id = "sup"
label = "Supervised AAE"
model = "aae_supervised"
figure_only = true
skip_columns = { d50 = "" }
[rows.train]
epochs = 1
batch_size = 100
[rows.model_kwargs]
hidden = [16]
disc_hidden = [16]
z_dim = 2

[[rows]]
id = "nn"''')


def test_report_figures_scatter_style_and_samples(tmp_path):
    from evalkit.report import write_report

    bench = _spec(tmp_path, FIG_TOML, "tinysemi")
    opts = RunOptions(seeds=(0,), results_dir=tmp_path / "res", cache_dir=tmp_path / "cache", progress=False)
    recs = run_benchmark(bench, rows=["dimred", "sup"], opts=opts, log=lambda s: None)
    by = {r["row"]: r for r in recs}
    assert by["sup"]["value"] is None and by["sup"]["column"] == "dall" and by["sup"]["style_preview"]
    assert by["dimred"]["embedding_preview"] and 0 <= by["dimred"]["value"] <= 100
    written = write_report(bench, ResultStore(tmp_path / "res"), tmp_path / "rep")
    names = {p.name for p in written.values()}
    assert {"tinysemi-embedding-dimred-d50.png", "tinysemi-style-sup.png", "tinysemi-samples-dimred.png"} <= names
    md = written["md"].read_text()
    assert "| Supervised AAE" not in md and "| AAE 2-D" in md and "tinysemi-style-sup.png" in md


def test_svm_on_codes_matches_a_direct_sklearn_fit_and_checks_scaling():
    from sklearn.svm import SVC

    from evalkit.errors import EvalkitError
    from evalkit.protocols.semi_supervised import svm_on_codes

    class Pixels(torch.nn.Module):
        def encode(self, x):
            return x.flatten(1) * 3.0

    train, test = load("digits", "train"), load("digits", "test")
    keep = labelled_subset(train.labels, 100, seed=0)
    m = svm_on_codes(Pixels(), dataset="digits", protocol={}, labelled=keep)
    a = train.subset(keep).tensor().flatten(1).numpy().astype(np.float64) * 3.0
    b = test.tensor().flatten(1).numpy().astype(np.float64) * 3.0
    mu, sd = a.mean(0), a.std() + 1e-8
    pred = SVC(C=1.0, gamma="scale").fit((a - mu) / sd, np.asarray(train.labels)[keep]).predict((b - mu) / sd)
    assert m.value == pytest.approx(100 * np.mean(pred != np.asarray(test.labels)))
    assert m.value < 20 and m.details["svm"]["scaling"] == "global" and m.details["code_dim"] == 64
    with pytest.raises(EvalkitError, match="scaling"):
        svm_on_codes(Pixels(), dataset="digits", protocol={}, labelled=keep, svm={"scaling": "zscore"})


def test_published_strings_keep_the_papers_digits():
    from evalkit.report.tables import fmt_published

    assert fmt_published(["25.80"]) == "25.80" and fmt_published(["1.90", "0.10"]) == "1.90 ± 0.10"
    assert fmt_published([225, 2]) == "225 ± 2" and fmt_published([0.93, 0.065]) == "0.93 ± 0.065"
