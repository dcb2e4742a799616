import numpy as np
import pandas as pd
import pytest
import torch

from paddy.errors import PaddyError
from paddy.predict.ensemble import aligned, build_ensemble, cross_validate_fit, cv_folds, fit_weights, weighted_mean
from paddy.predict.submission import make_submission, validate_submission
from paddy.predict.tta import blend
from paddy.settings import EnsembleSettings, parse_settings

LABELS = ["a", "b", "c"]


def test_tta_blend_is_three_quarters_augmented():
    aug, plain = torch.tensor([[1.0, 0.0]]), torch.tensor([[0.0, 1.0]])
    torch.testing.assert_close(blend(aug, plain, 0.25), torch.tensor([[0.75, 0.25]]))


def probs(ids, rows):
    return pd.DataFrame(rows, columns=LABELS).assign(image_id=ids)[["image_id", *LABELS]]


def test_weighted_mean_counts_a_model_twice():
    ids = ["1.jpg", "2.jpg"]
    a = probs(ids, [[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
    b = probs(ids, [[0.0, 1.0, 0.0], [0.0, 0.0, 1.0]])
    mean = weighted_mean({"a": a, "b": b}, {"a": 1.0, "b": 2.0}, LABELS)
    np.testing.assert_allclose(mean[LABELS].to_numpy(), [[1 / 3, 2 / 3, 0], [0, 1 / 3, 2 / 3]])
    assert mean["image_id"].tolist() == ids
    equal = weighted_mean({"a": a, "b": b}, {"a": 1.0, "b": 1.0}, LABELS)
    assert equal[LABELS].to_numpy()[0, 0] == pytest.approx(0.5)


def test_all_zero_weights_are_refused():
    a = probs(["1.jpg"], [[1.0, 0.0, 0.0]])
    with pytest.raises(PaddyError, match="weight"):
        weighted_mean({"a": a}, {"a": 0.0}, LABELS)


@pytest.fixture
def sample():
    return pd.DataFrame({"image_id": ["3.jpg", "1.jpg", "2.jpg"], "label": ""})


def test_submission_keeps_sample_order(sample):
    sub = make_submission(sample, ["1.jpg", "2.jpg", "3.jpg"], ["a", "b", "c"])
    assert sub.values.tolist() == [["3.jpg", "c"], ["1.jpg", "a"], ["2.jpg", "b"]]
    validate_submission(sub, sample, LABELS)


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
        validate_submission(pd.DataFrame(rows, columns=["image_id", "label"]), sample, LABELS)


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
    for kind, frame in (("oof", oof), ("test", test)):
        (preds_dir / name).mkdir(parents=True, exist_ok=True)
        frame.to_csv(preds_dir / name / f"{kind}_probs.csv", index=False, float_format="%.6f")


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

    def run(weights, cv_folds=5):
        ensemble = EnsembleSettings(weights, cv_folds)
        return build_ensemble(models, LABELS, sample, tmp_path, truth, test_truth, "a", ensemble, None, seed=0)

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
    cv_acc, cv_loss = cross_validate_fit(probs, y, fold)
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
    ids, p, y = aligned({"a": a, "b": b}, truth, LABELS)
    assert ids.tolist() == ["2.jpg", "3.jpg"] and y.tolist() == [1, 2]
    np.testing.assert_allclose(p[0], [[1, 0, 0], [0, 0, 1]])  # rows rescaled to sum to 1


@pytest.mark.parametrize("key, value", [("weights", "best"), ("weights", None), ("cv_folds", 1), ("cv_folds", 2.5)])
def test_bad_ensemble_settings_are_refused_naming_the_key(params, key, value):
    params["ensemble"][key] = value
    with pytest.raises(PaddyError, match=f"`ensemble.{key}` in params.yaml is {value!r}"):
        parse_settings(params)
    del params["ensemble"]
    with pytest.raises(PaddyError, match="no `ensemble.weights`"):
        parse_settings(params)
