"""Weighted mean of the models' probabilities -> the submission in the competition's form, in the sample's order.

The weights are each model's `models.<name>.weight`, or fitted: non-negative, summing to 1, minimising the
out-of-fold log loss, then, for another competition metric, moved on the simplex to where that metric scores best
out of fold. Both are scored either way, the fit also cross-validated (fitted on some out-of-fold rows, scored on
the others), since fitting and scoring on the same rows flatters it. Under a log-loss metric one temperature, fitted
on the mixed out-of-fold probabilities, softens (or sharpens) the test probabilities before they are written.
"""

import itertools
import json
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
from scipy.optimize import minimize, minimize_scalar
from sklearn.model_selection import KFold, StratifiedKFold

from paddy.data.split import split_columns
from paddy.errors import PaddyError
from paddy.metrics import CLIP, LABEL_METRICS, Metric, better, log_loss_of
from paddy.predict.submission import make_submission, validate_submission
from paddy.predict.tables import Stack, chunks, common_ids, read_tables
from paddy.settings.schema import fbeta_of, tag_average
from paddy.tags import (
    binary_log_loss,
    fit_thresholds,
    predict_tags,
    tag_accuracy,
    tag_fbeta,
    tag_matrix,
    tag_strings,
)  # fmt: skip

# The metric search's grid by number of models (101 and 231 points); more models move one step at a time instead
GRID_STEPS = {2: 100, 3: 20}
MAX_MOVES = 500  # a continuous metric (ROC AUC) could creep up by tiny moves for long
TEMPERATURES = (0.05, 20.0)  # the temperature's search bounds


def read_choice(ensemble_json):
    """(the weights the submission used, its temperature): metrics/ensemble.json's `weights` ({model: weight}) and
    `temperature.value` (1 where there is none: a competition not scored by log loss). The report and `paddy
    predict` mix as the submission did from them."""
    path = Path(ensemble_json)
    rerun = "Run `dvc repro` (or `dvc repro ensemble`) to write it."
    if not path.is_file():
        raise PaddyError(f"{path} does not exist: the models have no ensemble weights yet. {rerun}")
    try:
        figures = json.loads(path.read_text())
        weights = {str(name): float(w) for name, w in figures["weights"].items()}
        temperature = float((figures.get("temperature") or {}).get("value", 1.0))
    except (ValueError, KeyError, TypeError, AttributeError):
        raise PaddyError(
            f"{path} has no `weights` mapping each model to its weight (it is not the ensemble stage's). {rerun}"
        ) from None
    if not weights:
        raise PaddyError(f"{path} has no `weights` of the models. {rerun}")
    return weights, temperature


def read_thresholds(ensemble_json, labels):
    """The thresholds a multi-label submission used (a number, or one per tag in `labels` order) and allow_empty's
    value then, from metrics/ensemble.json's `thresholds` and, for per-tag ones, metrics/thresholds.json beside it;
    the report and `paddy predict` give tags as the submission did."""
    path = Path(ensemble_json)
    rerun = "Run `dvc repro ensemble` to write it."
    try:
        found = json.loads(path.read_text())["thresholds"]
        fit = found["fit"]
        if fit != "per_tag":
            return float(found["threshold_fixed" if fit == "none" else "threshold_global"]), found["allow_empty"]
        per_tag = json.loads((path.parent / "thresholds.json").read_text())["per_tag"]
        return np.array([float(per_tag[t]) for t in labels]), found["allow_empty"]
    except FileNotFoundError as error:
        raise PaddyError(f"{error.filename} does not exist: the ensemble has no thresholds yet. {rerun}") from None
    except (ValueError, KeyError, TypeError) as error:
        raise PaddyError(
            f"{path} (or thresholds.json beside it) holds no thresholds for these tags ({error!r}): it was not "
            f"written for this multi-label competition. {rerun}"
        ) from None


def as_stack(probs):
    """A Stack of probs, or of a dense [model, row, class] array (small tables, tests)."""
    return probs if isinstance(probs, Stack) else Stack.of(np.asarray(probs))


