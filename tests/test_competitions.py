"""Entering other competitions as a user does: `paddy init` then `dvc repro`, in every layout family of the
generated competition (data.synthetic.layout), and on a Paddy-shaped folder whose classes are not Paddy's. The
submission is held against its sample, and the metric the ensemble reports is recomputed here, by scikit-learn,
from submission.csv and the generated truth (slow: a DVC run each, one tiny model, one epoch)."""

import json
import shutil
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from helpers.pipeline import copy_pipeline, sh
from sklearn.metrics import accuracy_score, cohen_kappa_score, f1_score, fbeta_score, log_loss, roc_auc_score
from sklearn.preprocessing import MultiLabelBinarizer

from paddy.settings.schema import LAYOUTS, fbeta_of

pytestmark = pytest.mark.slow


def shrink(repo, **synthetic):
    """One small model (the resnet), one epoch, a few tiny images: what every family's run needs to be checked."""
    path = repo / "params.yaml"
    params = yaml.safe_load(path.read_text())
    params["models"] = {"resnet": params["models"]["resnet"]}
    params["data"]["synthetic"].update(n_train=60, n_test=12, **synthetic)
    params["report"]["top_losses"] = 2
    path.write_text(yaml.safe_dump(params, sort_keys=False))


def commit(repo):
    sh("git init -q && git add -A && git -c user.name=t -c user.email=t@t commit -qm init", repo)


def sklearn_score(metric, sub, sample, truth, comp):
    """The competition's metric of submission.csv against the truth, the way its grader computes it."""
    sent = sub.set_index(sample.columns[0]).loc[truth.image_id]
    y = truth.label.astype(str).to_numpy()
    columns = list(sample.columns[1:])
    if comp["form"] == "tags":  # the mean over images of F-beta between tag sets; none sent for none true: 1
        true, sent = truth.label.str.split(), sent[columns[0]].astype(str).str.split()
        binary = MultiLabelBinarizer(classes=sorted(set(true.sum()) | set(sent.sum()))).fit([[]])
        y, predicted = binary.transform(true), binary.transform(sent)
        return fbeta_score(y, predicted, beta=fbeta_of(metric), average="samples", zero_division=1)
    if comp["form"] == "label":
        predicted = sent[columns[0]].astype(str).to_numpy()
        if metric == "accuracy":
            return accuracy_score(y, predicted)
        if metric == "f1_micro":
            return f1_score(y, predicted, average="micro")
        if metric == "f1_macro":
            return f1_score(y, predicted, average="macro")
        assert metric == "qwk", f"no grader for {metric} on labels"
        return cohen_kappa_score(predicted.astype(int), y.astype(int), weights="quadratic")
    if comp["form"] == "probability":
        p = sent[columns[0]].astype(float).to_numpy()
        positive = y == comp["positive"]
        return roc_auc_score(positive, p) if metric == "roc_auc" else log_loss(positive, p)
    p = sent[columns].astype(float)
    onehot = pd.get_dummies(pd.Categorical(y, categories=columns)).to_numpy(int)
    if metric == "mean_roc_auc":
        return np.mean([roc_auc_score(onehot[:, k], p.iloc[:, k]) for k in range(len(columns))])
    assert metric == "log_loss", f"no grader for {metric} on probabilities"
    return log_loss(onehot, p.to_numpy())


# dog_breed's own 120 breeds need more than the 60 training images of these runs: ten of them
CLASSES = {"dog_breed": 10}
# planet is entered as a folder (planet_folder below): one run serves both, the metric's parity with scikit-learn's
# (tests/test_tags.py) needing no run of its own
LAYOUT_RUNS = [layout for layout in LAYOUTS if layout not in ("paddy", "planet")]
DIGITS = dict(zip([str(i) for i in range(10)], "zero one two three four five six seven eight nine".split()))


def digits_folder(where):
    """The regression of the issue: a Paddy-shaped folder source whose labels are zero ... nine, not Paddy's."""
    from paddy.data.synthetic import make_competition

    folder = where / "elsewhere" / "digits"
    make_competition(folder, where / "elsewhere" / "truth.csv", n_train=60, n_test=12, width=48, height=64)
    names = dict(zip(sorted(p.name for p in (folder / "train_images").iterdir()), DIGITS.values()))
    for old, new in names.items():
        shutil.move(folder / "train_images" / old, folder / "train_images" / new)
    train = pd.read_csv(folder / "train.csv", dtype=str)
    train.assign(label=train.label.map(names)).to_csv(folder / "train.csv", index=False)
    return folder


def planet_folder(where):
    """A Planet-shaped folder source (train_v2.csv of space-separated tags, train-jpg/, test-jpg/), entered by
    `paddy init FOLDER` from its files alone; the generator's truth of its test images beside it."""
    from paddy.data.synthetic import make_competition

    folder = where / "elsewhere" / "planet"
    make_competition(folder, where / "elsewhere" / "truth.csv", n_train=60, n_test=12, width=48, height=64,
                     layout="planet")  # fmt: skip
    return folder


