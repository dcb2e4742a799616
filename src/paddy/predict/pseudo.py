"""Pseudo-labels (docs/techniques.md): the confidence threshold from the ensemble's out-of-fold calibration, the test
images the ensemble is at least that confident of with its most probable label, and how many of those the generated
truth says are wrong. numpy and pandas only: the pseudo stage, switched off, never imports torch.

Each split's pseudo-labels come from that split's own round-1 models (the tta stage's `test_<split>` tables where
there are several splits), mixed by the ensemble's weights: a split's round-2 model then never learns from a label
that a model which saw its validation rows gave, and its out-of-fold score stays honest."""

import numpy as np
import pandas as pd

from paddy.predict.ensemble import aligned, read_choice, temper
from paddy.predict.tables import Stack, common_ids, read_tables


def choose_threshold(confidence, correct, max_error):
    """The lowest confidence t, among the rows' own, at which the rows at least t confident are wrong at most
    `max_error` of the time: (t, their error), or (None, None) where none is (the most confident rows are wrong too
    often, or there are no rows). A threshold keeps every row of its confidence, so ties go in or out together."""
    confidence, correct = np.asarray(confidence, dtype=np.float64), np.asarray(correct, dtype=bool)
    order = np.argsort(-confidence, kind="stable")
    sorted_conf = confidence[order]
    wrong = np.cumsum(~correct[order])
    kept = np.arange(1, len(order) + 1)
    ends = np.r_[sorted_conf[1:] != sorted_conf[:-1], True] if len(order) else np.zeros(0, dtype=bool)
    ok = np.flatnonzero(ends & (wrong / kept <= max_error))
    if not len(ok):
        return None, None
    i = ok[-1]  # the most rows, so the lowest confidence, whose error is within bounds
    return float(sorted_conf[i]), float(wrong[i] / kept[i])


def error_at(confidence, correct, threshold):
    """(rows at least `threshold` confident, the share of them wrong; None where there are none)."""
    kept = np.asarray(confidence) >= threshold
    n = int(kept.sum())
    return n, (float((~np.asarray(correct, dtype=bool)[kept]).mean()) if n else None)


def _weights(stack, weights):
    w = np.array([float(weights[name]) for name in stack.names])
    return w / w.sum()


def oof_calibration(preds_dir, ensemble_json, labels, train_truth):
    """(confidence, correct) of each out-of-fold row of the ensemble: its top probability and whether that class is
    the true one, mixed as the submission was (metrics/ensemble.json's weights and temperature)."""
    weights, temperature = read_choice(ensemble_json)
    stack, y = aligned(read_tables(preds_dir, list(weights), "oof", labels), train_truth, labels)
    mix = temper(stack.mix(_weights(stack, weights)), temperature)
    return mix.max(1), mix.argmax(1) == y


def split_test_kind(split, splits):
    """The tta stage's table of `split`'s own test probabilities: `test` where there is one split (the same), else
    test_<split> (written beside the mean over splits)."""
    return "test" if len(splits) == 1 else f"test_{split}"


def pseudo_labels(preds_dir, ensemble_json, labels, splits, threshold):
    """The kept test images of every split: a DataFrame of image_id, split, label (the ensemble's argmax),
    confidence; per split, the images its own round-1 models' ensemble gives a top probability >= threshold (None:
    none)."""
    weights, temperature = read_choice(ensemble_json)
    parts = []
    for split in splits:
        tables = read_tables(preds_dir, list(weights), split_test_kind(split, splits), labels)
        stack = Stack(tables, common_ids(tables))
        mix = temper(stack.mix(_weights(stack, weights)), temperature)
        confidence = mix.max(1)
        keep = np.zeros(len(mix), dtype=bool) if threshold is None else confidence >= threshold
        parts.append(
            pd.DataFrame(
                {
                    "image_id": stack.ids[keep],
                    "split": split,
                    "label": np.asarray(labels)[mix.argmax(1)[keep]],
                    "confidence": confidence[keep].astype(np.float64),
                }
            )
        )
    return pd.concat(parts, ignore_index=True)


def count_kept(kept, labels, truth):
    """{"kept": {"total", <class>: n}, "wrong": likewise, or None without the test set's truth} over the rows of
    `kept` (pseudo_labels': a split's row each), by pseudo-label class; truth: image_id, label (data/truth.csv,
    header only when unknown)."""
    per_class = kept["label"].value_counts().reindex(labels, fill_value=0)
    out = {"kept": {"total": int(per_class.sum()), **{c: int(n) for c, n in per_class.items()}}, "wrong": None}
    if len(truth):
        actual = kept["image_id"].map(truth.set_index("image_id")["label"])
        wrong = kept.loc[actual.notna().to_numpy() & (actual.to_numpy() != kept["label"].to_numpy()), "label"]
        counts = wrong.value_counts().reindex(labels, fill_value=0)
        out["wrong"] = {"total": int(counts.sum()), **{c: int(n) for c, n in counts.items()}}
    return out
