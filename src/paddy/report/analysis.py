"""The report's figures from out-of-fold predictions: per-class precision, recall and F1, the confusion matrix of
the classes shown and the most confused pairs, the images with the highest loss, the least confident ones,
calibration.

Plain numpy on per-row arrays (true and predicted class indices, the top and the true class's probability), never
a [row, class] table nor an N x N matrix of all classes, so a competition of 10,000 classes costs what its rows do;
each is checked against a brute-force or scikit-learn answer on a fixed table (tests/report/test_report.py)."""

import numpy as np
import pandas as pd

from paddy.metrics import CLIP  # Kaggle's: a probability of exactly 0 for the true class, an infinite loss


def confusion_counts(y, predicted, shown):
    """counts[actual, predicted] over the rows, for the class indices `shown` (all of them, or the ones a picture
    draws), in that order; a row whose actual or predicted class is not shown is not counted."""
    position = np.full(max(max(shown), int(np.max(y)), int(np.max(predicted))) + 1, -1)
    position[list(shown)] = np.arange(len(shown))
    a, p = position[np.asarray(y)], position[np.asarray(predicted)]
    keep = (a >= 0) & (p >= 0)
    counts = np.zeros((len(shown), len(shown)), dtype=int)
    np.add.at(counts, (a[keep], p[keep]), 1)
    return counts


def row_normalised(counts, totals):
    """Each actual class's row as fractions of its rows (`totals`, all of them: those predicted as a class not
    shown included); a class without rows stays 0."""
    totals = np.asarray(totals)[:, None]
    return np.divide(counts, totals, out=np.zeros(counts.shape), where=totals > 0)


def per_class(y, predicted, labels):
    """{precision, recall, f1: {label: value}, support: {label: rows}} of the predicted class indices against the
    true ones, counted per class (no N x N matrix: a competition may have 10,000 classes). A value with no rows to
    stand on (recall and F1 of a class without out-of-fold rows, precision of one never predicted) is left out, not
    written as 0 or NaN: it is undefined, and a 0 would read as a class always missed."""
    y, predicted = np.asarray(y), np.asarray(predicted)
    n = len(labels)
    support, guessed = np.bincount(y, minlength=n), np.bincount(predicted, minlength=n)
    true_pos = np.bincount(y[y == predicted], minlength=n)
    return figures_of_counts(support, guessed, true_pos, labels)


def figures_of_counts(support, guessed, true_pos, labels):
    """per_class's figures from each label's true rows, predicted rows and rows both (per_class; a multi-label
    report's per_tag): a value with nothing to stand on is left out."""
    out = {"precision": {}, "recall": {}, "f1": {}, "support": {}}
    for i, label in enumerate(labels):
        out["support"][label] = int(support[i])
        if guessed[i]:
            out["precision"][label] = float(true_pos[i] / guessed[i])
        if support[i]:
            out["recall"][label] = float(true_pos[i] / support[i])
            out["f1"][label] = float(2 * true_pos[i] / (support[i] + guessed[i]))  # 2TP / (2TP + FP + FN)
    return out


def most_confused(y, predicted, labels, top=None):
    """The (actual, predicted, count) pairs of the wrong rows, most frequent first (ties: actual, then predicted,
    in label order), as fastai's most_confused; an empty table when every row is right. Counted from the pairs
    that occur, not an N x N matrix."""
    y, predicted = np.asarray(y), np.asarray(predicted)
    wrong = y != predicted
    codes, counts = np.unique(y[wrong].astype(np.int64) * len(labels) + predicted[wrong], return_counts=True)
    order = np.argsort(-counts, kind="stable")[:top]  # np.unique sorts the codes: label order among equal counts
    rows = [(labels[c // len(labels)], labels[c % len(labels)], int(n)) for c, n in zip(codes[order], counts[order])]
    return pd.DataFrame(rows, columns=["actual", "predicted", "count"])


def most_involved(pairs, labels, n):
    """The n classes (in label order) that take part in the most confusions, as actual or predicted: the ones a
    confusion picture of a competition with more classes than it can show draws."""
    involvement = pd.concat([pairs.set_index("actual")["count"], pairs.set_index("predicted")["count"]])
    involvement = involvement.groupby(level=0).sum().sort_values(ascending=False, kind="stable")
    chosen = set(involvement.index[:n])
    if len(chosen) < n:  # few confusions: fill with the first classes
        chosen |= set([label for label in labels if label not in chosen][: n - len(chosen)])
    return [label for label in labels if label in chosen]


def losses(p_true):
    """Each row's log loss: -log p(true class)."""
    return -np.log(np.clip(np.asarray(p_true, dtype=float), CLIP, None))


def top_losses(loss, ids, n):
    """Positions of the n rows with the highest loss, highest first; equal losses in image_id order."""
    return np.lexsort((np.asarray(ids, dtype=str), -np.asarray(loss)))[:n]


def least_confident(confidence, ids, n):
    """Positions of the n rows whose top probability is the lowest, lowest first; equal ones in image_id order."""
    return np.lexsort((np.asarray(ids, dtype=str), np.asarray(confidence)))[:n]


def calibration(confidence, right, n_bins):
    """(table, expected calibration error): per equal-width confidence bin (each row's top probability), its rows,
    mean confidence and accuracy (the share of `right` rows); ECE is the rows-weighted mean gap between the two."""
    confidence, right = np.asarray(confidence, dtype=float), np.asarray(right)
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
    ece = float((used["count"] * (used["accuracy"] - used["confidence"]).abs()).sum() / max(len(confidence), 1))
    return table, ece
