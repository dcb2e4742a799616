"""Weighted mean of the models' probabilities -> argmax -> labels, in sample_submission order."""

from pathlib import Path

import numpy as np
import pandas as pd

from paddy.errors import PaddyError
from paddy.submission import make_submission, validate_submission


def read_predictions(preds_dir, name, kind):
    path = Path(preds_dir) / name / f"{kind}_probs.csv"
    if not path.exists():
        raise PaddyError(f"{path} is missing: model {name!r} has no TTA predictions yet. Run `dvc repro` first.")
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


def build_ensemble(models, labels, sample, preds_dir, train_truth, test_truth, fallback_label):
    """Returns (submission DataFrame, metrics dict, out-of-fold confusion rows)."""
    weights = {name: float(cfg["weight"]) for name, cfg in models.items()}
    test = {n: read_predictions(preds_dir, n, "test") for n in weights}
    oof = {n: read_predictions(preds_dir, n, "oof") for n in weights}
    metrics = {"oof_acc": {}, "weights": weights}
    for name, df in oof.items():
        metrics["oof_acc"][name], _ = accuracy(df, train_truth, labels)
    ens_oof = weighted_mean(oof, weights, labels)
    metrics["oof_acc"]["ensemble"], confusion = accuracy(ens_oof, train_truth, labels)
    ens_test = weighted_mean(test, weights, labels)
    if len(test_truth):
        metrics["test_acc"] = {name: accuracy(df, test_truth, labels)[0] for name, df in test.items()}
        metrics["test_acc"]["ensemble"] = accuracy(ens_test, test_truth, labels)[0]
    predicted = np.asarray(labels)[ens_test[labels].to_numpy().argmax(1)]
    sub = make_submission(sample, ens_test["image_id"], predicted)
    missing = sub["label"].isna()
    if missing.any():
        # Unreadable test images (reported by prepare) still need a row: predict the most common label.
        print(f"warning: {int(missing.sum())} test image(s) had no prediction; labelled {fallback_label!r}")
        sub.loc[missing, "label"] = fallback_label
    validate_submission(sub, sample, labels)
    return sub, metrics, confusion[["label", "predicted"]].rename(columns={"label": "actual"})
