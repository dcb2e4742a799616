"""The ensemble of a multi-label competition (competition.form tags): sigmoid tables mixed as they are, thresholds
fitted out of fold, the tags submission and its checks."""

from dataclasses import replace

import numpy as np
import pandas as pd
import pytest

from paddy.errors import PaddyError
from paddy.predict.ensemble import build_ensemble, read_thresholds
from paddy.predict.submission import validate_submission
from paddy.predict.tables import Table, write_table
from paddy.settings import EnsembleSettings, Settings, TagSettings
from paddy.settings.schema import CompetitionSettings
from paddy.tags import mean_fbeta, predict_tags, tag_matrix

TAGS = ["agriculture", "clear", "haze", "primary", "water"]
PLANET = CompetitionSettings(
    "train_v2.csv", "image_name", "column", "tags", "train-jpg/{id}.jpg", "test-jpg/{id}.jpg",
    "sample_submission_v2.csv", "tags", "", "mean_f2",
)  # fmt: skip


def tag_rows(rng, n):
    """Tag strings with co-occurrence: clear or haze (exclusive), primary mostly, agriculture often with primary,
    water rare."""
    rows = []
    for _ in range(n):
        tags = ["clear" if rng.random() < 0.7 else "haze"]
        if rng.random() < 0.85:
            tags.append("primary")
            if rng.random() < 0.4:
                tags.append("agriculture")
        if rng.random() < 0.1:
            tags.append("water")
        rows.append(" ".join(sorted(tags)))
    return rows


def model_probs(rng, truth, sharpness, bias):
    """Sigmoid probabilities leaning towards the truth, shifted down by `bias` per tag (an under-confident model,
    whose best thresholds lie below 0.5)."""
    logits = rng.normal(size=truth.shape) + sharpness * (2 * truth.astype(float) - 1) - bias
    return 1 / (1 + np.exp(-logits))


@pytest.fixture
def planet(tmp_path):
    rng = np.random.default_rng(0)
    ids = [f"train_{i}" for i in range(400)]
    labels = tag_rows(rng, 400)
    test_ids = [f"test_{i}" for i in range(300)]
    test_labels = tag_rows(rng, 300)
    y, test_y = tag_matrix(labels, TAGS), tag_matrix(test_labels, TAGS)
    bias = np.array([1.0, 0.5, 1.5, 0.0, 2.0])
    for name, sharpness in (("sharp", 2.0), ("soft", 1.0)):
        write_table(tmp_path / name, "oof", ids, model_probs(rng, y, sharpness, bias), TAGS)
        # the last test image has no prediction: prepare left it out
        write_table(tmp_path / name, "test", test_ids[:-1], model_probs(rng, test_y, sharpness, bias)[:-1], TAGS)
    sample = pd.DataFrame({"image_name": test_ids, "tags": "primary clear agriculture road water"})
    truth = (
        pd.DataFrame({"image_id": ids, "label": labels}),
        pd.DataFrame({"image_id": test_ids, "label": test_labels}),
    )

    def run(fit="per_tag", min_positives=20, allow_empty=False, threshold=0.5):
        tags = TagSettings(threshold, fit, min_positives, allow_empty)
        settings = Settings(competition=PLANET, ensemble=EnsembleSettings("params", 5), tags=tags)
        return build_ensemble({"sharp": 1, "soft": 1}, TAGS, sample, tmp_path, truth, settings)

    run.truth = truth
    return run, sample, (y, test_y)


def test_fitted_thresholds_beat_the_fixed_one_out_of_fold_cross_validated_and_on_the_test_set(planet):
    run, sample, _ = planet
    sub, metrics, confusion = run()
    t = metrics["thresholds"]
    assert metrics["metric"] == "mean_f2" and t["fit"] == "per_tag"
    assert t["oof_per_tag"] >= t["oof_global"] > t["oof_fixed"] + 0.02
    assert t["cv_score"] > t["oof_fixed"] + 0.02  # fitted on other rows than it is scored on, it still gains
    assert t["test_per_tag"] > t["test_fixed"] + 0.02 and t["test_global"] > t["test_fixed"] + 0.02
    assert metrics["oof_score"]["ensemble"] == t["cv_score"]  # honest: thresholds fitted on other rows
    assert metrics["test_score"]["ensemble"] == pytest.approx(t["test_per_tag"])
    assert set(t["per_tag"]) == set(TAGS) and t["threshold_global"] < 0.5  # the models are under-confident
    assert list(confusion.columns) == ["actual", "predicted"] and len(confusion) == 400


def test_the_submission_writes_tags_above_the_thresholds_in_the_samples_order(planet, capsys):
    run, sample, _ = planet
    sub, metrics, _ = run()
    assert list(sub.columns) == ["image_name", "tags"] and sub.image_name.tolist() == sample.image_name.tolist()
    assert all(text and set(text.split()) <= set(TAGS) for text in sub.tags)  # allow_empty false: never empty
    assert sub.tags.iloc[-1]  # the image without a prediction still gets tags (the training frequencies')
    assert "no prediction" in capsys.readouterr().out
    validate_submission(sub, sample, TAGS, PLANET)


def test_allow_empty_lets_an_image_have_no_tag(planet):
    run, _, _ = planet
    sub, metrics, _ = run(fit="none", allow_empty=True, threshold=0.97)
    assert (sub.tags == "").any() and metrics["thresholds"]["threshold_fixed"] == 0.97
    sub, _, _ = run(fit="none", allow_empty=False, threshold=0.97)
    assert (sub.tags != "").all()