def aligned(tables, truth, classes, tags=False):
    """The rows every model predicted that have a true label: (a Stack of the tables over those rows, the true
    class index per row; of tags, the 0/1 [row, tag] matrix of each row's tags)."""
    ids = common_ids(tables, keep=truth["image_id"])
    if len(ids) == 0:
        raise PaddyError("No out-of-fold row has a true label: the ensemble has nothing to score or fit weights on.")
    labels = truth.set_index("image_id").loc[ids, "label"]
    if tags:
        return Stack(tables, ids, tags=True), tag_matrix(labels.tolist(), classes)
    return Stack(tables, ids), pd.Index(classes).get_indexer(labels)


def score_mix(mix, y, metric):
    """(accuracy, log loss, the competition's metric) of a mixture [row, class] against the true classes y; of
    tags, fastai's accuracy_multi and the binary cross-entropy, at the metric's thresholds."""
    if metric.multi_label:
        predicted = predict_tags(mix, metric.threshold)  # accuracy_multi's: no tag filled in
        return tag_accuracy(y, predicted), binary_log_loss(y, mix), metric(y, mix)
    return float((mix.argmax(1) == y).mean()), log_loss_of(y, mix), metric(y, mix)


def score_with(probs, y, weights, metric):
    """(accuracy, log loss, the competition's metric) of the weighted mean of the Stack `probs` (or a dense
    [model, row, class] array; weights summing to 1); metric: a paddy.metrics.Metric."""
    return score_mix(as_stack(probs).mix(weights), y, metric)


def fit_log_loss(probs, y):
    """Non-negative weights summing to 1 minimising the log loss of the weighted mean of probs [model, row, class].

    The loss only sees each model's probability of the true label, and is convex in the weights, so SLSQP from
    equal weights reaches the global minimum, the same one on every run. Of tags (probs a Stack of tags' tables, y
    their 0/1 matrix): the binary cross-entropy of each tag's true value, streamed (Stack.tag_loss)."""
    stack = as_stack(probs)
    n = len(stack.names)
    if n == 1:
        return np.ones(1)
    if stack.tags:

        def objective(w):
            return stack.tag_loss(y, w)

    else:
        p_true = stack.true_probs(y)  # row x model

        def objective(w):
            mix = np.clip(p_true @ w, CLIP, None)
            return -np.log(mix).mean(), -(p_true / mix[:, None]).mean(0)

    def loss(w):
        return objective(w)[0]

    start = np.full(n, 1 / n)
    result = minimize(
        objective,
        start,
        jac=True,
        method="SLSQP",
        bounds=[(0.0, 1.0)] * n,
        constraints=[{"type": "eq", "fun": lambda w: w.sum() - 1, "jac": lambda w: np.ones(n)}],
        options={"ftol": 1e-12, "maxiter": 500},
    )
    w = np.clip(result.x, 0.0, None)  # SLSQP may step a hair outside its bounds
    w = w / w.sum()
    return w if loss(w) <= loss(start) else start


def simplex_grid(n, steps):
    """Every weight vector of n models whose weights are multiples of 1/steps summing to 1 (stars and bars)."""
    for bars in itertools.combinations(range(steps + n - 1), n - 1):
        yield (np.diff([-1, *bars, steps + n - 1]) - 1) / steps


def search_weights(probs, y, metric, start):
    """Weights on the simplex under which `metric` scores the mix of probs [model, row, class] better than under
    `start` (the log-loss fit), or `start`. Two or three models: every point of a grid; more: moves of weight from
    one model to another, the best move while one improves, then smaller moves. Ties go to the weights nearest
    `start`: accuracy, F1 and QWK are flat between two argmax changes, and the log-loss fit is the better-calibrated
    point of a flat region."""

    stack = as_stack(probs)

    def judge(w):
        if metric.name in LABEL_METRICS:  # the argmax alone: found from each row's shortlist of classes
            return metric.of_labels(y, stack.argmax(w))
        return metric(y, stack.mix(w))

    best, best_score = start, judge(start)
    n = len(start)
    if n in GRID_STEPS:
        # nearest first, and only a strictly better score replaces the best: a tie keeps the nearer point
        for w in sorted(simplex_grid(n, GRID_STEPS[n]), key=lambda w: np.abs(w - start).sum()):
            if better(metric.name, s := judge(w), best_score):
                best, best_score = w, s
        return best
    step, moved = 0.1, 0
    while step >= 1 / 128 and moved < MAX_MOVES:
        moves = []
        for i, j in itertools.permutations(range(n), 2):
            if best[i] > 0:
                w = best.copy()
                amount = min(step, w[i])
                w[i], w[j] = w[i] - amount, w[j] + amount
                moves.append(w)
        scored = [(judge(w), w) for w in moves]
        top_score, top = scored[0]
        for s, w in scored[1:]:
            if better(metric.name, s, top_score):
                top_score, top = s, w
        if better(metric.name, top_score, best_score):
            best, best_score, moved = top, top_score, moved + 1
        else:
            step /= 2
    return best


