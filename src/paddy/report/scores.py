"""The report's figures from out-of-fold probabilities: per-class precision, recall and F1 from one confusion
matrix, the most confused pairs, the images with the highest loss, the least confident ones, calibration.

Plain numpy on arrays (probabilities [row, class], true class indices), so each is checked against a brute-force
or scikit-learn answer on a fixed table (tests/test_report.py)."""

import numpy as np
import pandas as pd

EPS = 1e-15  # as the ensemble's log loss: a probability of exactly 0 for the true class would be an infinite loss


def confusion_counts(y, predicted, n_classes):
    """counts[actual, predicted] over the rows."""
    counts = np.zeros((n_classes, n_classes), dtype=int)
    np.add.at(counts, (np.asarray(y), np.asarray(predicted)), 1)
    return counts


def row_normalised(counts):
    """Each actual class's row as fractions of its rows; a class without rows stays 0."""
    totals = counts.sum(1, keepdims=True)
    return np.divide(counts, totals, out=np.zeros(counts.shape), where=totals > 0)


def per_class(counts, labels):
    """{precision, recall, f1: {label: value}, support: {label: rows}} from counts[actual, predicted]. A value with
    no rows to stand on (recall and F1 of a class without out-of-fold rows, precision of one never predicted) is
    left out, not written as 0 or NaN: it is undefined, and a 0 would read as a class always missed."""
    true_pos = np.diag(counts)
    support, predicted = counts.sum(1), counts.sum(0)
    out = {"precision": {}, "recall": {}, "f1": {}, "support": {}}
    for i, label in enumerate(labels):
        out["support"][label] = int(support[i])
        if predicted[i]:
            out["precision"][label] = float(true_pos[i] / predicted[i])
        if support[i]:
            out["recall"][label] = float(true_pos[i] / support[i])
            out["f1"][label] = float(2 * true_pos[i] / (support[i] + predicted[i]))  # 2TP / (2TP + FP + FN)
    return out


def most_confused(counts, labels, top=None):
    """The off-diagonal (actual, predicted, count) pairs, most frequent first (ties: actual, then predicted, in label
    order), as fastai's most_confused; an empty table when every row is right."""
    rows = [
        (labels[a], labels[p], int(counts[a, p]))
        for a in range(len(labels))
        for p in range(len(labels))
        if a != p and counts[a, p] > 0
    ]
    rows.sort(key=lambda r: -r[2])  # stable: label order among equal counts
    return pd.DataFrame(rows[:top], columns=["actual", "predicted", "count"])


def losses(probs, y):
    """Each row's log loss: -log p(true class)."""
    return -np.log(np.clip(probs[np.arange(len(y)), y], EPS, None))


def top_losses(loss, ids, n):
    """Positions of the n rows with the highest loss, highest first; equal losses in image_id order."""
    return np.lexsort((np.asarray(ids, dtype=str), -np.asarray(loss)))[:n]


def least_confident(probs, ids, n):
    """Positions of the n rows whose top probability is the lowest, lowest first; equal ones in image_id order."""
    return np.lexsort((np.asarray(ids, dtype=str), probs.max(1)))[:n]


def calibration(probs, y, n_bins):
    """(table, expected calibration error): per equal-width confidence bin (the top probability), its rows, mean
    confidence and accuracy; ECE is the rows-weighted mean gap between the two."""
    confidence, right = probs.max(1), probs.argmax(1) == np.asarray(y)
    edges = np.linspace(0, 1, n_bins + 1)
    # A confidence of exactly 1 falls in the last bin; a bin is (lo, hi], the first [0, hi].
    bins = np.clip(np.searchsorted(edges, confidence, side="left") - 1, 0, n_bins - 1)
    rows = []
    for b in range(n_bins):
        mask = bins == b
        count = int(mask.sum())
        rows.append(
            {
                "lo": float(edges[b]),
                "hi": float(edges[b + 1]),
                "count": count,
                "confidence": float(confidence[mask].mean()) if count else np.nan,
                "accuracy": float(right[mask].mean()) if count else np.nan,
            }
        )
    table = pd.DataFrame(rows)
    used = table[table["count"] > 0]
    ece = float((used["count"] * (used["accuracy"] - used["confidence"]).abs()).sum() / max(len(y), 1))
    return table, ece