def test_a_tag_with_too_few_positives_falls_back_and_says_so(planet, capsys):
    run, _, (y, _) = planet
    _, metrics, _ = run(min_positives=60)
    rare = [TAGS[k] for k in np.flatnonzero(y.sum(0) < 60)]
    t = metrics["thresholds"]
    assert rare == ["water"] and t["per_tag"]["water"] == t["threshold_global"]
    assert "water" in t["note"] and "keep the global threshold" in capsys.readouterr().out


def test_read_thresholds_gives_what_the_submission_used(planet, tmp_path):
    run, _, _ = planet
    _, metrics, _ = run()
    import json

    per_tag = metrics["thresholds"].pop("per_tag")
    (tmp_path / "thresholds.json").write_text(json.dumps({"per_tag": per_tag}))
    (tmp_path / "ensemble.json").write_text(json.dumps(metrics))
    thresholds, allow_empty = read_thresholds(tmp_path / "ensemble.json", TAGS)
    assert thresholds.tolist() == [per_tag[t] for t in TAGS] and allow_empty is False
    (tmp_path / "thresholds.json").unlink()
    with pytest.raises(PaddyError, match="thresholds.json does not exist"):
        read_thresholds(tmp_path / "ensemble.json", TAGS)


def test_mixing_keeps_sigmoid_rows_as_they_are(tmp_path):
    """Tag probabilities do not sum to 1: the mix is the weighted mean of each tag's probability, never rescaled."""
    from paddy.predict.tables import Stack

    a = Table(np.array(["x", "y"]), np.array([[0.9, 0.8], [0.1, 0.2]], dtype=np.float32), ["p", "q"])
    b = Table(np.array(["x", "y"]), np.array([[0.5, 0.4], [0.3, 0.0]], dtype=np.float32), ["p", "q"])
    mix = Stack({"a": a, "b": b}, ["x", "y"], tags=True).mix([0.5, 0.5])
    assert mix == pytest.approx(np.array([[0.7, 0.6], [0.2, 0.1]]))


def test_a_tags_submission_with_an_unknown_tag_is_refused():
    sample = pd.DataFrame({"image_name": ["a", "b"], "tags": "primary"})
    sub = pd.DataFrame({"image_name": ["a", "b"], "tags": ["primary clear", "primary cloudy"]})
    with pytest.raises(PaddyError, match="cloudy is not one of the competition's 5 tags"):
        validate_submission(sub, sample, TAGS, PLANET)
    validate_submission(replace_tags(sub, "primary"), sample, TAGS, PLANET)


def replace_tags(sub, value):
    return sub.assign(tags=value)


def test_the_fixed_threshold_scores_as_the_metric_says():
    rng = np.random.default_rng(3)
    y = tag_matrix(tag_rows(rng, 50), TAGS)
    p = model_probs(rng, y, 1.0, np.zeros(5))
    from paddy.metrics import Metric

    metric = Metric.of(PLANET, TAGS, TagSettings(0.4, "none", 20, True))
    assert metric(y, p) == pytest.approx(mean_fbeta(y, predict_tags(p, 0.4), 2.0))
    assert replace(metric, allow_empty=False)(y, p) >= 0


def test_imets_micro_f1_is_fitted_and_scored_pooled(planet, tmp_path):
    """micro_f1 (iMet 2020's): the thresholds maximise the F1 of the pooled (image, tag) pairs, and every figure is
    scikit-learn's micro average."""
    from sklearn.metrics import f1_score

    run, sample, (y, test_y) = planet
    settings = Settings(competition=replace(PLANET, metric="micro_f1"), ensemble=EnsembleSettings("params", 5))
    sub, metrics, _ = build_ensemble({"sharp": 1, "soft": 1}, TAGS, sample, tmp_path, run.truth, settings)
    t = metrics["thresholds"]
    assert t["oof_per_tag"] >= t["oof_global"] > t["oof_fixed"] and t["test_global"] > t["test_fixed"]
    sent = tag_matrix(sub.tags.tolist(), TAGS)[:-1]  # the last test image had no prediction
    assert metrics["test_score"]["ensemble"] == pytest.approx(f1_score(test_y[:-1], sent, average="micro"), abs=0.01)


def test_the_tags_weight_fit_streams_the_binary_cross_entropy(monkeypatch):
    """Stack.tag_loss, chunk by chunk (forced small here), is the mixture's mean binary cross-entropy and its
    gradient; the fitted weights favour the sharper model."""
    import paddy.predict.tables as tables
    from paddy.predict.ensemble import fit_log_loss
    from paddy.predict.tables import Stack
    from paddy.tags import binary_log_loss

    monkeypatch.setattr(tables, "CHUNK_CELLS", 7 * len(TAGS))  # chunks of 7 rows
    rng = np.random.default_rng(4)
    y = tag_matrix(tag_rows(rng, 60), TAGS)
    ids = np.array([str(i) for i in range(60)])
    probs = [model_probs(rng, y, s, np.zeros(5)).astype(np.float32) for s in (2.5, 0.3)]
    stack = Stack({f"m{i}": Table(ids, p, TAGS) for i, p in enumerate(probs)}, ids, tags=True)
    w = np.array([0.3, 0.7])
    loss, grad = stack.tag_loss(y, w)
    mix = w[0] * probs[0] + w[1] * probs[1]
    assert loss == pytest.approx(binary_log_loss(y, mix), rel=1e-5)
    right = [np.where(y, p, 1 - p) for p in probs]
    dense = [-(q / (w[0] * right[0] + w[1] * right[1])).mean() for q in right]
    assert grad == pytest.approx(dense, rel=1e-3)  # float32 mixtures, float64 sums
    fitted = fit_log_loss(stack, y)
    assert fitted.sum() == pytest.approx(1) and fitted[0] > 0.8
