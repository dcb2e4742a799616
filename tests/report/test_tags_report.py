"""The report of a multi-label competition: per-tag precision, recall and F1 against scikit-learn at the submission's
thresholds, the top losses and least confident images against a brute-force sort, the missed and added counts and
calibration per tag against brute force, and every file dvc.yaml declares, on tiny sigmoid tables whose prepared
folder holds only the images the report should draw."""

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from helpers.pipeline import ROOT
from PIL import Image
from sklearn.metrics import fbeta_score, multilabel_confusion_matrix, precision_recall_fscore_support

from paddy.predict.tables import write_table
from paddy.report import analysis, tag_analysis
from paddy.report import tags as tags_report
from paddy.report.build import write_report
from paddy.settings import ReportSettings
from paddy.settings.schema import CompetitionSettings

TAGS = ["agriculture", "clear", "haze", "primary", "water"]
PLANET = CompetitionSettings(
    "train_v2.csv", "image_name", "column", "tags", "train-jpg/{id}.jpg", "test-jpg/{id}.jpg",
    "sample_submission_v2.csv", "tags", "", "mean_f2",
)  # fmt: skip
WEIGHTS = {"resnet": 1 / 3, "vit": 2 / 3}
PER_TAG = {"agriculture": 0.3, "clear": 0.45, "haze": 0.2, "primary": 0.55, "water": 0.35}


