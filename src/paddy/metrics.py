"""The competition metrics (`competition.metric`), one place, from scikit-learn, computed the way Kaggle (and the
MLE-bench graders) compute them.

Every metric scores the pipeline's probabilities: y holds the true class indices, probs [row, class] one column per
class in `classes` order (data/prepared/labels.json). Metrics of a label (accuracy, F1, QWK) take the argmax, those
of probabilities (log loss, ROC AUC) the columns themselves. A multi-label competition's mean F-beta (mean_f2) takes
y as a 0/1 [row, tag] matrix and the tags whose probability passes a threshold (paddy.tags).
"""

import dataclasses
from dataclasses import dataclass

import numpy as np
from sklearn.metrics import accuracy_score, cohen_kappa_score, f1_score, roc_auc_score

from paddy.errors import PaddyError
from paddy.settings.schema import LABEL_METRICS, fbeta_of, tag_average
from paddy.tags import predict_tags, tag_fbeta

# Kaggle's log loss clips every probability to [1e-15, 1 - 1e-15] and rescales each row to sum to 1 before scoring.
CLIP = 1e-15
GREATER_IS_BETTER = {
    "accuracy": True,
    "log_loss": False,
    "f1_micro": True,
    "f1_macro": True,
    "roc_auc": True,
    "mean_roc_auc": True,
    "qwk": True,
}


def is_metric(name):
    """A competition metric paddy computes: one of GREATER_IS_BETTER's, or a tags metric (mean_f<beta>,
    micro_f<beta>) of any beta."""
    return isinstance(name, str) and (name in GREATER_IS_BETTER or fbeta_of(name) is not None)


def greater_is_better(metric):
    return GREATER_IS_BETTER.get(metric, fbeta_of(metric) is not None)


def kaggle_clip(probs):
    """Probabilities as Kaggle's log loss reads them: clipped to [1e-15, 1 - 1e-15], each row (of a 2-D table)
    rescaled to sum to 1."""
    p = np.clip(np.asarray(probs, dtype=float), CLIP, 1 - CLIP)
    return p / p.sum(-1, keepdims=True) if p.ndim == 2 else p


