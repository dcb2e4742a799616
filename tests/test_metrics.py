"""paddy.metrics against scikit-learn called directly on the truth, and against the MLE-bench graders' formulas on
small tables laid out as the submissions they grade."""

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import accuracy_score, cohen_kappa_score, f1_score, log_loss, roc_auc_score

from paddy.errors import PaddyError
from paddy.metrics import GREATER_IS_BETTER, Metric, better, greater_is_better, kaggle_clip, score
from paddy.settings.schema import METRICS
from paddy.training.step import Heads


def table(rng, n, k, sharpness=2.0):
    """n rows of k-class probabilities leaning towards the truth y, which every class appears in."""
    y = np.arange(n) % k
    rng.shuffle(y)
    logits = rng.normal(size=(n, k))
    logits[np.arange(n), y] += sharpness
    p = np.exp(logits)
    return y, p / p.sum(1, keepdims=True)


def test_every_metric_of_the_settings_is_scored_and_has_a_direction():
    assert set(GREATER_IS_BETTER) == set(METRICS)
    assert greater_is_better("mean_f3") and greater_is_better("micro_f3") and not greater_is_better("log_loss")
    assert [m for m, greater in GREATER_IS_BETTER.items() if not greater] == ["log_loss"]
    assert better("log_loss", 0.2, 0.3) and not better("accuracy", 0.2, 0.3) and better("qwk", 0.1, -0.2)
    assert better("roc_auc", 0.5, None) and not better("roc_auc", None, 0.5)


def test_label_metrics_are_scikit_learns_on_the_argmax():
    rng = np.random.default_rng(0)
    y, p = table(rng, 60, 4, sharpness=0.8)
    classes = ["a", "b", "c", "d"]
    truth, predicted = np.asarray(classes)[y], np.asarray(classes)[p.argmax(1)]  # the graders see class names
    assert score("accuracy", y, p, classes) == pytest.approx(accuracy_score(truth, predicted))
    assert score("f1_micro", y, p, classes) == pytest.approx(f1_score(truth, predicted, average="micro"))
    assert score("f1_macro", y, p, classes) == pytest.approx(f1_score(truth, predicted, average="macro"))
    assert score("f1_macro", y, p, classes) != pytest.approx(score("f1_micro", y, p, classes))  # not the same


def test_f1_macro_averages_over_the_classes_present_as_the_grader_does():
    """A class in neither the truth nor the predictions does not drag the mean down: scikit-learn's default."""
    y = np.array([0, 0, 1, 1])
    p = np.array([[0.9, 0.05, 0.05], [0.2, 0.7, 0.1], [0.1, 0.8, 0.1], [0.3, 0.6, 0.1]])
    expected = f1_score(["a", "a", "b", "b"], ["a", "b", "b", "b"], average="macro")
    assert score("f1_macro", y, p, ["a", "b", "c"]) == pytest.approx(expected)


def test_log_loss_is_kaggles_clip_and_rescale_on_every_column():
    """dog-breed-identification's grader: scikit-learn's log_loss on one probability column per class, rows summing
    to 1; a submission of exact zeros and ones scores like Kaggle's 1e-15 clip, not infinity."""
    rng = np.random.default_rng(1)
    y, p = table(rng, 40, 5)
    assert score("log_loss", y, p, list("abcde")) == pytest.approx(log_loss(y, p))
    # Rows not summing to 1 are rescaled, as Kaggle does
    assert score("log_loss", y, 0.5 * p, list("abcde")) == pytest.approx(log_loss(y, p))
    hard = np.eye(5)[(y + (np.arange(40) == 0)) % 5]  # confident, and wrong on the first row
    expected = (-np.log(1e-15 / (1 + 4e-15)) - 39 * np.log(1 / (1 + 4e-15))) / 40
    assert score("log_loss", y, hard, list("abcde")) == pytest.approx(expected)
    clipped = kaggle_clip(hard)
    assert clipped.min() == pytest.approx(1e-15 / (1 + 4e-15)) and np.allclose(clipped.sum(1), 1, atol=1e-12)