def write_image(path, seed):
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.random.default_rng(seed).integers(0, 255, size=(40, 30, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path)


def submitted(probs, thresholds, allow_empty):
    """The tags above their thresholds; without allow_empty an image with none gets its likeliest."""
    predicted = probs > thresholds
    if not allow_empty:
        empty = ~predicted.any(1)
        predicted[empty, probs[empty].argmax(1)] = True
    return predicted


def tag_text(row):
    return " ".join(t for t, on in zip(TAGS, row) if on)


def sigmoid_table(rng, truth):
    """Probabilities that lean towards the truth, so the models are right often and wrong sometimes."""
    return np.clip(0.35 * truth + rng.uniform(0, 0.65, size=truth.shape), 0.001, 0.999)


def make_tags_run(tmp_path, n_oof=40, n_test=12, top=5, fit="per_tag", allow_empty=False, truth=None, seed=0):
    """A prepared multi-label folder, two models' sigmoid tables, metrics/ensemble.json (and thresholds.json beside
    it) as the ensemble stage writes them, and the test truth. Only the images the report should draw exist (by a
    brute-force sort of the ensemble's mean in float64). Returns what the test expects: a dict of the truth, the
    ensemble's probabilities and predicted tags, the thresholds, the top-loss and least-confident ids."""
    rng = np.random.default_rng(seed)
    oof_ids = [f"{100001 + i}.jpg" for i in range(n_oof)]
    test_ids = [f"{200001 + i}.jpg" for i in range(n_test)]
    y = truth if truth is not None else (rng.uniform(size=(n_oof, len(TAGS))) < 0.4).astype(int)
    test_y = (rng.uniform(size=(n_test, len(TAGS))) < 0.4).astype(int)
    prepared, preds = tmp_path / "prepared", tmp_path / "preds"
    index = pd.DataFrame(
        {
            "image_id": oof_ids + test_ids,
            "label": [tag_text(r) for r in y] + [""] * n_test,
            "split": ["train"] * n_oof + ["test"] * n_test,
            "path": [f"images/train/{i}" for i in oof_ids] + [f"images/test/{i}" for i in test_ids],
        }
    )
    prepared.mkdir()
    index.to_csv(prepared / "index.csv", index=False)
    (prepared / "labels.json").write_text(json.dumps(TAGS))
    (prepared / "targets.json").write_text(json.dumps({"label": TAGS}))
    oof_mean, test_mean = 0, 0
    for name, w in WEIGHTS.items():
        oof, test = sigmoid_table(rng, y), sigmoid_table(rng, test_y)
        write_table(preds / name, "oof", oof_ids, oof, TAGS)
        write_table(preds / name, "test", test_ids, test, TAGS)
        oof_mean, test_mean = oof_mean + w * oof.astype(np.float32), test_mean + w * test.astype(np.float32)
    thresholds = np.array([PER_TAG[t] for t in TAGS]) if fit == "per_tag" else np.full(len(TAGS), 0.4)
    found = {"fit": fit, "threshold_fixed": 0.5, "threshold_global": 0.4, "allow_empty": allow_empty}
    (tmp_path / "ensemble.json").write_text(json.dumps({"metric": "mean_f2", "weights": WEIGHTS, "thresholds": found}))
    (tmp_path / "thresholds.json").write_text(json.dumps({"per_tag": PER_TAG}))
    predicted = submitted(oof_mean, thresholds, allow_empty)
    p = np.clip(oof_mean, 1e-15, 1 - 1e-15)
    loss = [-np.mean([math.log(p[i, k]) if y[i, k] else math.log(1 - p[i, k]) for k in range(5)]) for i in range(n_oof)]
    top_ids = [oof_ids[i] for i in sorted(range(n_oof), key=lambda i: (-loss[i], oof_ids[i]))[:top]]
    nearest = np.abs(test_mean - thresholds).min(1)
    unsure_ids = [test_ids[i] for i in sorted(range(n_test), key=lambda i: (nearest[i], test_ids[i]))[:top]]
    for k, image_id in enumerate(top_ids):
        write_image(prepared / "images" / "train" / image_id, k)
    for k, image_id in enumerate(unsure_ids):
        write_image(prepared / "images" / "test" / image_id, 100 + k)
    truth_table = pd.DataFrame({"image_id": test_ids, "label": [tag_text(r) for r in test_y]})
    truth_table.to_csv(tmp_path / "truth.csv", index=False)
    right = (submitted(test_mean, thresholds, allow_empty) == test_y).all(1)
    return {"y": y, "probs": oof_mean, "predicted": predicted, "thresholds": thresholds, "loss": loss,
            "top_ids": top_ids, "unsure_ids": unsure_ids, "unsure_right": [right[int(Path(i).stem) - 200001]
            for i in unsure_ids]}  # fmt: skip


def report(tmp_path, top=5, bins=10, max_classes=30):
    inputs = (tmp_path / "prepared", tmp_path / "preds", tmp_path / "ensemble.json", tmp_path / "truth.csv")
    outputs = (tmp_path / "metrics" / "report.json", tmp_path / "metrics" / "report", tmp_path / "plots" / "report")
    settings = ReportSettings(top_losses=top, calibration_bins=bins, max_classes=max_classes)
    return write_report(inputs, outputs, settings, PLANET)


def test_per_tag_figures_match_scikit_learn_on_a_fixed_table():
    # agriculture: some found, one missed, one added; clear: never predicted (precision undefined); haze: no image
    # has it (recall undefined) but predicted once; primary, water: all right
    y = np.array([[1, 1, 0, 1, 0], [1, 0, 0, 1, 1], [0, 1, 0, 0, 0], [1, 0, 0, 1, 0]])
    predicted = np.array([[1, 0, 0, 1, 0], [0, 0, 1, 1, 1], [1, 0, 0, 0, 0], [1, 0, 0, 1, 0]])
    out = tag_analysis.per_tag(y, predicted, TAGS)
    p, r, f1, support = precision_recall_fscore_support(y, predicted, average=None, zero_division=np.nan)
    for i, tag in enumerate(TAGS):
        assert out["support"][tag] == support[i]
        for key, expected in (("precision", p[i]), ("recall", r[i])):
            if math.isnan(expected):
                assert tag not in out[key], (key, tag)
            else:
                assert out[key][tag] == pytest.approx(expected)
        if support[i]:
            assert out["f1"][tag] == pytest.approx(0 if math.isnan(f1[i]) else f1[i])
        else:
            assert tag not in out["f1"]
    assert set(out["precision"]) == {"agriculture", "haze", "primary", "water"}
    assert set(out["recall"]) == {"agriculture", "clear", "primary", "water"}
    # found, missed, added, left out: scikit-learn's [[tn, fp], [fn, tp]] per tag
    confusion = tag_analysis.tag_confusion(y, predicted, TAGS)
    for k, ((tn, fp), (fn, tp)) in enumerate(multilabel_confusion_matrix(y, predicted)):
        assert confusion.loc[k, ["found", "missed", "added", "left_out"]].tolist() == [tp, fn, fp, tn]
    assert confusion["images"].tolist() == y.sum(0).tolist()
    worst = tag_analysis.most_missed_and_added(confusion)
    assert worst["tag"].tolist() == ["agriculture", "clear", "haze"]  # 2 mistakes, then 1 each in tag order


def test_calibration_per_tag_is_analysis_calibration_of_each_column():
    rng = np.random.default_rng(3)
    probs = rng.uniform(size=(50, 5)).astype(np.float32)
    probs[:5, 0] = [0.0, 1.0, 0.1, 0.5, 0.30000001]  # the bins' edges
    y = rng.uniform(size=(50, 5)) < probs
    sums = tag_analysis.calibration_sums(probs, y, 10)
    for k in range(5):
        table, ece = tag_analysis.calibration_table(*(s[k] for s in sums))
        expected, expected_ece = analysis.calibration(probs[:, k].astype(float), y[:, k], 10)
        assert table["count"].tolist() == expected["count"].tolist()
        np.testing.assert_allclose(table["frequency"], expected["accuracy"])
        np.testing.assert_allclose(table["confidence"], expected["confidence"])
        assert ece == pytest.approx(expected_ece)
    pooled, ece = tag_analysis.calibration_table(*(s.sum(0) for s in sums))
    _, expected_ece = analysis.calibration(probs.ravel().astype(float), y.ravel(), 10)
    assert pooled["count"].sum() == 250 and ece == pytest.approx(expected_ece)


def test_row_losses_are_each_images_binary_cross_entropy():
    y = np.array([[1, 0], [0, 0], [1, 1]])
    probs = np.array([[0.9, 0.2], [0.0, 1.0], [0.5, 0.25]], dtype=np.float32)
    loss = tag_analysis.row_losses(y, probs)
    clipped = np.clip(probs.astype(float), 1e-15, 1 - 1e-15)
    expected = [-np.mean(np.where(y[i], np.log(clipped[i]), np.log(1 - clipped[i]))) for i in range(3)]
    np.testing.assert_allclose(loss, expected)
    k, distance = tag_analysis.nearest_decision(probs, [0.5, 0.3])
    assert k.tolist() == [1, 0, 0] and distance == pytest.approx([0.1, 0.5, 0.0])


def report_outputs():
    """The report stage's outputs and plots as dvc.yaml declares them."""
    stage = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]["report"]
    return [next(iter(o)) if isinstance(o, dict) else o for key in ("outs", "metrics", "plots") for o in stage[key]]


