from dataclasses import replace

import numpy as np
import pandas as pd
import pytest
import torch

from paddy.errors import PaddyError
from paddy.metrics import Metric, score
from paddy.predict.ensemble import (
    aligned,
    build_ensemble,
    cross_validate_fit,
    cv_folds,
    fit_log_loss,
    fit_temperature,
    fit_weights,
    search_weights,
    temper,
)
from paddy.predict.submission import make_submission, validate_submission, write_submission
from paddy.predict.tables import Stack, Table, read_table, write_table
from paddy.predict.tta import blend
from paddy.settings import EnsembleSettings, Settings, parse_settings
from paddy.settings.schema import CompetitionSettings

LABELS = ["a", "b", "c"]
# Paddy's own description: the label form, scored by accuracy
PADDY = CompetitionSettings(
    "train.csv", "image_id", "column", "label", "train_images/{label}/{id}", "test_images/{id}",
    "sample_submission.csv", "label", "", "accuracy",
)  # fmt: skip


def settings_of(comp, ensemble):
    """The settings build_ensemble reads: this competition and ensemble, the rest params.yaml's defaults."""
    return Settings(competition=comp, ensemble=ensemble)


def test_tta_blend_is_three_quarters_augmented():
    aug, plain = torch.tensor([[1.0, 0.0]]), torch.tensor([[0.0, 1.0]])
    torch.testing.assert_close(blend(aug, plain, 0.25), torch.tensor([[0.75, 0.25]]))


def probs(ids, rows):
    return Table(np.asarray(ids), np.asarray(rows, dtype=np.float32), LABELS)