def test_binary_log_loss_on_two_columns_is_the_graders_on_the_positive_column():
    """dogs-vs-cats-redux's grader: log_loss(answers, P(dog)) on one column; ours: the same on the two columns."""
    rng = np.random.default_rng(2)
    y, p = table(rng, 50, 2, sharpness=1.0)
    classes = ["cat", "dog"]
    sub = pd.DataFrame({"id": range(50), "label": p[:, 1]})
    answers = pd.DataFrame({"id": range(50), "label": y})
    assert score("log_loss", y, p, classes) == pytest.approx(log_loss(answers["label"], sub["label"]))


def test_roc_auc_scores_the_positive_column():
    """aerial-cactus / histopathologic graders: roc_auc_score(answers, P(positive))."""
    rng = np.random.default_rng(3)
    y, p = table(rng, 50, 2, sharpness=0.7)
    assert score("roc_auc", y, p, ["0", "1"], "1") == pytest.approx(roc_auc_score(y, p[:, 1]))
    assert score("roc_auc", y, p, ["0", "1"]) == pytest.approx(roc_auc_score(y, p[:, 1]))  # '': the second class
    # positive the first class: its own column against y == that class, the same AUC from the other side
    assert score("roc_auc", y, p, ["has", "no"], "has") == pytest.approx(roc_auc_score(y == 0, p[:, 0]))
    assert score("roc_auc", np.zeros(5, int), p[:5], ["0", "1"], "1") is None  # one class only: no AUC
    with pytest.raises(PaddyError, match="`competition.positive` is 'dog'"):
        score("roc_auc", y, p, ["0", "1"], "dog")


def test_mean_roc_auc_is_the_graders_mean_over_class_columns():
    """plant-pathology-2020's grader: the mean over class columns of roc_auc_score(answers[c], sub[c]), answers
    one-hot."""
    rng = np.random.default_rng(4)
    classes = ["healthy", "multiple_diseases", "rust", "scab"]
    y, p = table(rng, 80, 4, sharpness=0.8)
    answers = pd.DataFrame(np.eye(4, dtype=int)[y], columns=classes)
    sub = pd.DataFrame(p, columns=classes)
    expected = np.mean([roc_auc_score(answers[c], sub[c]) for c in classes])
    assert score("mean_roc_auc", y, p, classes) == pytest.approx(expected)
    # A class without rows in y has no AUC: left out of the mean, which the other columns make
    rows = y != 1
    expected = np.mean([roc_auc_score(answers[c][rows], sub[c][rows]) for c in classes if c != "multiple_diseases"])
    assert score("mean_roc_auc", y[rows], p[rows], classes) == pytest.approx(expected)


def test_qwk_is_cohens_quadratic_kappa_on_the_integer_grades():
    """aptos2019's grader: cohen_kappa_score(y_pred, y_true, weights='quadratic') on the diagnosis integers."""
    rng = np.random.default_rng(5)
    classes = ["0", "1", "2", "3", "4"]
    y, p = table(rng, 70, 5, sharpness=0.6)
    expected = cohen_kappa_score(p.argmax(1), y, weights="quadratic")
    assert score("qwk", y, p, classes) == pytest.approx(expected)
    # Grades whose values are not their positions: the kappa is over the values' own order
    grades = ["0", "2", "10"]
    y3, p3 = y % 3, p[:, :3]
    values = np.array([0, 2, 10])
    expected = cohen_kappa_score(values[p3.argmax(1)], values[y3], weights="quadratic")
    assert score("qwk", y3, p3, grades) == pytest.approx(expected)
    # Off by one grade costs less than off by four: quadratic weights
    near, far = np.eye(5)[np.minimum(y + 1, 4)], np.eye(5)[np.where(y < 2, 4, 0)]
    assert score("qwk", y, near, classes) > score("qwk", y, far, classes)