def test_the_tags_report_counts_the_submissions_tags_and_writes_every_declared_file(tmp_path):
    run = make_tags_run(tmp_path, top=5)
    metrics = report(tmp_path, top=5)
    assert json.loads((tmp_path / "metrics" / "report.json").read_text()) == metrics
    for path in report_outputs():  # every file dvc.yaml names, at the paths the stage is given
        assert (tmp_path / path).exists(), path
    tables, plots = tmp_path / "metrics" / "report", tmp_path / "plots" / "report"
    for name in ("top_losses", "least_confident", "confusion_normalised", "most_confused", "reliability"):
        assert (plots / f"{name}.png").read_bytes()[:4] == b"\x89PNG"
    assert sorted(p.name for p in (plots / "top_losses").iterdir()) == [
        f"{k:02d}_{Path(i).stem}.png" for k, i in enumerate(run["top_ids"], 1)
    ]
    # the ensemble's tags are those above the per-tag thresholds, an image without one given its likeliest
    y, predicted = run["y"], run["predicted"]
    p, r, f1, support = precision_recall_fscore_support(y, predicted, average=None, zero_division=np.nan)
    for i, tag in enumerate(TAGS):
        assert metrics["support"][tag] == support[i]
        assert metrics["recall"]["ensemble"][tag] == pytest.approx(r[i])
        assert metrics["precision"]["ensemble"][tag] == pytest.approx(p[i])
        assert metrics["f1"]["ensemble"][tag] == pytest.approx(f1[i])
    assert list(metrics) == ["recall", "precision", "f1", "support", "ece", "metric", "oof_score"]
    assert list(metrics["recall"]) == ["ensemble", "resnet", "vit"] == list(metrics["ece"])
    assert metrics["metric"] == "mean_f2"
    expected = fbeta_score(y, predicted, beta=2, average="samples", zero_division=1)
    assert metrics["oof_score"]["ensemble"] == pytest.approx(expected)
    # the top losses: by each image's binary cross-entropy, with its true, predicted, missed and added tags
    top = pd.read_csv(tables / "top_losses.csv", dtype={"image_id": str}, keep_default_na=False)
    assert top["image_id"].tolist() == run["top_ids"]
    rows = [int(Path(i).stem) - 100001 for i in run["top_ids"]]
    assert top["loss"].tolist() == pytest.approx([run["loss"][i] for i in rows], rel=1e-5)
    assert top["actual"].tolist() == [tag_text(y[i]) for i in rows]
    assert top["predicted"].tolist() == [tag_text(predicted[i]) for i in rows]
    assert top["missed"].tolist() == [tag_text(y[i] & ~predicted[i]) for i in rows]
    assert top["added"].tolist() == [tag_text(predicted[i] & ~y[i]) for i in rows]
    # missed and added per tag: brute-force counts, most mistakes first
    confusion = pd.read_csv(tables / "confusion.csv").set_index("tag")
    missed, added = (y & ~predicted).sum(0), (predicted & ~y).sum(0)
    assert confusion.loc[TAGS, "missed"].tolist() == missed.tolist()
    assert confusion.loc[TAGS, "added"].tolist() == added.tolist()
    worst = pd.read_csv(tables / "most_confused.csv")
    assert worst["tag"].tolist() == sorted((t for t in TAGS), key=lambda t: -(missed + added)[TAGS.index(t)])
    # the least confident test images: a tag's probability nearest its threshold
    unsure = pd.read_csv(tables / "least_confident.csv", dtype={"image_id": str}, keep_default_na=False)
    assert unsure["image_id"].tolist() == run["unsure_ids"]
    assert unsure["right"].tolist() == run["unsure_right"]  # the generated truth is known
    # the per-tag table: every source and tag, the submission's threshold and the tag's calibration error
    per_tag = pd.read_csv(tables / "per_class.csv")
    assert len(per_tag) == 3 * len(TAGS) and per_tag["threshold"].tolist()[:5] == [PER_TAG[t] for t in TAGS]
    for k, tag in enumerate(TAGS):
        _, ece = analysis.calibration(run["probs"][:, k].astype(float), y[:, k], 10)
        assert per_tag.set_index(["source", "tag"]).loc[("ensemble", tag), "ece"] == pytest.approx(ece, abs=1e-6)
    calibration = pd.read_csv(tmp_path / "metrics" / "report" / "calibration.csv")
    assert len(calibration) == 3 * (1 + len(TAGS)) * 10