def test_the_mix_counts_a_model_twice():
    ids = ["1.jpg", "2.jpg"]
    a = probs(ids, [[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
    b = probs(ids[::-1], [[0.0, 0.0, 1.0], [0.0, 1.0, 0.0]])  # its rows in another order
    stack = Stack({"a": a, "b": b}, ids)
    np.testing.assert_allclose(stack.mix([1 / 3, 2 / 3]), [[1 / 3, 2 / 3, 0], [0, 1 / 3, 2 / 3]], rtol=1e-6)
    assert stack.mix([0.5, 0.5])[0, 0] == pytest.approx(0.5)
    np.testing.assert_allclose(stack.mix([1, 0], [1]), [[0, 1, 0]])  # the rows asked for


def test_all_zero_weights_are_refused(tmp_path):
    write_preds(tmp_path, "a", probs(["1.jpg"], [[1.0, 0.0, 0.0]]), probs(["t.jpg"], [[1.0, 0.0, 0.0]]))
    truth = pd.DataFrame({"image_id": ["1.jpg"], "label": ["a"]})
    sample = pd.DataFrame({"image_id": ["t.jpg"], "label": ""})
    with pytest.raises(PaddyError, match="weight"):
        build_ensemble(
            {"a": 0}, LABELS, sample, tmp_path, (truth, truth[:0]), settings_of(PADDY, EnsembleSettings("params", 2))
        )


def test_a_table_reads_back_as_written_memory_mapped(tmp_path):
    rows = np.random.default_rng(0).dirichlet(np.ones(3), size=5)
    write_table(tmp_path / "m", "oof", [f"{i}.jpg" for i in range(5)], rows, LABELS)
    table = read_table(tmp_path, "m", "oof")
    assert isinstance(table.probs, np.memmap) and table.probs.dtype == np.float32
    assert table.ids.tolist() == [f"{i}.jpg" for i in range(5)] and table.classes == LABELS
    np.testing.assert_array_equal(table.probs, rows.astype(np.float32))
    (tmp_path / "m" / "oof_ids.csv").write_text("image_id\n0.jpg\n")
    with pytest.raises(PaddyError, match=r"holds 5 x 3 probabilities, but oof_ids.csv lists 1 images.*dvc repro -f"):
        read_table(tmp_path, "m", "oof")


@pytest.fixture
def sample():
    return pd.DataFrame({"image_id": ["3.jpg", "1.jpg", "2.jpg"], "label": ""})


def test_submission_keeps_sample_order(sample):
    sub = make_submission(sample, ["1.jpg", "2.jpg", "3.jpg"], np.eye(3), LABELS, PADDY)
    assert sub.values.tolist() == [["3.jpg", "c"], ["1.jpg", "a"], ["2.jpg", "b"]]
    validate_submission(sub, sample, LABELS, PADDY)


@pytest.mark.parametrize(
    "rows, message",
    [
        ([["3.jpg", "c"], ["1.jpg", "a"], ["9.jpg", "b"]], "9.jpg"),  # wrong id
        ([["3.jpg", "c"], ["1.jpg", "a"]], "2 rows"),  # missing row
        ([["3.jpg", "c"], ["1.jpg", "zzz"], ["2.jpg", "b"]], "zzz"),  # unknown label
        ([["1.jpg", "a"], ["3.jpg", "c"], ["2.jpg", "b"]], "order"),  # rows shuffled
        ([["3.jpg", "c"], ["3.jpg", "a"], ["2.jpg", "b"]], "more than once"),
    ],
)
def test_bad_submissions_are_refused(sample, rows, message):
    with pytest.raises(PaddyError, match=message):
        validate_submission(pd.DataFrame(rows, columns=["image_id", "label"]), sample, LABELS, PADDY)


def noisy_probs(rng, y, n_classes, sharpness):
    """Probability rows leaning towards the true class y by `sharpness` (0: pure noise)."""
    logits = rng.normal(size=(len(y), n_classes))
    logits[np.arange(len(y)), y] += sharpness
    e = np.exp(logits)
    return e / e.sum(1, keepdims=True)


def test_fitted_weights_are_non_negative_sum_to_one_and_repeat():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 4, 300)
    probs = np.stack([noisy_probs(rng, y, 4, s) for s in (3.0, 1.0, 0.0)])
    w = fit_weights(probs, y)
    assert w.shape == (3,) and (w >= 0).all() and w.sum() == pytest.approx(1)
    assert w[0] > w[1] >= w[2]  # the sharper the model, the more it counts
    assert np.array_equal(fit_weights(probs, y), w)
    assert fit_weights(probs[:1], y).tolist() == [1.0]


def write_preds(preds_dir, name, oof, test):
    for kind, table in (("oof", oof), ("test", test)):
        write_table(preds_dir / name, kind, table.ids, table.probs, table.classes)


@pytest.fixture
def weak_pair(tmp_path):
    """A sharp model and a noisy one (weighted twice in params), 200 out-of-fold rows, one test row they disagree
    on: the sharp model says a, the noisy one b."""
    rng = np.random.default_rng(1)
    y = rng.integers(0, 3, 200)
    ids = [f"{i}.jpg" for i in range(200)]
    truth = pd.DataFrame({"image_id": ids, "label": np.asarray(LABELS)[y]})
    write_preds(tmp_path, "sharp", probs(ids, noisy_probs(rng, y, 3, 4.0)), probs(["t.jpg"], [[0.6, 0.3, 0.1]]))
    write_preds(tmp_path, "noisy", probs(ids, noisy_probs(rng, y, 3, 0.3)), probs(["t.jpg"], [[0.05, 0.9, 0.05]]))
    models = {"sharp": 1, "noisy": 2}
    sample = pd.DataFrame({"image_id": ["t.jpg"], "label": ""})
    test_truth = pd.DataFrame({"image_id": ["t.jpg"], "label": ["a"]})

    def run(weights, cv_folds=5, comp=PADDY):
        ensemble = EnsembleSettings(weights, cv_folds)
        return build_ensemble(models, LABELS, sample, tmp_path, (truth, test_truth), settings_of(comp, ensemble))

    return run


def test_fit_drops_the_noisy_model_and_lowers_the_log_loss(weak_pair):
    sub, metrics, confusion = weak_pair("fit")
    fit, par = metrics["fit"], metrics["params"]
    assert par["weights"] == pytest.approx({"sharp": 1 / 3, "noisy": 2 / 3})
    assert fit["weights"]["noisy"] < par["weights"]["noisy"] and fit["weights"]["sharp"] > 0.5
    assert sum(fit["weights"].values()) == pytest.approx(1) and min(fit["weights"].values()) >= 0
    assert fit["oof_loss"] <= par["oof_loss"] and fit["oof_acc"] >= par["oof_acc"]
    assert metrics["oof_loss"]["noisy"] > metrics["oof_loss"]["sharp"]
    # the chosen weights are the ones the ensemble and the submission use
    assert metrics["weights"] == fit["weights"] and metrics["oof_loss"]["ensemble"] == fit["oof_loss"]
    assert sub["label"].tolist() == ["a"] and metrics["test_acc"]["ensemble"] == 1.0
    assert 0 < fit["cv_loss"] < par["oof_loss"] and 0 <= fit["cv_acc"] <= 1
    assert len(confusion) == 200


def test_params_weights_stay_the_default_and_both_are_reported(weak_pair):
    sub, metrics, _ = weak_pair("params")
    assert metrics["weights"] == metrics["params"]["weights"]
    assert metrics["oof_loss"]["ensemble"] == metrics["params"]["oof_loss"] > metrics["fit"]["oof_loss"]
    assert sub["label"].tolist() == ["b"]  # the noisy model, counted twice, outvotes the sharp one here
    assert metrics["params"]["test_acc"] == 0.0 and metrics["fit"]["test_acc"] == 1.0
    # The test set's log loss per model and for the chosen mix: the true label a has 0.6, 0.05, 0.6/3 + 0.05*2/3.
    expected = {"sharp": -np.log(0.6), "noisy": -np.log(0.05), "ensemble": -np.log(0.6 / 3 + 0.05 * 2 / 3)}
    assert metrics["test_loss"] == pytest.approx(expected)


def test_ensemble_metrics_repeat_exactly(weak_pair):
    assert weak_pair("fit")[1] == weak_pair("fit")[1]


def test_cross_validation_rotates_over_kfold_folds():
    """Model A is right on fold 0 and B on fold 1: fitted on all rows they share the weight and the loss is
    moderate, but weights fitted on one fold back the model that fails on the other, which only a fit scored on
    rows it did not see reveals."""
    rng = np.random.default_rng(2)
    y = rng.integers(0, 3, 200)
    good, bad = noisy_probs(rng, y, 3, 5.0), noisy_probs(rng, y, 3, -2.0)
    fold = np.repeat([0, 1], 100)
    probs = np.stack([np.where(fold[:, None] == 0, good, bad), np.where(fold[:, None] == 0, bad, good)])
    ids = np.array([f"{i}.jpg" for i in range(200)])
    table = pd.DataFrame({"image_id": ids, "label": "a", "v0": (fold == 0).astype(int), "v1": (fold == 1).astype(int)})
    folds = cv_folds(ids[::-1], y[::-1], table, n_folds=5, seed=0)
    assert folds.tolist() == fold[::-1].tolist()  # the split's folds, looked up by image_id, not 5 new ones
    in_sample = fit_weights(probs, y)
    assert in_sample == pytest.approx([0.5, 0.5], abs=0.05)
    cv_acc, cv_loss, cv_score = cross_validate_fit(probs, y, fold, Metric("accuracy", tuple(LABELS)))
    assert cv_score == cv_acc
    in_acc = (np.tensordot(in_sample, probs, axes=1).argmax(1) == y).mean()
    assert cv_acc < in_acc and cv_loss > 2 * -np.log(np.tensordot(in_sample, probs, axes=1)[np.arange(200), y]).mean()


def test_bagging_cross_validates_over_stratified_folds_of_the_oof_rows():
    ids = np.array([f"{i}.jpg" for i in range(40)])
    y = np.repeat([0, 1], 20)
    table = pd.DataFrame({"image_id": ids, "label": "a", "v0": 1})  # one validation set: nothing to rotate over
    folds = cv_folds(ids, y, table, n_folds=4, seed=0)
    assert sorted(np.unique(folds)) == [0, 1, 2, 3]
    assert all((y[folds == k] == 0).sum() == 5 for k in range(4))  # stratified
    assert np.array_equal(folds, cv_folds(ids, y, table, n_folds=4, seed=0))
    rare = np.arange(12) % 6  # every label rarer than the folds, as in a tiny validation set: plain folds
    assert np.bincount(cv_folds(ids[:12], rare, None, n_folds=4, seed=0)).tolist() == [3, 3, 3, 3]
    with pytest.raises(PaddyError, match="ensemble.cv_folds"):
        cv_folds(ids[:3], y[:3], None, n_folds=4, seed=0)


def test_aligned_keeps_rows_every_model_and_truth_have():
    a = probs(["1.jpg", "2.jpg", "3.jpg"], [[0.5, 0.5, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 2.0]])
    b = probs(["3.jpg", "2.jpg"], [[0.0, 1.0, 0.0], [0.0, 1.0, 0.0]])
    truth = pd.DataFrame({"image_id": ["2.jpg", "3.jpg", "4.jpg"], "label": ["b", "c", "a"]})
    p, y = aligned({"a": a, "b": b}, truth, LABELS)
    assert p.ids.tolist() == ["2.jpg", "3.jpg"] and y.tolist() == [1, 2]
    np.testing.assert_allclose(p.mix([1, 0]), [[1, 0, 0], [0, 0, 1]])  # rows rescaled to sum to 1
    np.testing.assert_allclose(p.mix([0, 1]), [[0, 1, 0], [0, 1, 0]])


@pytest.mark.parametrize("key, value", [("weights", "best"), ("weights", None), ("cv_folds", 1), ("cv_folds", 2.5)])
def test_bad_ensemble_settings_are_refused_naming_the_key(params, key, value):
    params["ensemble"][key] = value
    with pytest.raises(PaddyError, match=f"`ensemble.{key}` in params.yaml is {value!r}"):
        parse_settings(params)
    del params["ensemble"]
    with pytest.raises(PaddyError, match="no `ensemble.weights`"):
        parse_settings(params)


def test_the_label_form_writes_exactly_the_file_paddy_wrote_before_the_forms(tmp_path):
    """The argmax label per sample row, in the sample's order, as the ensemble wrote it before forms existed (the
    default `dvc repro`'s submission.csv is this file): ties to the first class, an id without a prediction left
    empty for the caller, nothing but the two columns."""
    rng = np.random.default_rng(0)
    classes = ["bacterial_leaf_blight", "blast", "normal", "tungro"]
    ids = [f"{200001 + i}.jpg" for i in range(50)]
    probs = np.round(rng.dirichlet(np.ones(4), size=50), 6)
    probs[7] = [0.4, 0.4, 0.1, 0.1]  # a tie: the first class
    sample = pd.DataFrame({"image_id": ids[::-1], "label": ""})
    sub = make_submission(sample, ids, probs, classes, PADDY)
    write_submission(sub, tmp_path / "submission.csv")
    label_of = dict(zip(ids, np.asarray(classes)[probs.argmax(1)]))
    expected = "image_id,label\n" + "".join(f"{i},{label_of[i]}\n" for i in ids[::-1])
    assert (tmp_path / "submission.csv").read_text() == expected and label_of[ids[7]] == classes[0]
    validate_submission(pd.read_csv(tmp_path / "submission.csv", dtype=str), sample, classes, PADDY)


def test_the_probabilities_form_sends_each_class_column_clipped_and_summing_to_one(tmp_path):
    """dog-breed's form: one column per class in the sample's order (not labels.json's), probabilities clipped
    as Kaggle's log loss clips, every row summing to 1 within 1e-6 once written and read back, over 120 classes
    of tiny values."""
    rng = np.random.default_rng(1)
    classes = [f"breed_{i:03d}" for i in range(120)]
    probs = rng.dirichlet(np.full(120, 0.05), size=30)
    probs[0] = 0.0
    probs[0, 5] = 1.0  # exact zeros and a one: clipped, not sent as 0
    ids = [f"{i:032x}" for i in range(30)]
    columns = list(rng.permutation(classes))
    sample = pd.DataFrame({"id": ids, **{c: "0.0083" for c in columns}})
    comp = replace(PADDY, form="probabilities", metric="log_loss", sample_submission="sample_submission.csv")
    sub = make_submission(sample, ids[::-1], probs[::-1], classes, comp)
    assert list(sub.columns) == ["id", *columns]
    assert sub.loc[0, "breed_005"] == pytest.approx(1 - 119e-15) and sub.loc[0, "breed_000"] == pytest.approx(1e-15)
    assert sub.loc[3, columns].to_numpy(float) == pytest.approx(probs[3][[classes.index(c) for c in columns]])
    write_submission(sub, tmp_path / "submission.csv")
    back = pd.read_csv(tmp_path / "submission.csv", dtype=str, keep_default_na=False)
    sums = back[columns].astype(float).sum(axis=1)
    assert (sums - 1).abs().max() <= 1e-6 and back[columns].astype(float).min().min() > 0
    validate_submission(back, sample, classes, comp)
    # What Kaggle would score: the written file's log loss is ours on the same probabilities
    y = rng.integers(0, 120, 30)
    written = back[columns].astype(float)[classes].to_numpy()
    assert score("log_loss", y, written, classes) == pytest.approx(score("log_loss", y, probs, classes), rel=1e-6)


def test_the_probability_form_sends_the_positive_class(tmp_path):
    probs = np.array([[0.25, 0.75], [1.0, 0.0], [0.5, 0.5]])
    sample = pd.DataFrame({"id": ["x", "y", "z"], "label": "0.5"})
    comp = replace(PADDY, form="probability", positive="dog", metric="log_loss")
    sub = make_submission(sample, ["x", "y", "z"], probs, ["cat", "dog"], comp)
    assert sub["label"].tolist() == pytest.approx([0.75, 1e-15, 0.5])
    cat = make_submission(sample, ["x", "y", "z"], probs, ["cat", "dog"], replace(comp, positive="cat"))
    assert cat["label"].tolist() == pytest.approx([0.25, 1 - 1e-15, 0.5])
    write_submission(sub, tmp_path / "submission.csv")
    assert (tmp_path / "submission.csv").read_text() == "id,label\nx,0.75\ny,1e-15\nz,0.5\n"
    validate_submission(pd.read_csv(tmp_path / "submission.csv", dtype=str), sample, ["cat", "dog"], comp)


@pytest.mark.parametrize(
    "form, rows, message",
    [
        (
            "probabilities",
            [["1", "0.5", "0.6"], ["2", "0.5", "0.5"]],
            r"row 2 \(id '1'\) has probabilities summing to 1.1",
        ),
        ("probabilities", [["1", "0.5", "0.5"], ["2", "1.5", "-0.5"]], r"'1.5' in column 'cat' \(row 3, id '2'\)"),
        ("probabilities", [["1", "half", "0.5"], ["2", "0.5", "0.5"]], r"'half' in column 'cat'"),
        ("probabilities", [["1", "", "1"], ["2", "0.5", "0.5"]], r"'' in column 'cat'"),
        ("probability", [["1", "0.3"], ["2", "dog"]], r"'dog' in column 'label' \(row 3"),
        ("probability", [["1", "0.3"], ["2", "1.01"]], r"'1.01' in column 'label'"),
        ("label", [["1", "cat"], ["2", "0.9"]], r"label '0.9' \(row 3\), which is not one of the competition's"),
    ],
)
def test_values_of_the_wrong_form_are_refused_naming_the_cell(form, rows, message):
    columns = ["id", "cat", "dog"] if form == "probabilities" else ["id", "label"]
    sample = pd.DataFrame({c: ["1", "2"] if c == "id" else "" for c in columns})
    comp = replace(PADDY, form=form, positive="dog" if form == "probability" else "")
    with pytest.raises(PaddyError, match=message):
        validate_submission(pd.DataFrame(rows, columns=columns), sample, ["cat", "dog"], comp)


def logits(rng, y, k, s):
    """Logits of a k-class truth y: noise plus s on the true class. softmax(s * logits) is then the posterior of
    the class (calibrated); a factor above s is overconfident, below s underconfident."""
    out = rng.normal(size=(len(y), k))
    out[np.arange(len(y)), y] += s
    return out


def softmax(z):
    e = np.exp(z - z.max(1, keepdims=True))
    return e / e.sum(1, keepdims=True)


def test_the_temperature_lowers_the_out_of_fold_log_loss_of_overconfident_probabilities():
    rng = np.random.default_rng(3)
    y = rng.integers(0, 4, 400)
    metric = Metric("log_loss", ("a", "b", "c", "d"))
    z = logits(rng, y, 4, 1.5)
    p = softmax(4.5 * z)  # three times too sure: the best temperature is about 3
    t = fit_temperature(p, y, metric)
    assert t == pytest.approx(3, rel=0.2) and metric(y, temper(p, t)) < metric(y, p) - 0.1
    assert (temper(p, t).argmax(1) == p.argmax(1)).all() and np.allclose(temper(p, t).sum(1), 1)
    assert fit_temperature(softmax(1.5 * z), y, metric) == pytest.approx(1.0, abs=0.15)  # calibrated already


@pytest.mark.parametrize("n_models", [2, 3, 5])  # the grid, and the moves beyond three models
@pytest.mark.parametrize("metric", ["accuracy", "f1_macro", "qwk"])
def test_the_metric_fit_beats_the_log_loss_fit_in_sample(n_models, metric):
    rng = np.random.default_rng(n_models)
    y = rng.integers(0, 4, 150)
    # models sure of themselves where they are wrong: the log-loss fit weighs calibration, not the argmax
    probs = np.stack([softmax((1 + 2 * m) * logits(rng, y, 4, 1.0)) for m in range(n_models)])
    judge = Metric(metric, ("0", "1", "2", "3"))
    start = fit_log_loss(probs, y)
    w = fit_weights(probs, y, judge)
    assert w.shape == (n_models,) and (w >= 0).all() and w.sum() == pytest.approx(1)
    # beats it here (ties are the next test's): the log-loss fit is not where these argmax metrics peak
    assert judge(y, np.tensordot(w, probs, axes=1)) > judge(y, np.tensordot(start, probs, axes=1))
    assert np.array_equal(fit_weights(probs, y, judge), w)  # the same on every run
    assert np.array_equal(fit_weights(probs, y, Metric("log_loss", judge.classes)), start)


def test_a_metric_flat_in_the_weights_keeps_the_log_loss_fit():
    """Two models with the same argmax everywhere: every weighting scores the same accuracy, so the search keeps
    the log-loss fit (the nearest point), not the grid's first point."""
    rng = np.random.default_rng(4)
    y = rng.integers(0, 3, 100)
    z = logits(rng, y, 3, 1.0)
    probs = np.stack([softmax(3 * z), softmax(0.3 * z)])  # too sure and too unsure: the log-loss fit mixes them
    start = fit_log_loss(probs, y)
    assert 0 < start[0] < 1
    assert np.array_equal(search_weights(probs, y, Metric("accuracy", ("a", "b", "c")), start), start)


def test_the_ensemble_scores_every_model_with_the_competitions_metric(weak_pair):
    _, metrics, _ = weak_pair("fit", comp=replace(PADDY, metric="f1_macro"))
    assert metrics["metric"] == "f1_macro" and set(metrics["oof_score"]) == {"sharp", "noisy", "ensemble"}
    assert metrics["oof_score"]["sharp"] > metrics["oof_score"]["noisy"]
    assert metrics["oof_score"]["ensemble"] == metrics["fit"]["oof_score"] >= metrics["params"]["oof_score"]
    assert 0 <= metrics["fit"]["cv_score"] <= 1 and "cv_acc" in metrics["fit"] and "cv_loss" in metrics["fit"]
    assert set(metrics["test_score"]) == {"sharp", "noisy", "ensemble"} and "test_score" in metrics["params"]
    assert "temperature" not in metrics
    _, accuracy, _ = weak_pair("params")
    assert accuracy["metric"] == "accuracy" and accuracy["oof_score"] == accuracy["oof_acc"]


def test_a_log_loss_competition_gets_tempered_probabilities(tmp_path):
    """An overconfident pair under a log-loss metric and the probabilities form: the submission sends the mix at
    the fitted temperature, whose out-of-fold log loss is lower; test images without a prediction get the
    training class frequencies."""
    rng = np.random.default_rng(5)
    y = rng.integers(0, 3, 300)
    ids = [f"{i}.jpg" for i in range(300)]
    truth = pd.DataFrame({"image_id": ids, "label": np.asarray(LABELS)[y]})
    test_ids = [f"t{i}.jpg" for i in range(40)]
    test_y = rng.integers(0, 3, 40)
    z, test_z = logits(rng, y, 3, 1.5), logits(rng, test_y, 3, 1.5)
    for name, power in (("one", 3.0), ("two", 4.0)):  # the same logits, too sharp: so is their mix
        write_preds(tmp_path, name, probs(ids, softmax(power * z)), probs(test_ids[:-1], softmax(power * test_z[:-1])))
    sample = pd.DataFrame({"image_id": test_ids, "c": "", "a": "", "b": ""})  # its own column order
    test_truth = pd.DataFrame({"image_id": test_ids, "label": np.asarray(LABELS)[test_y]})
    comp = replace(PADDY, form="probabilities", metric="log_loss")
    sub, metrics, _ = build_ensemble(
        {"one": 1, "two": 1},
        LABELS,
        sample,
        tmp_path,
        (truth, test_truth),
        settings_of(comp, EnsembleSettings("params", 5)),
    )
    t = metrics["temperature"]
    assert t["value"] > 1.2 and t["oof_after"] < t["oof_before"] == metrics["params"]["oof_score"]
    assert metrics["oof_score"]["ensemble"] == t["oof_after"] and metrics["oof_loss"]["ensemble"] == t["oof_before"]
    assert metrics["test_score"]["ensemble"] < metrics["test_loss"]["ensemble"]  # the temperature helps the test too
    assert list(sub.columns) == ["image_id", "c", "a", "b"]
    mix = (read_table(tmp_path, "one", "test").probs + read_table(tmp_path, "two", "test").probs) / 2
    expected = temper(mix.astype(float), t["value"])
    assert sub.loc[:38, LABELS].to_numpy(float) == pytest.approx(expected, rel=1e-5)
    prior = np.bincount(y, minlength=3) / 300
    assert sub.loc[39, LABELS].to_numpy(float) == pytest.approx(prior)  # no prediction: the class frequencies


def test_the_shortlist_argmax_is_the_whole_mixtures_argmax():
    """Stack.argmax (each row's shortlist of classes, the rest mixed whole where it could matter) against the
    argmax of the whole mixture, for three models over 60 classes: flat rows, sharp rows, exact ties, rows whose
    winner is no model's own top class, and weights that switch models off."""
    rng = np.random.default_rng(7)
    n, classes = 400, 60
    tables = []
    for m in range(3):
        p = rng.dirichlet(np.full(classes, 0.3 if m else 3.0), size=n)
        p[:20] = 1 / classes  # flat rows: every class ties
        p[20:40, 7] = p[20:40, 9] = 0.45  # two classes tie at the top
        tables.append(p)
    tables[0][40:60], tables[1][40:60] = 0.0, 0.0  # class 3, second for both models, wins their even mix
    tables[0][40:60, [1, 3, 2]], tables[1][40:60, [2, 3, 1]] = [0.4, 0.35, 0.25], [0.4, 0.35, 0.25]
    stack = Stack.of(np.stack(tables).astype(np.float32))
    assert (stack.mix([0.5, 0.5, 0])[40:60].argmax(1) == 3).all()
    for w in [[1, 0, 0], [0, 0, 1], [0.5, 0.5, 0], [0.2, 0.3, 0.5], *rng.dirichlet(np.ones(3), size=20)]:
        np.testing.assert_array_equal(stack.argmax(np.asarray(w)), stack.mix(np.asarray(w)).argmax(1))
    part = stack.subset(np.arange(10, 300))  # a fold of the rows: its shortlist is the rows'
    np.testing.assert_array_equal(part.argmax(np.array([0.1, 0.6, 0.3])), part.mix([0.1, 0.6, 0.3]).argmax(1))
