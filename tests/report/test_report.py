"""The report stage: per-class metrics against scikit-learn, the top losses and least confident rows against a
brute-force sort, calibration on a hand-worked table, and the whole report on tiny probability tables whose
prepared folder holds only the images it should draw."""

import json
import math
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from helpers.pipeline import ROOT, run_script
from PIL import Image
from sklearn.metrics import confusion_matrix, f1_score, log_loss, precision_recall_fscore_support

from paddy.errors import PaddyError
from paddy.predict.tables import write_table
from paddy.report import analysis
from paddy.report.build import write_report
from paddy.settings import ReportSettings
from paddy.settings.schema import CompetitionSettings

LABELS = ["bacterial_panicle_blight", "blast", "hispa", "normal"]
PADDY = CompetitionSettings(
    "train.csv", "image_id", "column", "label", "train_images/{label}/{id}", "test_images/{id}",
    "sample_submission.csv", "label", "", "accuracy",
)  # fmt: skip


def test_per_class_metrics_match_scikit_learn_on_a_fixed_table():
    # class 0: some right; class 1: never predicted (precision undefined); class 2: no rows (recall undefined) but
    # predicted once; class 3: all right.
    y = np.array([0, 0, 0, 1, 1, 3, 3, 3, 0, 1])
    predicted = np.array([0, 0, 3, 0, 3, 3, 3, 3, 2, 0])
    counts = analysis.confusion_counts(y, predicted, range(4))
    assert (counts == confusion_matrix(y, predicted, labels=range(4))).all()
    shown = analysis.confusion_counts(y, predicted, [3, 0])  # the classes a picture draws, in its order
    assert (shown == confusion_matrix(y, predicted, labels=range(4))[np.ix_([3, 0], [3, 0])]).all()
    out = analysis.per_class(y, predicted, LABELS)
    p, r, f1, support = precision_recall_fscore_support(y, predicted, labels=range(4), zero_division=np.nan)
    for i, label in enumerate(LABELS):
        assert out["support"][label] == support[i]
        for key, expected in (("precision", p[i]), ("recall", r[i])):
            if math.isnan(expected):
                assert label not in out[key], (key, label)
            else:
                assert out[key][label] == pytest.approx(expected)
        if support[i]:
            assert out["f1"][label] == pytest.approx(0 if math.isnan(f1[i]) else f1[i])
        else:
            assert label not in out["f1"]
    assert set(out["precision"]) == {"bacterial_panicle_blight", "hispa", "normal"}
    assert set(out["recall"]) == {"bacterial_panicle_blight", "blast", "normal"}


def tied_probs(rng, n, n_classes):
    """Probabilities with many exact ties: a few distinct rows, repeated."""
    distinct = rng.dirichlet(np.ones(n_classes), size=5)
    return distinct[rng.integers(0, 5, size=n)]


def test_top_losses_and_least_confident_match_a_brute_force_sort():
    rng = np.random.default_rng(0)
    for _ in range(20):
        n = int(rng.integers(1, 40))
        probs = tied_probs(rng, n, 4)
        y = rng.integers(0, 4, size=n)
        ids = [f"{int(i)}.jpg" for i in rng.permutation(1000)[:n]]
        loss = analysis.losses(probs[np.arange(n), y])
        assert np.allclose(loss, [-math.log(probs[i, y[i]]) for i in range(n)])
        k = int(rng.integers(0, n + 3))
        brute = sorted(range(n), key=lambda i: (-loss[i], ids[i]))[:k]
        assert list(analysis.top_losses(loss, ids, k)) == brute
        brute = sorted(range(n), key=lambda i: (probs[i].max(), ids[i]))[:k]
        assert list(analysis.least_confident(probs.max(1), ids, k)) == brute


def pairs_of(counts):
    """(y, predicted) rows whose confusion matrix is `counts`."""
    cells = [(a, p) for (a, p), n in np.ndenumerate(counts) for _ in range(n)]
    return np.array([a for a, _ in cells]), np.array([p for _, p in cells])


def test_most_confused_pairs_most_frequent_first():
    counts = np.array([[5, 2, 0], [3, 4, 2], [0, 0, 7]])
    pairs = analysis.most_confused(*pairs_of(counts), ["a", "b", "c"])
    assert pairs.values.tolist() == [["b", "a", 3], ["a", "b", 2], ["b", "c", 2]]
    assert analysis.most_confused(*pairs_of(np.diag([3, 4, 5])), ["a", "b", "c"]).empty
    assert analysis.most_involved(pairs, ["a", "b", "c"], 2) == ["a", "b"]  # b in 7 confusions, a in 5, c in 2