def fit_weights(probs, y, metric=None):
    """Non-negative weights summing to 1 for the models of probs [model, row, class]: the log-loss fit
    (fit_log_loss), and for a metric (a paddy.metrics.Metric) other than log loss, the weights that score it best
    from there (search_weights)."""
    w = fit_log_loss(probs, y)
    if metric is None or metric.name == "log_loss" or len(w) == 1:
        return w
    return search_weights(probs, y, metric, w)


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
    # Stratifying needs some label with n_folds rows (a tiny validation set may have none): else plain folds. Tags'
    # rows were stratified by tag when split; plain folds of them keep each tag's share close enough for a fit.
    kind = StratifiedKFold if y.ndim == 1 and np.bincount(y).max() >= n_folds else KFold
    with warnings.catch_warnings():  # a label rarer than n_folds just misses some folds
        warnings.simplefilter("ignore", UserWarning)
        for k, (_, rows) in enumerate(kind(n_folds, shuffle=True, random_state=seed).split(np.zeros(len(y)), y)):
            folds[rows] = k
    return folds


def cross_validate_fit(probs, y, folds, metric):
    """(accuracy, log loss, metric) of the fitted weights on rows they were not fitted on: for each fold, weights
    fitted (fit_weights, for `metric`) on the other folds mix that fold's rows; the pooled mixtures are scored
    together."""
    stack = as_stack(probs)
    mixed = np.empty((len(stack), stack.n_classes), dtype=np.float32)
    for k in np.unique(folds):
        held = np.flatnonzero(folds == k)
        kept = np.flatnonzero(folds != k)
        w = fit_weights(stack.subset(kept), y[kept], metric)
        mixed[held] = stack.mix(w, held)
    return score_mix(mixed, y, metric)


def temper(probs, t):
    """Probabilities [row, class] at temperature t: softmax(log p / t), in the table's own precision, chunk by
    chunk. t > 1 softens overconfident ones."""
    if t == 1:
        return probs
    out = np.empty_like(probs)
    for part in chunks(len(probs), probs.shape[1]):
        logits = np.log(np.clip(probs[part], CLIP, None)) / t
        e = np.exp(logits - logits.max(1, keepdims=True))
        out[part] = e / e.sum(1, keepdims=True)
    return out


def fit_temperature(probs, y, metric):
    """The temperature in TEMPERATURES under which the mixed out-of-fold probabilities [row, class] score the
    lowest log loss (`metric`, log loss), by a bounded scalar search; 1 unless it scores better than 1."""
    result = minimize_scalar(lambda t: metric(y, temper(probs, t)), bounds=TEMPERATURES, method="bounded")
    t = float(result.x)
    return t if metric(y, temper(probs, t)) < metric(y, probs) else 1.0


