"""Weighted mean of the models' probabilities -> argmax -> labels, in sample_submission order.

The weights are each model's `models.<name>.weight`, or fitted: non-negative, summing to 1, minimising the
out-of-fold log loss. Both are scored either way, the fit also cross-validated (fitted on some out-of-fold rows,
scored on the others), since fitting and scoring on the same rows flatters it.
"""

import warnings
from pathlib import Path

import numpy as np
import pandas as pd
from scipy.optimize import minimize
from sklearn.metrics import accuracy_score, log_loss
from sklearn.model_selection import KFold, StratifiedKFold

from paddy.data.split import split_columns
from paddy.errors import PaddyError
from paddy.predict.submission import make_submission, validate_submission

EPS = 1e-15  # a probability of exactly 0 for the true label would make the log loss infinite


def read_predictions(preds_dir, name, kind):
    path = Path(preds_dir) / name / f"{kind}_probs.csv"
    if not path.exists():
        raise PaddyError(
            f"{path} is missing: model {name!r} has no TTA predictions yet. Run `dvc repro tta@{name}` (or `dvc "
            "repro`) first."
        )
    return pd.read_csv(path, dtype={"image_id": str})


def weighted_mean(frames, weights, labels):
    """Mean of per-model probability tables (image_id + label columns) over their common rows, weighted."""
    for name, df in frames.items():
        if list(df.columns[1:]) != list(labels):
            raise PaddyError(f"Predictions of {name!r} have labels {list(df.columns[1:])}, not {list(labels)}.")
    ids = list(frames.values())[0]["image_id"]
    for df in frames.values():
        ids = ids[ids.isin(set(df["image_id"]))]
    total = sum(weights.values())
    if total <= 0:
        raise PaddyError("Every `models.<name>.weight` in params.yaml is 0: give at least one model a weight > 0.")
    mean = sum(w * frames[n].set_index("image_id").loc[ids, labels].to_numpy() for n, w in weights.items()) / total
    return pd.DataFrame(mean, columns=labels).assign(image_id=ids.to_numpy())


def accuracy(probs, truth, labels):
    """Accuracy of argmax(probs) against truth (image_id,label) on the rows both have; None if none."""
    merged = probs.merge(truth, on="image_id")
    if merged.empty:
        return None, merged
    predicted = np.asarray(labels)[merged[labels].to_numpy().argmax(1)]
    return float((predicted == merged["label"].to_numpy()).mean()), merged.assign(predicted=predicted)


def aligned(frames, truth, labels):
    """The rows every model predicted and truth labels: (ids, probabilities [model, row, class] with each row
    rescaled to sum to 1 (the CSVs are rounded), true class index per row)."""
    ids = weighted_mean(frames, {n: 1.0 for n in frames}, labels)["image_id"]
    ids = ids[ids.isin(set(truth["image_id"]))]
    if ids.empty:
        raise PaddyError("No out-of-fold row has a true label: the ensemble has nothing to score or fit weights on.")
    probs = np.stack([frames[n].set_index("image_id").loc[ids, labels].to_numpy(float) for n in frames])
    probs = probs / probs.sum(-1, keepdims=True)
    y = pd.Index(labels).get_indexer(truth.set_index("image_id").loc[ids, "label"])
    return ids.to_numpy(), probs, y


def scores(probs, y, weights):
    """(accuracy, log loss) of the weighted mean of probs [model, row, class] (weights summing to 1)."""
    mean = np.tensordot(weights, probs, axes=1)
    loss = log_loss(y, np.clip(mean, EPS, None), labels=np.arange(probs.shape[-1]))
    return float(accuracy_score(y, mean.argmax(1))), float(loss)


def fit_weights(probs, y):
    """Non-negative weights summing to 1 minimising the log loss of the weighted mean of probs [model, row, class].

    The loss only sees each model's probability of the true label, and is convex in the weights, so SLSQP from
    equal weights reaches the global minimum, the same one on every run."""
    n = len(probs)
    if n == 1:
        return np.ones(1)
    p_true = probs[:, np.arange(len(y)), y].T  # row x model

    def loss(w):
        return -np.log(np.clip(p_true @ w, EPS, None)).mean()

    def grad(w):
        return -(p_true / np.clip(p_true @ w, EPS, None)[:, None]).mean(0)

    start = np.full(n, 1 / n)
    result = minimize(
        loss,
        start,
        jac=grad,
        method="SLSQP",
        bounds=[(0.0, 1.0)] * n,
        constraints=[{"type": "eq", "fun": lambda w: w.sum() - 1, "jac": lambda w: np.ones(n)}],
        options={"ftol": 1e-12, "maxiter": 500},
    )
    w = np.clip(result.x, 0.0, None)  # SLSQP may step a hair outside its bounds
    w = w / w.sum()
    return w if loss(w) <= loss(start) else start