@pytest.fixture(scope="module")
def entered(tmp_path_factory):
    """Each layout's repository (and the digits folder's) after `paddy init` and `dvc repro`: {name: (repo, what
    init printed, the repro's failure or None)}. The runs go two at a time: each is mostly one process's imports
    and tiny steps, so two share the 2 cores at little cost each (4.7 min one by one, about half that in pairs)."""
    runs = {}
    for name in LAYOUT_RUNS + ["digits", "planet_folder"]:
        repo = tmp_path_factory.mktemp(name)
        copy_pipeline(repo, commit=False)
        if name == "digits":
            shrink(repo)
            init = sh(f"paddy init {digits_folder(repo)}", repo)
        elif name == "planet_folder":
            shrink(repo)
            init = sh(f"paddy init {planet_folder(repo)}", repo)
        else:
            shrink(repo, layout=name, classes=CLASSES.get(name, 0))
            init = sh("paddy init synthetic", repo)
        commit(repo)
        runs[name] = (repo, init)
    with ThreadPoolExecutor(max_workers=2) as pool:
        done = {name: pool.submit(sh, "dvc repro", repo, OMP_NUM_THREADS="1") for name, (repo, _) in runs.items()}
    return {name: (*runs[name], done[name].exception()) for name in runs}


@pytest.mark.parametrize("layout", LAYOUT_RUNS)
def test_paddy_init_then_dvc_repro_enters_every_layout(entered, layout):
    repo, init, failure = entered[layout]
    comp = yaml.safe_load((repo / "params.yaml").read_text())["competition"]
    assert comp["metric"] in init and comp["form"] in init
    assert failure is None, failure
    sample = pd.read_csv(repo / "data" / "raw" / comp["sample_submission"], dtype=str, keep_default_na=False)
    sub = pd.read_csv(repo / "submission.csv", dtype=str, keep_default_na=False)
    assert list(sub.columns) == list(sample.columns) and sub.iloc[:, 0].tolist() == sample.iloc[:, 0].tolist()
    truth = pd.read_csv(repo / "data" / "truth.csv", dtype=str, keep_default_na=False)
    metrics = json.loads((repo / "metrics" / "ensemble.json").read_text())
    assert metrics["metric"] == comp["metric"]
    expected = sklearn_score(comp["metric"], sub, sample, truth, comp)
    assert metrics["test_score"]["ensemble"] == pytest.approx(expected, abs=1e-6)


def test_a_paddy_shaped_folder_with_other_class_names_trains_and_submits(entered):
    """The regression of the issue: labels zero ... nine instead of Paddy's, in a folder source."""
    repo, init, failure = entered["digits"]
    assert "10 classes" in init
    assert failure is None, failure
    sub = pd.read_csv(repo / "submission.csv", dtype=str)
    assert set(sub.label) <= set(DIGITS.values()) and len(sub) == 12
    assert json.loads((repo / "data" / "prepared" / "labels.json").read_text()) == sorted(DIGITS.values())
    out = sh("paddy submit -m digits --dry-run", repo)
    assert "valid against" in out and "dry run: nothing sent" in out


def test_a_planet_shaped_folder_enters_and_sends_tags(entered):
    """Issue 26's done-when: a Planet-shaped folder enters with `paddy init FOLDER` + `dvc repro` and gives a valid
    tags submission, scored here by the mean F2 against the generator's truth."""
    repo, init, failure = entered["planet_folder"]
    assert "form: tags" in init and "metric: mean_f2" in init
    assert failure is None, failure
    comp = yaml.safe_load((repo / "params.yaml").read_text())["competition"]
    sample = pd.read_csv(repo / "data" / "raw" / comp["sample_submission"], dtype=str, keep_default_na=False)
    sub = pd.read_csv(repo / "submission.csv", dtype=str, keep_default_na=False)
    tags = json.loads((repo / "data" / "prepared" / "labels.json").read_text())
    assert list(sub.columns) == ["image_name", "tags"] and sub.image_name.tolist() == sample.image_name.tolist()
    assert all(text and set(text.split()) <= set(tags) for text in sub.tags)  # tags.allow_empty false
    truth = pd.read_csv(repo / "elsewhere" / "truth.csv", dtype=str, keep_default_na=False)
    assert 0 < sklearn_score("mean_f2", sub, sample, truth, comp) <= 1
    thresholds = json.loads((repo / "metrics" / "thresholds.json").read_text())["per_tag"]
    assert set(thresholds) == set(tags) and all(0 < t < 1 for t in thresholds.values())
    out = sh("paddy submit -m planet --dry-run", repo)
    assert "valid against" in out and "dry run: nothing sent" in out


def test_the_folder_source_is_left_as_it_was(tmp_path):
    """paddy init reads, never writes, the competition's own folder."""
    from paddy.data.synthetic import make_competition

    folder = tmp_path / "competition"
    make_competition(folder, tmp_path / "truth.csv", n_train=20, n_test=4, width=24, height=32)
    before = {p: p.read_bytes() for p in folder.rglob("*") if p.is_file()}
    (tmp_path / "repo").mkdir()
    copy_pipeline(tmp_path / "repo", commit=False)
    sh(f"paddy init {folder}", tmp_path / "repo")
    assert {p: p.read_bytes() for p in folder.rglob("*") if p.is_file()} == before
    assert Path(yaml.safe_load((tmp_path / "repo" / "params.yaml").read_text())["data"]["source"]) == folder