def fit_tag_thresholds(mix, y, metric, tags, folds):
    """A multi-label ensemble's thresholds, fitted on its out-of-fold mixture (paddy.tags.fit_thresholds; `tags`: the
    TagSettings). Returns (the thresholds `tags.fit` chooses, their figures): the fixed, global and per-tag
    thresholds and their out-of-fold scores, and the chosen ones cross-validated (fitted on the other `folds`,
    scored on the held one) since fitting and scoring on the same rows flatters them."""
    beta, average = fbeta_of(metric.name), tag_average(metric.name)
    settings = (beta, tags.threshold, tags.min_positives, tags.allow_empty, average)
    fit = fit_thresholds(y, mix, *settings)
    # the folds fit only what is chosen: no per-tag coordinate ascent unless per_tag is (min_positives beyond reach)
    fold_settings = settings if tags.fit == "per_tag" else (beta, tags.threshold, np.inf, tags.allow_empty, average)
    held_out = np.zeros(y.shape, dtype=bool)
    for k in np.unique(folds):
        kept, held = folds != k, folds == k
        chosen = fit_thresholds(y[kept], mix[kept], *fold_settings).chosen(tags.fit)
        held_out[held] = predict_tags(mix[held], chosen, tags.allow_empty)
    figures = fit.as_metrics(metric.classes, tags.fit) | {"cv_score": tag_fbeta(y, held_out, beta, average)}
    figures["allow_empty"] = tags.allow_empty
    if tags.fit == "per_tag" and fit.fell_back:
        fell = [metric.classes[k] for k in fit.fell_back]
        figures["note"] = (
            f"{len(fell)} tag(s) with fewer than tags.min_positives ({tags.min_positives}) out-of-fold images keep the "
            f"global threshold {fit.global_:.2f}: {', '.join(fell[:10])}{', ...' if len(fell) > 10 else ''}"
        )
        print(f"note: {figures['note']}")
    return fit.chosen(tags.fit), figures


