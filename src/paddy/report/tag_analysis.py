"""The report's figures of a multi-label competition (competition.form tags), from out-of-fold sigmoid
probabilities [row, tag], their 0/1 truth and the tags predicted at the submission's thresholds: per-tag precision,
recall and F1, each tag's found, missed and added images, each image's binary cross-entropy, the decision nearest
its threshold, and calibration per tag.

A table of tags is [row, tag] by nature (each tag is its own yes/no decision), so unlike analysis.py these read
whole tables, in row chunks (paddy.predict.tables.chunks) where they would otherwise copy one in float64; each is
checked against scikit-learn or a brute-force answer (tests/report/test_tags_report.py)."""

import numpy as np
import pandas as pd

from paddy.metrics import CLIP
from paddy.predict.tables import chunks
from paddy.report.analysis import figures_of_counts

ALL_TAGS = "(all tags)"  # the calibration table's name for every (image, tag) pair pooled


def per_tag(truth, predicted, labels):
    """{precision, recall, f1: {tag: value}, support: {tag: images}} of the predicted tags against the true ones, each
    tag its own binary decision (scikit-learn's precision_recall_fscore_support(average=None) of the two 0/1
    matrices). As analysis.per_class: a value with nothing to stand on (recall and F1 of a tag no out-of-fold image
    has, precision of one never predicted) is left out, not written as 0."""
    truth, predicted = np.asarray(truth, dtype=bool), np.asarray(predicted, dtype=bool)
    support, guessed = truth.sum(0), predicted.sum(0)
    return figures_of_counts(support, guessed, (truth & predicted).sum(0), labels)


def tag_confusion(truth, predicted, labels):
    """Each tag's images with it (`images`), found or missed, and those without it, added (given the tag wrongly) or
    left out: scikit-learn's multilabel_confusion_matrix as one row per tag."""
    truth, predicted = np.asarray(truth, dtype=bool), np.asarray(predicted, dtype=bool)
    found = (truth & predicted).sum(0)
    images, guessed = truth.sum(0), predicted.sum(0)
    return pd.DataFrame(
        {
            "tag": list(labels),
            "images": images,
            "found": found,
            "missed": images - found,
            "added": guessed - found,
            "left_out": len(truth) - images - guessed + found,
        }
    )


def confusion_shares(confusion):
    """The confusion's counts as shares: found and missed of the images with the tag, added and left out of those
    without it (0 where there are none), so a rare tag's misses show as clearly as a common one's."""
    with_tag = confusion["images"].to_numpy()
    without = (confusion["added"] + confusion["left_out"]).to_numpy()
    out = confusion[["tag"]].copy()
    for column, total in (("found", with_tag), ("missed", with_tag), ("added", without), ("left_out", without)):
        out[column] = np.divide(confusion[column].to_numpy(), total, out=np.zeros(len(out)), where=total > 0)
    return out


def most_missed_and_added(confusion):
    """The tags with any mistake, most mistakes (missed + added) first, ties in tag order: the multi-label answer to
    the most confused pairs."""
    wrong = confusion[(confusion["missed"] > 0) | (confusion["added"] > 0)]
    order = np.argsort(-(wrong["missed"] + wrong["added"]).to_numpy(), kind="stable")
    return wrong.iloc[order][["tag", "missed", "added", "images", "found"]].reset_index(drop=True)


def row_losses(truth, probs):
    """Each image's binary cross-entropy, the mean over its tags of -log p(the tag's true value), probabilities
    clipped as paddy.tags.binary_log_loss clips them (whose value is these rows' mean)."""
    truth = np.asarray(truth, dtype=bool)
    out = np.empty(len(truth))
    for part in chunks(len(truth), truth.shape[1]):
        p = np.clip(np.asarray(probs[part], dtype=np.float64), CLIP, 1 - CLIP)
        out[part] = -np.where(truth[part], np.log(p), np.log1p(-p)).mean(1)
    return out


def nearest_decision(probs, thresholds):
    """(each row's tag nearest its threshold, the distance): the decision a little noise would turn first, so the
    rows nearest are those whose tag set is least safe."""
    distance = np.abs(np.asarray(probs, dtype=np.float64) - np.asarray(thresholds, dtype=np.float64))
    k = distance.argmin(1) if len(distance) else np.zeros(0, dtype=int)
    return k, distance[np.arange(len(distance)), k]


def calibration_sums(probs, truth, n_bins):
    """(images, summed probability, images with the tag), each [tag, bin], per tag and equal-width bin of the tag's
    probability, binned as analysis.calibration bins: a bin is (lo, hi], the first [0, hi]."""
    truth = np.asarray(truth, dtype=bool)
    n_tags = truth.shape[1]
    edges = np.linspace(0, 1, n_bins + 1)
    offset = np.arange(n_tags) * n_bins
    sums = np.zeros((3, n_tags * n_bins))
    for part in chunks(len(truth), n_tags):
        p = np.asarray(probs[part], dtype=np.float64)
        cells = (np.clip(np.searchsorted(edges, p, side="left") - 1, 0, n_bins - 1) + offset).ravel()
        for s, weights in enumerate((None, p.ravel(), truth[part].ravel())):
            sums[s] += np.bincount(cells, weights=weights, minlength=n_tags * n_bins)
    return tuple(s.reshape(n_tags, n_bins) for s in sums)


def calibration_table(count, p_sum, positives):
    """(table, expected calibration error) of one tag's bins (or every tag's summed: the pooled pairs): per bin its
    images, mean probability (`confidence`) and the share that has the tag (`frequency`); ECE is the
    images-weighted mean gap between the two, analysis.calibration's with the tag's presence as `right`."""
    n_bins = len(count)
    edges = np.linspace(0, 1, n_bins + 1)
    used = count > 0
    confidence = np.divide(p_sum, count, out=np.full(n_bins, np.nan), where=used)
    frequency = np.divide(positives, count, out=np.full(n_bins, np.nan), where=used)
    table = pd.DataFrame(
        {
            "lo": edges[:-1],
            "hi": edges[1:],
            "count": count.astype(int),
            "confidence": confidence,
            "frequency": frequency,
        }
    )
    gaps = np.abs(frequency[used] - confidence[used])
    return table, float((count[used] * gaps).sum() / max(count.sum(), 1))
