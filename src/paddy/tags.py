"""Multi-label competitions (`competition.form: tags`, Planet's and iMet's): each image carries a set of tags, written
as one space-separated string, scored by the mean F-beta over images (`competition.metric: mean_f2`; beta from the
name: paddy.settings.schema.fbeta_of).

The pipeline's tables hold one column per tag (labels.json's order) with each tag's sigmoid probability; the truth
is a 0/1 matrix of the same columns (tag_matrix). A tag is predicted where its probability passes its threshold:
`tags.threshold` during training, then thresholds fitted on the out-of-fold probabilities (fit_thresholds) for the
submission."""

from dataclasses import dataclass

import numpy as np

VALID_THRESHOLD = 0.5  # of each epoch's validation: fastai's accuracy_multi's (the ensemble fits the real ones)
# The candidate thresholds of a fit: fine enough that the best differs from the exact optimum by less than a sampling
# error of the out-of-fold rows, coarse enough that a per-tag fit over 10,000 tags stays seconds
GRID = np.round(np.arange(0.01, 1.0, 0.01), 2)


def split_tags(text):
    """The tags of one image's space-separated string ('' or NaN: none)."""
    return text.split() if isinstance(text, str) else []


def tag_matrix(labels, classes):
    """(N, C) uint8: row i marks the tags of labels[i] (space-separated strings) among `classes`; a tag that is not
    one of them is left out (the caller checks where that matters)."""
    column = {c: k for k, c in enumerate(classes)}
    out = np.zeros((len(labels), len(classes)), dtype=np.uint8)
    for i, text in enumerate(labels):
        for tag in split_tags(text):
            k = column.get(tag)
            if k is not None:
                out[i, k] = 1
    return out


def fbeta_rows(truth, predicted, beta):
    """Each image's F-beta between its true and predicted tag sets ((N,) float64); an image with neither true nor
    predicted tags scores 1 (nothing to find, nothing wrongly added), one with only one of them 0: scikit-learn's
    fbeta_score(average='samples', zero_division=1) per row (tests/test_tags.py holds them together)."""
    return fbeta_of_counts(*counts(truth, predicted, axis=1), beta, nothing=1.0)


def counts(truth, predicted, axis=None):
    """(true positives, false positives, false negatives) of predicted tags, per row (axis 1) or pooled (None)."""
    truth, predicted = np.asarray(truth, dtype=bool), np.asarray(predicted, dtype=bool)
    return tuple(
        (a & b).sum(axis, dtype=np.int64) for a, b in ((truth, predicted), (~truth, predicted), (truth, ~predicted))
    )


def fbeta_of_counts(tp, fp, fn, beta, nothing):
    """F-beta = (1 + b^2) tp / ((1 + b^2) tp + b^2 fn + fp) of counts (arrays alike); `nothing` where nothing is
    true or predicted (1 per image, as scikit-learn's samples average with zero_division=1; 0 pooled, as its micro
    average by default)."""
    b2 = beta * beta
    denominator = (1 + b2) * tp + b2 * fn + fp
    return np.where(denominator > 0, (1 + b2) * tp / np.maximum(denominator, 1), nothing)


def mean_fbeta(truth, predicted, beta):
    """The mean over images of F-beta (fbeta_rows): Planet's metric at beta 2 (`mean_f2`)."""
    return float(fbeta_rows(truth, predicted, beta).mean()) if len(truth) else float("nan")


def micro_fbeta(truth, predicted, beta):
    """F-beta of the (image, tag) pairs pooled, scikit-learn's fbeta_score(average='micro'): iMet 2020's metric at
    beta 1 (`micro_f1`); 0 when nothing is true and nothing predicted (scikit-learn's zero_division default)."""
    return float(fbeta_of_counts(*counts(truth, predicted), beta, nothing=0.0))


def tag_fbeta(truth, predicted, beta, average="samples"):
    """The F-beta a multi-label metric scores: averaged over images (samples: mean_f<beta>) or over every (image,
    tag) pair pooled (micro: micro_f<beta>)."""
    return micro_fbeta(truth, predicted, beta) if average == "micro" else mean_fbeta(truth, predicted, beta)