def test_metric_binds_the_settings():
    from paddy.settings.schema import CompetitionSettings

    comp = CompetitionSettings("", "id", "folders", "", "train/{label}/{id}", "test/{id}", "s.csv", "probability",
                               "dog", "roc_auc")  # fmt: skip
    metric = Metric.of(comp, ["cat", "dog"])
    y, p = np.array([0, 1, 1, 0]), np.array([[0.9, 0.1], [0.4, 0.6], [0.2, 0.8], [0.3, 0.7]])
    assert metric(y, p) == score("roc_auc", y, p, ["cat", "dog"], "dog") == 0.75
    assert metric.greater_is_better and not Metric("log_loss", ("a", "b")).greater_is_better
    with pytest.raises(PaddyError, match="not one of"):
        score("top5", y, p, ["cat", "dog"])


def test_validation_scores_the_competitions_metric_beside_the_loss(monkeypatch):
    """Each epoch's validation (paddy.training.loop.validate) adds valid_<metric> of the label target where the
    metric is not accuracy (valid_acc is already there), and leaves it out where the rows cannot define it."""
    import torch

    from paddy.training import loop

    targets = torch.tensor([[0, 1], [1, 0], [2, 1], [2, 0], [1, 1], [0, 0]])  # label, variety
    probs = torch.tensor([[0.7, 0.2, 0.1], [0.1, 0.8, 0.1], [0.2, 0.5, 0.3], [0.1, 0.1, 0.8], [0.3, 0.4, 0.3],
                          [0.4, 0.5, 0.1]])  # fmt: skip
    variety = torch.tensor([[0.3, 0.7], [0.6, 0.4], [0.5, 0.5], [0.9, 0.1], [0.2, 0.8], [0.5, 0.5]])
    both = torch.cat([probs, variety], 1)
    monkeypatch.setattr(loop, "predict_batches", lambda *args, **kwargs: iter([both[:4], both[4:]]))  # two batches
    loader = type("Loader", (), {"dataset": type("Data", (), {"targets": targets})})

    def run(metric, classes=("a", "b", "c")):
        return loop.validate(None, loader, None, "fp32", Heads((3, 2)), ("label", "variety"), Metric(metric, classes))

    out = run("f1_macro")
    assert out["valid_f1_macro"] == pytest.approx(f1_score(targets[:, 0], probs.argmax(1), average="macro"))
    assert out["valid_acc"] == pytest.approx(4 / 6) and set(out) == {"valid_loss", "valid_acc", "valid_acc_variety",
                                                                      "valid_f1_macro"}  # fmt: skip
    nll = torch.nn.functional.nll_loss
    expected = nll(probs.log(), targets[:, 0]) + nll(variety.log(), targets[:, 1])  # over both batches at once
    assert out["valid_loss"] == pytest.approx(expected.item(), rel=1e-6)
    assert out["valid_acc_variety"] == pytest.approx((variety.argmax(1) == targets[:, 1]).float().mean().item())
    assert run("qwk", ("0", "1", "2"))["valid_qwk"] == pytest.approx(
        cohen_kappa_score(targets[:, 0], probs.argmax(1), weights="quadratic")
    )
    assert run("log_loss")["valid_log_loss"] == pytest.approx(
        log_loss(targets[:, 0], probs.double() / probs.double().sum(1, True))
    )
    assert "valid_accuracy" not in run("accuracy") and len(run("accuracy")) == 3
    two = torch.cat([probs[:, :2], variety], 1)
    monkeypatch.setattr(loop, "predict_batches", lambda *args, **kwargs: iter([two]))
    one_class = type("Loader", (), {"dataset": type("Data", (), {"targets": targets * 0})})
    out = loop.validate(
        None, one_class, None, "fp32", Heads((2, 2)), ("label", "variety"), Metric("roc_auc", ("a", "b"))
    )
    assert "valid_roc_auc" not in out and "valid_acc" in out  # one class: no AUC, no key