def cv_folds(ids, y, split_table, n_folds, seed):
    """A fold number per out-of-fold row, for cross-validating the fit. kfold's table, where every row validates in
    exactly one split, gives its own folds; bagging (one validation set, or several overlapping ones) gets
    n_folds stratified folds of the out-of-fold rows."""
    if split_table is not None:
        splits = split_columns(split_table)
        v = split_table.set_index("image_id").reindex(ids)[splits].to_numpy()
        if len(splits) >= 2 and not np.isnan(v).any() and (v.sum(1) == 1).all():
            return v.argmax(1)
    if len(y) < n_folds:
        raise PaddyError(
            f"`ensemble.cv_folds` is {n_folds} but there are only {len(y)} out-of-fold rows to cross-validate the "
            "fitted weights on. Lower ensemble.cv_folds."
        )
    folds = np.zeros(len(y), dtype=int)
    # Stratifying needs some label with n_folds rows (a tiny validation set may have none): else plain folds.
    kind = StratifiedKFold if np.bincount(y).max() >= n_folds else KFold
    with warnings.catch_warnings():  # a label rarer than n_folds just misses some folds
        warnings.simplefilter("ignore", UserWarning)
        for k, (_, rows) in enumerate(kind(n_folds, shuffle=True, random_state=seed).split(np.zeros(len(y)), y)):
            folds[rows] = k
    return folds


def cross_validate_fit(probs, y, folds):
    """(accuracy, log loss) of the fitted weights on rows they were not fitted on: for each fold, weights fitted on
    the other folds mix that fold's rows; the pooled mixtures are scored together."""
    mixed = np.zeros(probs.shape[1:])
    for k in np.unique(folds):
        held = folds == k
        w = fit_weights(probs[:, ~held], y[~held])
        mixed[held] = np.tensordot(w, probs[:, held], axes=1)
    return scores(mixed[None], y, np.ones(1))


def build_ensemble(
    weights, labels, sample, preds_dir, train_truth, test_truth, fallback_label, ensemble, split_table=None, seed=0
):
    """Returns (submission DataFrame, metrics dict, out-of-fold confusion rows). weights: each model's name -> its
    models.<name>.weight, in params.yaml's order; ensemble: the EnsembleSettings; split_table: data/split.csv, whose
    folds cross-validate the fit
    under kfold."""
    names = list(weights)
    test = {n: read_predictions(preds_dir, n, "test") for n in names}
    oof = {n: read_predictions(preds_dir, n, "oof") for n in names}
    ids, probs, y = aligned(oof, train_truth, labels)
    raw = np.array([float(weights[n]) for n in names])
    candidates = {"fit": fit_weights(probs, y)}
    if raw.sum() > 0:
        candidates["params"] = raw / raw.sum()
    if ensemble.weights not in candidates:
        raise PaddyError("Every `models.<name>.weight` in params.yaml is 0: give at least one model a weight > 0.")
    metrics = {"oof_acc": {}, "oof_loss": {}}
    for i, name in enumerate(names):
        metrics["oof_acc"][name], metrics["oof_loss"][name] = scores(probs[i : i + 1], y, np.ones(1))
    for kind, w in candidates.items():
        acc, loss = scores(probs, y, w)
        metrics[kind] = {"weights": dict(zip(names, w.tolist())), "oof_acc": acc, "oof_loss": loss}
    fit_cv = cross_validate_fit(probs, y, cv_folds(ids, y, split_table, ensemble.cv_folds, seed))
    metrics["fit"]["cv_acc"], metrics["fit"]["cv_loss"] = fit_cv
    chosen = metrics[ensemble.weights]
    metrics["oof_acc"]["ensemble"], metrics["oof_loss"]["ensemble"] = chosen["oof_acc"], chosen["oof_loss"]
    metrics["weights"] = chosen["weights"]
    if ensemble.weights == "fit" and len(names) == 1:
        metrics["note"] = f"ensemble.weights is fit, but there is one model ({names[0]}): nothing to fit, weight 1"
        print(f"note: {metrics['note']}")
    ens_oof = weighted_mean(oof, chosen["weights"], labels)
    _, confusion = accuracy(ens_oof, train_truth, labels)
    ens_test = weighted_mean(test, chosen["weights"], labels)
    if len(test_truth):
        metrics["test_acc"] = {name: accuracy(df, test_truth, labels)[0] for name, df in test.items()}
        metrics["test_acc"]["ensemble"] = accuracy(ens_test, test_truth, labels)[0]
        _, test_probs, test_y = aligned(test, test_truth, labels)
        metrics["test_loss"] = {n: scores(test_probs[i : i + 1], test_y, np.ones(1))[1] for i, n in enumerate(names)}
        weights = np.array([chosen["weights"][n] for n in names])
        metrics["test_loss"]["ensemble"] = scores(test_probs, test_y, weights)[1]
        for kind in candidates:
            mean = weighted_mean(test, metrics[kind]["weights"], labels)
            metrics[kind]["test_acc"] = accuracy(mean, test_truth, labels)[0]
    predicted = np.asarray(labels)[ens_test[labels].to_numpy().argmax(1)]
    sub = make_submission(sample, ens_test["image_id"], predicted)
    missing = sub["label"].isna()
    if missing.any():
        # Unreadable test images (reported by prepare) still need a row: predict the most common label.
        print(f"warning: {int(missing.sum())} test image(s) had no prediction; labelled {fallback_label!r}")
        sub.loc[missing, "label"] = fallback_label
    validate_submission(sub, sample, labels)
    return sub, metrics, confusion[["label", "predicted"]].rename(columns={"label": "actual"})