def binary_log_loss(truth, probs):
    """The mean binary cross-entropy over images and tags (what a multi-label model trains on), probabilities
    clipped like Kaggle's log loss; row chunk by row chunk, so a table of gigabytes is never copied whole."""
    truth = np.asarray(truth, dtype=bool)
    if not truth.size:
        return float("nan")
    step, total = max(1, 2**22 // truth.shape[1]), 0.0
    for lo in range(0, len(truth), step):
        p = np.clip(np.asarray(probs[lo : lo + step], dtype=np.float64), 1e-15, 1 - 1e-15)
        total -= np.where(truth[lo : lo + step], np.log(p), np.log1p(-p)).sum()
    return float(total / truth.size)


def tag_accuracy(truth, predicted):
    """fastai's accuracy_multi of predicted tags: the share of (image, tag) pairs predicted right."""
    return float((np.asarray(truth, dtype=bool) == np.asarray(predicted, dtype=bool)).mean())


def predict_tags(probs, thresholds, allow_empty=True):
    """(N, C) bool: the tags whose probability passes their threshold (a number, or one per tag); with allow_empty
    false an image with none gets its most probable tag, as a submission should send something for every image."""
    probs = np.asarray(probs, dtype=np.float32)  # float32 as the fits compare: the same tags for the same threshold
    predicted = probs > np.asarray(thresholds, dtype=np.float32)
    if not allow_empty and len(probs):
        empty = ~predicted.any(1)
        predicted[empty, probs[empty].argmax(1)] = True
    return predicted


def tag_strings(predicted, classes):
    """Each row's predicted tags as one space-separated string, in class order."""
    classes = np.asarray(classes, dtype=object)
    return [" ".join(classes[row]) for row in np.asarray(predicted, dtype=bool)]


@dataclass(frozen=True)
class Thresholds:
    """What fit_thresholds found: the global threshold, one per tag (the global one where a tag had too few
    positives), the tags that fell back, and the out-of-fold metric at the fixed, global and per-tag thresholds."""

    fixed: float
    global_: float
    per_tag: np.ndarray
    fell_back: tuple
    scores: dict

    def chosen(self, fit):
        """The thresholds `tags.fit` picks: none -> the fixed one, global -> the global one, per_tag -> per tag."""
        return {"none": self.fixed, "global": self.global_}.get(fit, self.per_tag)

    def as_metrics(self, classes, fit):
        """The fitted thresholds and their out-of-fold scores as metrics/thresholds.json holds them."""
        return {
            "fit": fit,
            "threshold_fixed": self.fixed,
            "threshold_global": self.global_,
            "per_tag": {c: round(float(t), 4) for c, t in zip(classes, self.per_tag)},
            "fell_back": [classes[k] for k in self.fell_back],
            **{f"oof_{k}": round(v, 6) for k, v in self.scores.items()},
        }


def _best(scores):
    """The index in GRID of the highest score; ties go to the threshold nearest 0.5 (the least surprising)."""
    scores = np.asarray(scores)
    best = np.flatnonzero(scores >= scores.max() - 1e-9)
    return int(best[np.argmin(np.abs(GRID[best] - 0.5))])


def _fbeta_sums(tp, fp, fn, beta):
    """The sum over rows of F-beta from per-row counts (arrays of any shape, rows last)."""
    return fbeta_of_counts(tp, fp, fn, beta, nothing=1.0).sum(-1)


def _fbeta_pooled(pooled, beta):
    """F-beta of pooled counts (tp, fp, fn) along the first axis."""
    return fbeta_of_counts(*pooled, beta, nothing=0.0)


def _filled(tp, fp, fn, empty, top_true):
    """Counts after an empty prediction gets its most probable tag (top_true: whether that tag is true)."""
    return tp + empty * top_true, fp + empty * ~top_true, fn - empty * top_true


def fit_global(truth, probs, beta, allow_empty=True, chunk=4096, average="samples"):
    """The one GRID threshold that maximises the F-beta over the rows (tag_fbeta's `average`). Each probability is
    placed once among the grid's thresholds (how many it passes), so every threshold's per-row counts come from one
    cumulative count per row instead of one pass over the table per threshold."""
    truth, probs = np.asarray(truth, dtype=bool), np.asarray(probs, dtype=np.float32)
    n_grid = len(GRID)
    sums, pooled = np.zeros(n_grid), np.zeros((3, n_grid))
    top_true = truth[np.arange(len(probs)), probs.argmax(1)] if len(probs) else np.zeros(0, bool)
    for lo in range(0, len(probs), chunk):
        p, y = probs[lo : lo + chunk], truth[lo : lo + chunk]
        passes = np.searchsorted(GRID.astype(np.float32), p, side="left")  # p > GRID[j] for j < passes
        rows = np.repeat(np.arange(len(p)), p.shape[1]).reshape(p.shape)
        flat = (rows * (n_grid + 1) + passes).ravel()
        every = np.bincount(flat, minlength=len(p) * (n_grid + 1)).reshape(len(p), n_grid + 1)
        true = np.bincount(flat, weights=y.ravel(), minlength=len(p) * (n_grid + 1)).reshape(len(p), n_grid + 1)
        # counts of tags passing threshold j: those placed above j
        predicted = np.cumsum(every[:, ::-1], 1)[:, ::-1][:, 1:].T  # (grid, rows)
        tp = np.cumsum(true[:, ::-1], 1)[:, ::-1][:, 1:].T
        fp, fn = predicted - tp, y.sum(1) - tp
        if not allow_empty:
            tp, fp, fn = _filled(tp, fp, fn, predicted == 0, top_true[lo : lo + chunk])
        sums += _fbeta_sums(tp, fp, fn, beta)
        pooled += [tp.sum(1), fp.sum(1), fn.sum(1)]
    return float(GRID[_best(_fbeta_pooled(pooled, beta) if average == "micro" else sums)])


def fit_thresholds(truth, probs, beta, fixed=0.5, min_positives=20, allow_empty=True, average="samples", rounds=2):
    """Thresholds that maximise the F-beta (tag_fbeta's `average`) over the out-of-fold rows (truth (N, C) 0/1,
    probs (N, C)): the global one over GRID, then per tag by coordinate ascent from it: each tag in turn takes the GRID
    value that maximises the metric with the other tags' thresholds held, `rounds` times over. Per-image F-beta couples
    the tags (a tag's threshold moves the other tags' precision in the same image), and micro F-beta pools them, so a
    tag is fitted against the whole metric, not its own F-beta. A tag with fewer than min_positives positive rows
    keeps the global threshold: a threshold fitted on a handful of images follows their noise (tests/test_tags.py
    checks the fit against a brute-force search)."""
    truth, probs = np.asarray(truth, dtype=bool), np.asarray(probs, dtype=np.float32)
    start = fit_global(truth, probs, beta, allow_empty, average=average)
    per_tag = np.full(truth.shape[1], start, dtype=np.float64)
    positives = truth.sum(0)
    predicted = probs > per_tag.astype(np.float32)
    top_true = truth[np.arange(len(probs)), probs.argmax(1)] if len(probs) else np.zeros(0, bool)
    # Each row's counts of the predictions without the fill (tp, fp, fn, tags predicted), and for micro the pooled
    # counts with it, kept up to date tag by tag: fitting a tag then costs its rows, not the whole table
    rows = Counts(*counts(truth, predicted, axis=1), predicted.sum(1))
    pooled = np.array(counts(truth, predict_tags(probs, per_tag, allow_empty)), dtype=np.float64)
    for _ in range(rounds):
        for k in np.flatnonzero(positives >= min_positives):
            micro = pooled if average == "micro" else None
            fill = (allow_empty, top_true, micro)
            per_tag[k], pooled = _fit_tag(k, (truth, probs, predicted), rows, beta, fill, per_tag[k])
            predicted[:, k] = probs[:, k] > np.float32(per_tag[k])
    scores = {
        "fixed": tag_fbeta(truth, predict_tags(probs, fixed, allow_empty), beta, average),
        "global": tag_fbeta(truth, predict_tags(probs, start, allow_empty), beta, average),
        "per_tag": tag_fbeta(truth, predict_tags(probs, per_tag, allow_empty), beta, average),
    }
    fell_back = tuple(int(k) for k in np.flatnonzero(positives < min_positives))
    return Thresholds(fixed, start, per_tag, fell_back, scores)


@dataclass
class Counts:
    """Each row's true positives, false positives, false negatives and tags predicted, before the fill."""

    tp: np.ndarray
    fp: np.ndarray
    fn: np.ndarray
    n: np.ndarray


def _fit_tag(k, tables, rows, beta, fill, current):
    """(tag k's best GRID threshold with the other tags' predictions held, the pooled counts there for micro F-beta
    (fill: (allow_empty, whether each row's most probable tag is true, the pooled counts at k's `current` threshold,
    a GRID value, or None)), else None); `rows` (Counts) are updated to the new threshold. tables: (truth, probs,
    predicted without the fill). Only the rows whose probability of k passes the grid's lowest threshold change with
    it, so only they are scored."""
    truth, probs, predicted = tables
    allow_empty, top_true, pooled = fill
    at = np.flatnonzero(probs[:, k] > np.float32(GRID[0]))
    if not len(at):
        return float(GRID[0]), pooled
    tk, now = truth[at, k], predicted[at, k]
    # the rows' counts without tag k
    tp0, fp0 = rows.tp[at] - (tk & now), rows.fp[at] - (~tk & now)
    fn0, others = rows.fn[at] - (tk & ~now), rows.n[at] - now
    pk = probs[at, k][None, :] > GRID.astype(np.float32)[:, None]  # (grid, rows)
    tp, fp, fn = tp0 + (tk & pk), fp0 + (~tk & pk), fn0 + (tk & ~pk)
    raw = (tp, fp, fn)  # before the fill: what `rows` keeps
    if not allow_empty:
        tp, fp, fn = _filled(tp, fp, fn, (others == 0) & ~pk, top_true[at])
    if pooled is None:
        best, pooled_there = _best(_fbeta_sums(tp, fp, fn, beta)), None
    else:
        here = np.stack([tp.sum(1), fp.sum(1), fn.sum(1)])  # (3, grid): these rows' counts at each threshold
        outside = pooled - here[:, int(np.flatnonzero(np.isclose(GRID, current))[0])]
        best = _best(_fbeta_pooled(outside[:, None] + here, beta))
        pooled_there = outside + here[:, best]
    rows.tp[at], rows.fp[at], rows.fn[at] = (c[best] for c in raw)
    rows.n[at] = others + pk[best]
    return float(GRID[best]), pooled_there