def log_loss_of(y, probs):
    """Kaggle's log loss of probs [row, class] against the true class indices y: scikit-learn's log_loss of the
    kaggle_clip'd probabilities, computed in row chunks of float64 so a table of 10,000 classes is never copied
    whole (test_metrics checks it against scikit-learn)."""
    y = np.asarray(y)
    if len(y) == 0:
        raise PaddyError("No rows to score the log loss on.")
    step = max(1, 2**22 // max(probs.shape[1], 1))
    total = 0.0
    for start in range(0, len(y), step):
        p = kaggle_clip(probs[start : start + step])
        total -= np.log(p[np.arange(len(p)), y[start : start + step]]).sum()
    return float(total / len(y))


def positive_index(classes, positive=""):
    """The column of the positive class of a binary metric: `positive`, or the second class (scikit-learn's
    positive label for two sorted classes) when it is ''."""
    classes = list(classes)
    if not positive:
        return len(classes) - 1
    if positive not in classes:
        raise PaddyError(
            f"`competition.positive` is {positive!r}, which is not one of the classes ({', '.join(classes[:8])}): "
            "set it to the class whose probability the submission sends."
        )
    return classes.index(positive)


def _auc(truth, column):
    """ROC AUC of one column against a 0/1 truth, or None when the truth holds one value only (no AUC exists)."""
    if truth.min() == truth.max():
        return None
    return float(roc_auc_score(truth, column))


def score(metric, y, probs, classes, positive="", tags=(0.5, True)):
    """The competition's metric (METRICS in paddy.settings.schema) of probs [row, class] against the true class
    indices y; None where the rows cannot define it (ROC AUC with one class only in y).

    - accuracy, f1_micro, f1_macro: of the argmax; f1_macro averages over the classes present in y or predicted
      (scikit-learn's default, as the graders call it).
    - log_loss: probabilities clipped to [1e-15, 1 - 1e-15] and rows rescaled to sum to 1 (Kaggle's); with two
      classes this equals the log loss of the single P(positive) column a `probability` form sends.
    - roc_auc: binary, the positive class's column (`positive`, else the second class) against y == positive.
    - mean_roc_auc: the ROC AUC of each class column against y == that class (one-vs-rest), averaged; a class
      whose column has no positive or no negative row in y has no AUC and is left out of the mean (the grader
      would fail on it); None when no class has one.
    - qwk: Cohen's kappa with quadratic weights between the true and the argmax class values as integers.
    - mean_f<beta> (multi-label: y a 0/1 [row, tag] matrix): the mean over images of F-beta between the true tags
      and those whose probability passes the threshold (tags: (a number, or one per tag; allow_empty: false gives
      an image with no tag above its threshold its most probable one)), paddy.tags.mean_fbeta; micro_f<beta>, the
      F-beta of every (image, tag) pair pooled, paddy.tags.micro_fbeta.
    """
    y = np.asarray(y)
    probs = np.asarray(probs)
    beta = fbeta_of(metric)
    if beta is not None:
        return tag_fbeta(y, predict_tags(probs, *tags), beta, tag_average(metric))
    if metric in LABEL_METRICS:
        return score_labels(metric, y, probs.argmax(1), classes)
    if metric == "log_loss":
        return log_loss_of(y, probs)
    if metric == "roc_auc":
        k = positive_index(classes, positive)
        return _auc((y == k).astype(int), probs[:, k])
    if metric == "mean_roc_auc":
        aucs = [_auc((y == k).astype(int), probs[:, k]) for k in range(probs.shape[1])]
        aucs = [a for a in aucs if a is not None]
        return float(np.mean(aucs)) if aucs else None
    raise PaddyError(f"`competition.metric` is {metric!r}, not one of: {', '.join(GREATER_IS_BETTER)}.")


def score_labels(metric, y, predicted, classes):
    """A metric of a label (LABEL_METRICS) from the predicted class indices: what score() gives of probabilities
    whose argmax they are."""
    if metric == "accuracy":
        return float(accuracy_score(y, predicted))
    if metric in ("f1_micro", "f1_macro"):
        return float(f1_score(y, predicted, average=metric.removeprefix("f1_")))
    values = np.array([int(c) for c in classes])  # qwk
    return float(cohen_kappa_score(values[y], values[predicted], weights="quadratic"))


def format_score(score):
    """A score as printed and drawn: 4 decimals, or `undefined` (ROC AUC over rows of one class)."""
    return "undefined" if score is None else f"{score:.4f}"


def better(metric, a, b):
    """Whether score a beats score b under `metric` (None, an undefined score, beats nothing)."""
    if a is None or b is None:
        return a is not None
    return a > b if greater_is_better(metric) else a < b


@dataclass(frozen=True)
class Metric:
    """The competition's metric bound to its classes: `metric(y, probs)` is score(name, y, probs, classes, positive)."""

    name: str
    classes: tuple[str, ...]
    positive: str = ""
    threshold: float | tuple = 0.5  # a multi-label metric's: the tags predicted are those above it (one per tag)
    allow_empty: bool = True  # a multi-label metric's: false gives an image with no tag its most probable one

    @classmethod
    def of(cls, comp, classes, tags=None):
        """The metric of the `competition` settings (CompetitionSettings) over these classes; a multi-label one at
        the `tags` settings' (TagSettings) fixed threshold."""
        if tags is None:
            return cls(comp.metric, tuple(classes), comp.positive)
        return cls(comp.metric, tuple(classes), comp.positive, tags.threshold, tags.allow_empty)

    def at(self, threshold):
        """The same metric at other thresholds (a multi-label one's fitted thresholds)."""
        return dataclasses.replace(self, threshold=threshold)

    def __call__(self, y, probs):
        return score(self.name, y, probs, self.classes, self.positive, (self.threshold, self.allow_empty))

    def of_labels(self, y, predicted):
        """The metric of the predicted class indices (a metric of a label only, LABEL_METRICS)."""
        return score_labels(self.name, y, predicted, self.classes)

    @property
    def multi_label(self):
        return fbeta_of(self.name) is not None

    @property
    def greater_is_better(self):
        return greater_is_better(self.name)