def test_one_global_threshold_and_empty_tag_sets_allowed(tmp_path):
    run = make_tags_run(tmp_path, fit="global", allow_empty=True, top=3)
    metrics = report(tmp_path, top=3)
    y, probs = run["y"], run["probs"]
    predicted = probs > 0.4  # threshold_global, nothing filled in
    _, recall, _, _ = precision_recall_fscore_support(y, predicted, average=None, zero_division=np.nan)
    assert [metrics["recall"]["ensemble"][t] for t in TAGS] == pytest.approx(recall)
    expected = fbeta_score(y, predicted, beta=2, average="samples", zero_division=1)
    assert metrics["oof_score"]["ensemble"] == pytest.approx(expected)


def test_a_tag_no_image_has_is_stated_and_many_tags_get_macro_averages(tmp_path, capsys, monkeypatch):
    y = (np.random.default_rng(5).uniform(size=(40, 5)) < 0.5).astype(int)
    y[:, 2] = 0  # no image is hazy
    make_tags_run(tmp_path, truth=y, top=2)
    monkeypatch.setattr(tags_report, "PANELS", 2)  # more tags than reliability panels: the worst calibrated drawn
    metrics = report(tmp_path, top=2, max_classes=3)
    assert "recall" not in metrics and metrics["classes"] == 5 and "recall_macro" in metrics
    assert "no out-of-fold image has haze" in metrics["note"]
    assert "no out-of-fold image has haze" in capsys.readouterr().out
    per_tag = pd.read_csv(tmp_path / "metrics" / "report" / "per_class.csv")
    assert per_tag[per_tag["tag"] == "haze"]["recall"].isna().all()
    drawn = pd.read_csv(tmp_path / "metrics" / "report" / "confusion.csv")
    assert len(drawn) == 5  # the table keeps every tag; the picture draws the three with the most mistakes


def test_top_losses_zero_draws_no_image_and_says_so(tmp_path):
    make_tags_run(tmp_path, top=0)
    report(tmp_path, top=0)
    plots = tmp_path / "plots" / "report"
    assert [p.name for p in (plots / "top_losses").iterdir()] == ["none.png"]
    assert (plots / "top_losses.png").exists() and (plots / "least_confident.png").exists()
    assert pd.read_csv(tmp_path / "metrics" / "report" / "top_losses.csv").empty


def test_an_ensemble_without_thresholds_asks_for_the_ensemble_stage(tmp_path):
    make_tags_run(tmp_path)
    (tmp_path / "ensemble.json").write_text(json.dumps({"weights": WEIGHTS}))
    with pytest.raises(Exception, match=r"holds no thresholds.*dvc repro ensemble"):
        report(tmp_path)
    assert not (tmp_path / "metrics").exists()
