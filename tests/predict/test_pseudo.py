"""Pseudo-labels' arithmetic (paddy.predict.pseudo): the threshold the out-of-fold calibration chooses, each split's
kept test images from its own round-1 tables, and the kept and wrong counts against the generated truth."""

import numpy as np
import pandas as pd
import pytest

from paddy.files import write_json
from paddy.predict.pseudo import choose_threshold, count_kept, error_at, pseudo_labels, split_test_kind
from paddy.predict.tables import write_table
from paddy.report.build import pseudo_report

LABELS = ["a", "b", "c"]


def brute_force(confidence, correct, max_error):
    """Every candidate threshold tried, lowest first: the first whose kept rows are wrong at most max_error."""
    for t in sorted(set(confidence.tolist())):
        kept = confidence >= t
        if (~correct[kept]).mean() <= max_error:
            return t, (~correct[kept]).mean()
    return None, None


@pytest.mark.parametrize("seed", range(8))
@pytest.mark.parametrize("max_error", [0.01, 0.05, 0.2, 0.5])
def test_threshold_is_the_brute_force_one(seed, max_error):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(5, 300))
    confidence = np.round(rng.uniform(0.3, 1.0, n), 2)  # rounded: ties, which go in or out together
    correct = rng.uniform(size=n) < confidence  # calibrated-ish: the confident rows are right more often
    t, error = choose_threshold(confidence, correct, max_error)
    want_t, want_error = brute_force(confidence, correct, max_error)
    assert t == want_t
    assert (error is None and want_error is None) or error == pytest.approx(want_error)
    if t is not None:
        assert error_at(confidence, correct, t) == (int((confidence >= t).sum()), pytest.approx(error))


def test_no_threshold_when_the_most_confident_rows_are_wrong_too_often():
    confidence, correct = np.array([0.99, 0.99, 0.6]), np.array([False, True, False])
    assert choose_threshold(confidence, correct, 0.4) == (None, None)
    assert choose_threshold(confidence, correct, 0.5) == (0.99, 0.5)  # both 0.99 rows, never one of them
    assert choose_threshold(np.zeros(0), np.zeros(0, dtype=bool), 0.1) == (None, None)


def softmax_rows(rng, n, sharp):
    logits = rng.normal(size=(n, len(LABELS))) * sharp
    e = np.exp(logits - logits.max(1, keepdims=True))
    return (e / e.sum(1, keepdims=True)).astype(np.float32)


def test_each_split_keeps_its_own_models_confident_test_images(tmp_path):
    """Two models, two splits: split k's labels are the weighted mix of the models' test_<split k> tables, never of
    the mean over splits (whose models saw split k's validation rows)."""
    rng = np.random.default_rng(0)
    splits, weights, test_ids = ["v0", "v1"], {"m1": 0.25, "m2": 0.75}, np.array([f"t{i}" for i in range(40)])
    mixes = {}
    for split in splits:
        mixes[split] = 0
        for name, w in weights.items():
            p = softmax_rows(rng, len(test_ids), 4)
            write_table(tmp_path / name, split_test_kind(split, splits), test_ids, p, LABELS)
            mixes[split] = mixes[split] + np.float32(w) * p
    for name in weights:  # the mean over splits: a different table, which must not be read
        write_table(tmp_path / name, "test", test_ids, softmax_rows(rng, len(test_ids), 4), LABELS)
    write_json(tmp_path / "ensemble.json", {"weights": weights})
    kept = pseudo_labels(tmp_path, tmp_path / "ensemble.json", LABELS, splits, 0.8)
    for split in splits:
        mine = kept[kept.split == split]
        expected = mixes[split].max(1) >= 0.8
        assert 0 < expected.sum() < len(test_ids)
        assert mine.image_id.tolist() == test_ids[expected].tolist()
        assert mine.label.tolist() == np.asarray(LABELS)[mixes[split][expected].argmax(1)].tolist()
        assert np.allclose(mine.confidence, mixes[split][expected].max(1), atol=1e-6)
    assert pseudo_labels(tmp_path, tmp_path / "ensemble.json", LABELS, splits, None).empty
    assert split_test_kind("v0", ["v0"]) == "test"  # one split: its own table is the mean


def test_kept_and_wrong_counts_per_class_against_the_truth():
    rng = np.random.default_rng(1)
    ids = [f"t{i}" for i in range(60)]
    truth = pd.DataFrame({"image_id": ids, "label": rng.choice(LABELS, len(ids))})
    kept = pd.DataFrame({"image_id": rng.choice(ids, 30), "split": "v0", "label": rng.choice(LABELS, 30)})
    counts = count_kept(kept, LABELS, truth)
    actual = dict(zip(truth.image_id, truth.label))
    for c in LABELS:
        mine = kept[kept.label == c]
        assert counts["kept"][c] == len(mine)
        assert counts["wrong"][c] == sum(actual[i] != c for i in mine.image_id)
    assert counts["kept"]["total"] == 30 and counts["wrong"]["total"] == sum(counts["wrong"][c] for c in LABELS)
    assert count_kept(kept, LABELS, truth.iloc[:0])["wrong"] is None  # no truth (Kaggle's test set): no wrong count


@pytest.mark.parametrize("max_classes", [30, 2])
def test_the_report_shows_each_classs_kept_and_wrong_pseudo_labels(tmp_path, max_classes):
    rng = np.random.default_rng(2)
    ids = [f"t{i}" for i in range(50)]
    truth = pd.DataFrame({"image_id": ids, "label": rng.choice(LABELS, len(ids))})
    kept = pd.DataFrame({"image_id": ids[:35], "split": "v0", "label": rng.choice(LABELS, 35)})
    counts = count_kept(kept, LABELS, truth)
    write_json(tmp_path / "pseudo.json", {"enabled": True, "threshold": 0.9, **counts})
    metrics = pseudo_report(tmp_path / "pseudo.json", tmp_path, max_classes)
    table = pd.read_csv(tmp_path / "pseudo.csv")
    assert table["class"].tolist() == LABELS
    assert table.kept.tolist() == [counts["kept"][c] for c in LABELS]
    assert table.wrong.tolist() == [counts["wrong"][c] for c in LABELS]
    few = len(LABELS) <= max_classes  # more classes than report.max_classes: totals only, not a column per class
    assert metrics["pseudo_kept"] == (counts["kept"] if few else {"total": 35})
    assert metrics["pseudo_wrong"]["total"] == counts["wrong"]["total"] and ("a" in metrics["pseudo_wrong"]) == few
    write_json(tmp_path / "off.json", {"enabled": False})
    assert pseudo_report(tmp_path / "off.json", tmp_path, max_classes) is None