def test_calibration_bins_and_expected_calibration_error_by_hand():
    # Top probabilities 0.9 (right), 0.8 (wrong), 0.6 (right), 0.55 (right): bins of 0.5 width: (0.5, 1] holds all.
    probs = np.array([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4], [0.45, 0.55]])
    y = np.array([0, 0, 0, 1])
    table, ece = analysis.calibration(probs.max(1), probs.argmax(1) == y, 2)
    assert table["count"].tolist() == [0, 4]
    assert table.loc[1, "confidence"] == pytest.approx((0.9 + 0.8 + 0.6 + 0.55) / 4)
    assert table.loc[1, "accuracy"] == pytest.approx(0.75)
    assert ece == pytest.approx(abs(0.75 - 0.7125))
    # Ten bins: 0.9 in (0.8, 0.9], 0.8 in (0.7, 0.8], 0.6 in (0.5, 0.6], 0.55 too.
    table, ece = analysis.calibration(probs.max(1), probs.argmax(1) == y, 10)
    assert table["count"].tolist() == [0, 0, 0, 0, 0, 2, 0, 1, 1, 0]
    assert ece == pytest.approx((2 * abs(1 - 0.575) + abs(0 - 0.8) + abs(1 - 0.9)) / 4)


def write_image(path, seed):
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.random.default_rng(seed).integers(0, 255, size=(40, 30, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path)


def make_run(tmp_path, n_oof=30, n_test=10, top=5, labels_of=None, weights=None, seed=0):
    """A prepared folder, two models' probability tables, the ensemble's weights and a test truth, on disk. Only
    the images the report should draw exist (by a brute-force sort of the ensemble's mean): reading any other one
    fails. Returns the paths and the expected (top-loss ids, least-confident ids, ensemble oof probabilities)."""
    rng = np.random.default_rng(seed)
    weights = weights or {"resnet": 1 / 3, "vit": 2 / 3}
    oof_ids = [f"{100001 + i}.jpg" for i in range(n_oof)]
    test_ids = [f"{200001 + i}.jpg" for i in range(n_test)]
    y = labels_of if labels_of is not None else rng.integers(0, len(LABELS), size=n_oof)
    prepared, preds = tmp_path / "prepared", tmp_path / "preds"
    index = pd.DataFrame(
        {
            "image_id": oof_ids + test_ids,
            "label": [LABELS[i] for i in y] + [None] * n_test,
            "split": ["train"] * n_oof + ["test"] * n_test,
            "path": [f"images/train/{i}" for i in oof_ids] + [f"images/test/{i}" for i in test_ids],
        }
    )
    prepared.mkdir()
    index.to_csv(prepared / "index.csv", index=False)
    (prepared / "labels.json").write_text(json.dumps(LABELS))
    (prepared / "targets.json").write_text(json.dumps({"label": LABELS}))
    oof_mean, test_mean = 0, 0
    for name, w in weights.items():
        oof = rng.dirichlet(np.ones(len(LABELS)) * 0.5, size=n_oof)
        test = rng.dirichlet(np.ones(len(LABELS)) * 0.5, size=n_test)
        write_table(preds / name, "oof", oof_ids, oof, LABELS)
        write_table(preds / name, "test", test_ids, test, LABELS)
        oof_mean, test_mean = oof_mean + w * oof, test_mean + w * test
    oof_mean, test_mean = oof_mean / sum(weights.values()), test_mean / sum(weights.values())
    loss = [-math.log(oof_mean[i, y[i]]) for i in range(n_oof)]
    top_ids = [oof_ids[i] for i in sorted(range(n_oof), key=lambda i: (-loss[i], oof_ids[i]))[:top]]
    unsure_ids = [test_ids[i] for i in sorted(range(n_test), key=lambda i: (test_mean[i].max(), test_ids[i]))[:top]]
    for k, image_id in enumerate(top_ids):
        write_image(prepared / "images" / "train" / image_id, k)
    for k, image_id in enumerate(unsure_ids):
        write_image(prepared / "images" / "test" / image_id, 100 + k)
    (tmp_path / "ensemble.json").write_text(json.dumps({"oof_acc": {}, "weights": weights}))
    truth = pd.DataFrame({"image_id": test_ids, "label": [LABELS[i] for i in rng.integers(0, 4, size=n_test)]})
    truth.to_csv(tmp_path / "truth.csv", index=False)
    return top_ids, unsure_ids, oof_mean, y


def report(tmp_path, top=5, bins=10, metric="accuracy", max_classes=30):
    inputs = (tmp_path / "prepared", tmp_path / "preds", tmp_path / "ensemble.json", tmp_path / "truth.csv")
    outputs = (tmp_path / "metrics" / "report.json", tmp_path / "metrics" / "report", tmp_path / "plots" / "report")
    return write_report(
        inputs,
        outputs,
        ReportSettings(top_losses=top, calibration_bins=bins, max_classes=max_classes),
        replace(PADDY, metric=metric),
    )


def test_the_report_draws_only_the_top_losses_it_chose_and_scores_the_ensembles_mean(tmp_path):
    top_ids, unsure_ids, oof_mean, y = make_run(tmp_path, top=5)
    metrics = report(tmp_path, top=5)
    assert json.loads((tmp_path / "metrics" / "report.json").read_text()) == metrics
    tables, plots = tmp_path / "metrics" / "report", tmp_path / "plots" / "report"
    top = pd.read_csv(tables / "top_losses.csv", dtype={"image_id": str})
    assert top["image_id"].tolist() == top_ids  # the brute-force choice, and only those images exist
    assert pd.read_csv(tables / "least_confident.csv", dtype={"image_id": str})["image_id"].tolist() == unsure_ids
    assert sorted(p.name for p in (plots / "top_losses").iterdir()) == [
        f"{k:02d}_{Path(i).stem}.png" for k, i in enumerate(top_ids, 1)
    ]
    for name in ("top_losses", "least_confident", "confusion_normalised", "most_confused", "reliability"):
        assert (plots / f"{name}.png").read_bytes()[:4] == b"\x89PNG"
    # The ensemble's figures are those of the weights' mean (computed here on its own), per class as scikit-learn.
    predicted = oof_mean.argmax(1)
    _, recall, _, support = precision_recall_fscore_support(y, predicted, labels=range(4), zero_division=np.nan)
    for i, label in enumerate(LABELS):
        assert metrics["recall"]["ensemble"][label] == pytest.approx(recall[i])
        assert metrics["support"][label] == support[i]
    assert list(metrics["recall"]) == ["ensemble", "resnet", "vit"]
    rows = [int(Path(i).stem) - 100001 for i in top_ids]
    assert top["loss"].tolist() == pytest.approx([-math.log(oof_mean[i, y[i]]) for i in rows], rel=1e-6)
    counts = pd.read_csv(tables / "confusion.csv").set_index("actual")
    assert counts.to_numpy().sum() == len(y) and np.trace(counts.to_numpy()) == (predicted == y).sum()
    assert 0 <= metrics["ece"]["ensemble"] <= 1 and set(metrics["ece"]) == {"ensemble", "resnet", "vit"}


def test_a_class_without_out_of_fold_rows_is_stated_not_a_crash(tmp_path, capsys):
    y = np.array([1, 2, 3] * 10)  # no bacterial_panicle_blight row
    make_run(tmp_path, labels_of=y, top=3)
    metrics = report(tmp_path, top=3)
    assert metrics["support"]["bacterial_panicle_blight"] == 0
    assert "bacterial_panicle_blight" not in metrics["recall"]["ensemble"]
    assert "bacterial_panicle_blight" not in metrics["f1"]["vit"]
    assert "no out-of-fold rows of bacterial_panicle_blight" in metrics["note"]
    assert "no out-of-fold rows of bacterial_panicle_blight" in capsys.readouterr().out
    per_class = pd.read_csv(tmp_path / "metrics" / "report" / "per_class.csv")
    row = per_class[(per_class["source"] == "ensemble") & (per_class["class"] == "bacterial_panicle_blight")]
    assert row["recall"].isna().all() and (row["support"] == 0).all()


def test_top_losses_zero_draws_no_image_and_says_so(tmp_path):
    make_run(tmp_path, top=0)
    report(tmp_path, top=0)
    plots = tmp_path / "plots" / "report"
    assert [p.name for p in (plots / "top_losses").iterdir()] == ["none.png"]
    assert (plots / "top_losses.png").exists() and (plots / "least_confident.png").exists()
    assert pd.read_csv(tmp_path / "metrics" / "report" / "top_losses.csv").empty


def test_a_missing_oof_file_is_one_paragraph_naming_it_and_the_fix(tmp_path):
    make_run(tmp_path)
    (tmp_path / "preds" / "vit" / "oof_probs.npy").unlink()
    with pytest.raises(PaddyError, match=r"vit/oof_probs.npy is missing.*`dvc repro tta@vit`"):
        report(tmp_path)
    assert not (tmp_path / "metrics").exists() and not (tmp_path / "plots").exists()


def test_the_stage_prints_one_paragraph_not_a_traceback(tmp_path):
    make_run(tmp_path)
    (tmp_path / "ensemble.json").unlink()
    (tmp_path / "params.yaml").write_text((ROOT / "params.yaml").read_text())
    out = run_script(
        "stages/report.py", "prepared", "preds", "ensemble.json", "truth.csv", "metrics/report.json",
        "metrics/report", "plots/report", cwd=tmp_path,
    )  # fmt: skip
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert "error: ensemble.json does not exist" in out.stderr and "Run `dvc repro`" in out.stderr


def test_a_predicted_image_missing_from_the_prepared_folder_is_named(tmp_path):
    top_ids, *_ = make_run(tmp_path, top=3)
    (tmp_path / "prepared" / "images" / "train" / top_ids[1]).unlink()
    with pytest.raises(PaddyError, match=f"train image {top_ids[1]} has predictions but no prepared file"):
        report(tmp_path, top=3)
    assert not (tmp_path / "metrics" / "report.json").exists()


def test_the_report_scores_the_competitions_metric_for_the_ensemble_and_each_model(tmp_path):
    _, _, oof_mean, y = make_run(tmp_path, n_oof=60, top=3)
    metrics = report(tmp_path, top=3, metric="f1_macro")
    assert metrics["metric"] == "f1_macro" and list(metrics["oof_score"]) == ["ensemble", "resnet", "vit"]
    assert metrics["oof_score"]["ensemble"] == pytest.approx(f1_score(y, oof_mean.argmax(1), average="macro"))
    assert json.loads((tmp_path / "metrics" / "report.json").read_text())["oof_score"] == metrics["oof_score"]


def test_the_report_mixes_at_the_ensembles_temperature(tmp_path):
    """A log-loss competition: the ensemble's probabilities are the mix at metrics/ensemble.json's temperature,
    what the submission sent, so the report's out-of-fold log loss is the tempered one."""
    _, _, oof_mean, y = make_run(tmp_path, n_oof=60, top=0)
    figures = json.loads((tmp_path / "ensemble.json").read_text())
    (tmp_path / "ensemble.json").write_text(json.dumps(figures | {"temperature": {"value": 2.0}}))
    metrics = report(tmp_path, top=0, metric="log_loss")
    tempered = np.sqrt(oof_mean) / np.sqrt(oof_mean).sum(1, keepdims=True)  # p ** (1 / 2), rescaled
    assert metrics["oof_score"]["ensemble"] == pytest.approx(log_loss(y, tempered, labels=range(4)))
    assert metrics["oof_score"]["vit"] != pytest.approx(metrics["oof_score"]["ensemble"])  # the models untempered
    assert metrics["oof_score"]["ensemble"] != pytest.approx(log_loss(y, oof_mean, labels=range(4)))


def test_the_stage_prints_the_metric_by_name(tmp_path):
    make_run(tmp_path, top=0)
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params["report"]["top_losses"] = 0
    params["competition"]["metric"] = "f1_macro"
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    out = run_script(
        "stages/report.py", "prepared", "preds", "ensemble.json", "truth.csv", "metrics/report.json",
        "metrics/report", "plots/report", cwd=tmp_path,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    score = json.loads((tmp_path / "metrics" / "report.json").read_text())["oof_score"]["ensemble"]
    assert f"metrics/report.json: the ensemble's out-of-fold f1_macro {score:.4f}" in out.stdout


def test_more_classes_than_max_classes_get_macro_averages_and_the_most_confused_drawn(tmp_path):
    """A competition with many classes: report.json (so `dvc exp show`) gains no column per class, the confusion
    picture draws the classes most involved in confusions; the per-class table keeps every class."""
    _, _, oof_mean, y = make_run(tmp_path, n_oof=60)
    metrics = report(tmp_path, max_classes=2)
    assert "recall" not in metrics and "support" not in metrics and metrics["classes"] == 4
    predicted = oof_mean.argmax(1)
    _, recall, _, _ = precision_recall_fscore_support(y, predicted, labels=range(4), zero_division=np.nan)
    assert metrics["recall_macro"]["ensemble"] == pytest.approx(np.nanmean(recall))
    tables = tmp_path / "metrics" / "report"
    assert len(pd.read_csv(tables / "per_class.csv")) == 3 * 4
    drawn = pd.read_csv(tables / "confusion.csv").actual.tolist()
    pairs = pd.read_csv(tables / "most_confused.csv")
    involved = pd.concat([pairs.groupby("actual")["count"].sum(), pairs.groupby("predicted")["count"].sum()])
    top_two = involved.groupby(level=0).sum().sort_values(ascending=False, kind="stable").index[:2]
    assert sorted(drawn) == sorted(top_two) and len(drawn) == 2
