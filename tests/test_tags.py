"""paddy.tags: the mean F-beta against scikit-learn's, the threshold fits against a brute-force search, the tags
writer."""

import itertools

import numpy as np
import pytest
from sklearn.metrics import fbeta_score

from paddy.settings.schema import fbeta_of
from paddy.tags import (
    GRID,
    fit_global,
    fit_thresholds,
    mean_fbeta,
    micro_fbeta,
    predict_tags,
    tag_fbeta,
    tag_matrix,
    tag_strings,
)


def correlated(n=300, tags=5, seed=0):
    """Truth with co-occurrence (tag 1 mostly with tag 0, tag 4 rare) and noisy probabilities whose best
    thresholds differ per tag."""
    rng = np.random.default_rng(seed)
    truth = np.zeros((n, tags), dtype=np.uint8)
    truth[:, 0] = rng.random(n) < 0.6
    truth[:, 1] = truth[:, 0] & (rng.random(n) < 0.7)
    truth[:, 2] = rng.random(n) < 0.3
    truth[:, 3] = ~truth[:, 2].astype(bool) & (rng.random(n) < 0.5)
    truth[:, 4] = rng.random(n) < 0.05
    noise = rng.normal(0, 0.25, (n, tags))
    bias = np.array([0.0, -0.2, 0.15, -0.3, -0.35])
    probs = np.clip(0.25 + 0.5 * truth + noise + bias, 0, 1).astype(np.float32)
    return truth, probs


@pytest.mark.parametrize("beta", [1.0, 2.0, 0.5])
def test_mean_fbeta_is_scikit_learns_samples_average(beta):
    truth, probs = correlated()
    truth[:7] = 0  # images with no tag: scored 1 when nothing is predicted, 0 otherwise
    for threshold in (0.3, 0.5, 0.9):
        predicted = predict_tags(probs, threshold)
        expected = fbeta_score(truth, predicted, beta=beta, average="samples", zero_division=1)
        assert mean_fbeta(truth, predicted, beta) == pytest.approx(expected, abs=1e-12)


@pytest.mark.parametrize("beta", [1.0, 2.0])
def test_micro_fbeta_is_scikit_learns_micro_average(beta):
    truth, probs = correlated(seed=5)
    for threshold in (0.2, 0.5, 0.8):
        predicted = predict_tags(probs, threshold)
        expected = fbeta_score(truth, predicted, beta=beta, average="micro")
        assert micro_fbeta(truth, predicted, beta) == pytest.approx(expected, abs=1e-12)


def test_beta_from_the_metrics_name():
    assert (fbeta_of("mean_f2"), fbeta_of("mean_f1"), fbeta_of("micro_f1"), fbeta_of("mean_f0.5")) == (
        2.0,
        1.0,
        1.0,
        None,
    )
    assert fbeta_of("accuracy") is None and fbeta_of("mean_roc_auc") is None


@pytest.mark.parametrize("average", ["samples", "micro"])
@pytest.mark.parametrize("allow_empty", [True, False])
def test_global_fit_is_the_brute_force_best(allow_empty, average):
    truth, probs = correlated(seed=1)
    scores = [tag_fbeta(truth, predict_tags(probs, t, allow_empty), 2.0, average) for t in GRID]
    fitted = fit_global(truth, probs, 2.0, allow_empty, chunk=64, average=average)  # several chunks
    assert tag_fbeta(truth, predict_tags(probs, fitted, allow_empty), 2.0, average) == pytest.approx(max(scores))


@pytest.mark.parametrize("average", ["samples", "micro"])
@pytest.mark.parametrize("allow_empty", [True, False])
def test_per_tag_fit_is_a_coordinate_optimum_of_the_whole_metric(allow_empty, average):
    """No single tag's threshold can be moved to another grid value for a better mean F2 (a brute-force check of
    every tag and value), and the per-tag fit beats the global one, which beats the fixed 0.5."""
    truth, probs = correlated(seed=2)
    fit = fit_thresholds(truth, probs, 2.0, min_positives=1, allow_empty=allow_empty, average=average, rounds=4)
    best = tag_fbeta(truth, predict_tags(probs, fit.per_tag, allow_empty), 2.0, average)
    assert best == pytest.approx(fit.scores["per_tag"])
    for k, t in itertools.product(range(truth.shape[1]), GRID):
        moved = fit.per_tag.copy()
        moved[k] = t
        assert tag_fbeta(truth, predict_tags(probs, moved, allow_empty), 2.0, average) <= best + 1e-9
    assert fit.scores["per_tag"] >= fit.scores["global"] >= fit.scores["fixed"]
    assert fit.scores["per_tag"] > fit.scores["fixed"] + 0.01


def test_per_tag_fit_on_a_small_grid_matches_exhaustive_search():
    """Two tags, a coarse grid: the coordinate ascent reaches the exhaustive search's best pair."""
    truth, probs = correlated(n=200, tags=5, seed=3)
    truth, probs = truth[:, :2], probs[:, :2]
    fit = fit_thresholds(truth, probs, 2.0, min_positives=1, rounds=6)
    exhaustive = max(mean_fbeta(truth, predict_tags(probs, [a, b]), 2.0) for a in GRID for b in GRID)
    assert fit.scores["per_tag"] == pytest.approx(exhaustive, abs=2e-3)


def test_a_tag_with_too_few_positives_keeps_the_global_threshold():
    truth, probs = correlated(seed=4)
    fit = fit_thresholds(truth, probs, 2.0, min_positives=40)
    rare = int(np.flatnonzero(truth.sum(0) < 40)[0])
    assert rare in fit.fell_back and fit.per_tag[rare] == fit.global_


def test_tags_writer():
    classes = ["clear", "haze", "primary", "water"]
    labels = ["primary clear", "", "haze water primary", "unknown primary"]
    matrix = tag_matrix(labels, classes)
    assert matrix.tolist() == [[1, 0, 1, 0], [0, 0, 0, 0], [0, 1, 1, 1], [0, 0, 1, 0]]
    probs = np.array([[0.9, 0.1, 0.8, 0.0], [0.1, 0.3, 0.2, 0.1], [0.2, 0.6, 0.9, 0.55]], dtype=np.float32)
    assert tag_strings(predict_tags(probs, 0.5), classes) == ["clear primary", "", "haze primary water"]
    filled = tag_strings(predict_tags(probs, 0.5, allow_empty=False), classes)
    assert filled == ["clear primary", "haze", "haze primary water"]
    per_tag = tag_strings(predict_tags(probs, [0.5, 0.5, 0.5, 0.6]), classes)
    assert per_tag[2] == "haze primary"