def build_ensemble(model_weights, labels, sample, preds_dir, truth, settings, split_table=None):
    """Returns (submission DataFrame, metrics dict, out-of-fold confusion rows). model_weights: each model's name ->
    its models.<name>.weight, in params.yaml's order; truth: (the training images' image_id and label, whose
    labels' frequencies fill test images without predictions; the test set's true labels, empty when unknown);
    settings: the Settings (competition: the submission's form and the metric; ensemble; tags, a multi-label
    competition's thresholds; seed); split_table: data/split.csv, whose kfold folds cross-validate the fit (None:
    folds drawn with the seed). A multi-label competition's metrics hold its thresholds under `thresholds`."""
    comp, ensemble, tags = settings.competition, settings.ensemble, settings.tags
    (train_truth, test_truth), multi = truth, comp.multi_label
    names = list(model_weights)
    metric = Metric.of(comp, labels, tags)
    test = read_tables(preds_dir, names, "test", labels)
    probs, y = aligned(read_tables(preds_dir, names, "oof", labels), train_truth, labels, multi)
    raw = np.array([float(model_weights[n]) for n in names])
    candidates = {"fit": fit_weights(probs, y, metric)}
    if raw.sum() > 0:
        candidates["params"] = raw / raw.sum()
    if ensemble.weights not in candidates:
        raise PaddyError("Every `models.<name>.weight` in params.yaml is 0: give at least one model a weight > 0.")
    metrics = {"metric": metric.name, "oof_score": {}, "oof_acc": {}, "oof_loss": {}}
    for i, name in enumerate(names):
        figures = score_with(probs, y, probs.only(i), metric)
        metrics["oof_acc"][name], metrics["oof_loss"][name], metrics["oof_score"][name] = figures
    for kind, w in candidates.items():
        acc, loss, score = score_with(probs, y, w, metric)
        metrics[kind] = {"weights": dict(zip(names, w.tolist())), "oof_acc": acc, "oof_loss": loss, "oof_score": score}
    folds = cv_folds(probs.ids, y, split_table, ensemble.cv_folds, settings.seed)
    fit_cv = cross_validate_fit(probs, y, folds, metric)
    metrics["fit"]["cv_acc"], metrics["fit"]["cv_loss"], metrics["fit"]["cv_score"] = fit_cv
    chosen = metrics[ensemble.weights]
    metrics["oof_acc"]["ensemble"], metrics["oof_loss"]["ensemble"] = chosen["oof_acc"], chosen["oof_loss"]
    metrics["weights"] = chosen["weights"]
    w = np.array([chosen["weights"][n] for n in names])
    # oof_score.ensemble and test_score.ensemble score what the submission sends: under log loss, the mix tempered;
    # of tags, at the fitted thresholds
    mix = probs.mix(w)
    t = fit_temperature(mix, y, metric) if metric.name == "log_loss" else 1.0
    sent = metric
    if multi:
        thresholds, metrics["thresholds"] = fit_tag_thresholds(mix, y, metric, tags, folds)
        sent = metric.at(thresholds)
    metrics["oof_score"]["ensemble"] = sent_score = sent(y, temper(mix, t))
    if multi:  # thresholds fitted on these very rows flatter them: oof_score is theirs fitted on the other folds
        metrics["oof_score"]["ensemble"] = metrics["thresholds"]["cv_score"]
    if metric.name == "log_loss":
        metrics["temperature"] = {"value": t, "oof_before": chosen["oof_score"], "oof_after": sent_score}
    notes = []
    if ensemble.weights == "fit" and len(names) == 1:
        notes.append(f"ensemble.weights is fit, but there is one model ({names[0]}): nothing to fit, weight 1")
    if metric.name == "mean_roc_auc":
        one_sided = [c for k, c in enumerate(labels) if (y == k).all() or not (y == k).any()]
        if one_sided:
            notes.append(
                f"mean_roc_auc: no out-of-fold rows of {', '.join(one_sided)} (or nothing else), so no ROC AUC: "
                "left out of the mean"
            )
    if notes:
        metrics["note"] = "; ".join(notes)
        print(f"note: {metrics['note']}")
    confusion = confusion_rows(y, mix, labels, sent)
    del mix
    if len(test_truth):
        test_probs, test_y = aligned(test, test_truth, labels, multi)
        metrics["test_score"], metrics["test_acc"], metrics["test_loss"] = {}, {}, {}
        for i, name in enumerate(names):
            figures = score_with(test_probs, test_y, test_probs.only(i), metric)
            metrics["test_acc"][name], metrics["test_loss"][name], metrics["test_score"][name] = figures
        mix = test_probs.mix(w)
        metrics["test_acc"]["ensemble"], metrics["test_loss"]["ensemble"], _ = score_mix(mix, test_y, metric)
        metrics["test_score"]["ensemble"] = sent(test_y, temper(mix, t))
        for kind in candidates:
            kind_w = np.array([metrics[kind]["weights"][n] for n in names])
            metrics[kind]["test_acc"], _, metrics[kind]["test_score"] = score_with(test_probs, test_y, kind_w, metric)
        if multi:  # what fitting the thresholds gained on images it never saw
            found = metrics["thresholds"]
            for kind, at in (("fixed", found["threshold_fixed"]), ("global", found["threshold_global"])):
                found[f"test_{kind}"] = metric.at(at)(test_y, mix)
            found["test_per_tag"] = metric.at(np.array(list(found["per_tag"].values())))(test_y, mix)
    everyone = Stack(test, common_ids(test), tags=multi)
    sent_ids, sent_probs = list(everyone.ids), temper(everyone.mix(w), t)
    missing = sorted(set(sample[sample.columns[0]].astype(str)) - set(sent_ids))
    if missing:
        # Unreadable test images (reported by prepare) still need a row: the most common training label, or the
        # training class frequencies where probabilities (or tags) are sent.
        if multi:
            row = tag_matrix(train_truth["label"].tolist(), labels).mean(0).astype(np.float32)
            print(f"warning: {len(missing)} test image(s) had no prediction; given the training tag frequencies")
        elif comp.form == "label":
            fallback = train_truth["label"].mode()[0]
            row = (np.asarray(labels) == fallback).astype(np.float32)
            print(f"warning: {len(missing)} test image(s) had no prediction; labelled {fallback!r}")
        else:
            counts = train_truth["label"].value_counts()
            row = (counts.reindex(labels, fill_value=0).to_numpy(float) / counts.sum()).astype(np.float32)
            print(f"warning: {len(missing)} test image(s) had no prediction; given the training class frequencies")
        sent_ids, sent_probs = sent_ids + missing, np.vstack([sent_probs, np.tile(row, (len(missing), 1))])
    sub = make_submission(sample, sent_ids, sent_probs, labels, comp, (sent.threshold, sent.allow_empty))
    validate_submission(sub, sample, labels, comp)
    return sub, metrics, confusion


def confusion_rows(y, mix, labels, metric):
    """Each out-of-fold row's actual and predicted label; of tags, its true and predicted tags, space-separated."""
    if metric.multi_label:
        predicted = predict_tags(mix, metric.threshold, metric.allow_empty)
        return pd.DataFrame({"actual": tag_strings(y, labels), "predicted": tag_strings(predicted, labels)})
    return pd.DataFrame({"actual": np.asarray(labels)[y], "predicted": np.asarray(labels)[mix.argmax(1)]})
