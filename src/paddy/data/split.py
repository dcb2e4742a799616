"""Fold and bag assignments, one table shared by every model: row i of split s is validation where v<s> is 1.

kfold: stratified k folds, each row validates exactly once, so out-of-fold predictions cover the training set.
bag: n random stratified valid_pct splits, one seed each (the seed notebook's bagging, made reproducible).
"""

import numpy as np
import pandas as pd

from paddy.errors import PaddyError


def split_columns(table):
    return [c for c in table.columns if c.startswith("v") and c[1:].isdigit()]


def make_splits(train, scheme, n_splits, valid_pct=0.2, seed=42):
    """train: DataFrame with image_id and label. Returns image_id, label, v0..v{n-1} (1 = validation)."""
    # here: the check stage imports this module on every repro (check_cv), and sklearn takes a second to import
    from sklearn.model_selection import StratifiedKFold, train_test_split

    counts = train["label"].value_counts()
    table = train[["image_id", "label"]].reset_index(drop=True)
    if scheme == "kfold":
        check_folds(counts, n_splits)
        folds = StratifiedKFold(n_splits=n_splits, shuffle=True, random_state=seed)
        for s, (_, valid) in enumerate(folds.split(table, table["label"])):
            table[f"v{s}"] = np.isin(np.arange(len(table)), valid).astype(int)
    elif scheme == "bag":
        stratify = table["label"] if counts.min() >= 2 else None
        for s in range(n_splits):
            _, valid = train_test_split(
                np.arange(len(table)), test_size=valid_pct, random_state=seed + s, stratify=stratify
            )
            table[f"v{s}"] = np.isin(np.arange(len(table)), valid).astype(int)
    else:
        raise PaddyError(f"cv.scheme is {scheme!r}; it must be kfold or bag.")
    return table


def check_folds(counts, n_splits, where=""):
    """Refuse k-fold with a label of fewer training images than folds (counts: images per label); `where` says where
    the counts come from."""
    if counts.min() < n_splits:
        raise PaddyError(
            f"cv.n_splits is {n_splits} but label {counts.idxmin()!r} has only {counts.min()} training images"
            f"{where}: stratified k-fold needs at least n_splits of each label. Lower cv.n_splits or use cv.scheme: "
            "bag."
        )


def check_cv(cv, train, counts, where):
    """What split and train would refuse, found from the train table's images per label (`counts`) before any stage
    deletes an output (the check stage): k-fold with a label smaller than its folds, and a training split smaller
    than one optimizer step with train.drop_last (`train`: TrainSettings). prepare may still leave a few images out."""
    if cv.scheme == "kfold":
        check_folds(counts, cv.n_splits, where)
    total = int(counts.sum())
    valid = -(-total // cv.n_splits) if cv.scheme == "kfold" else -(-total * cv.valid_pct // 1)  # sklearn rounds up
    rows = total - int(valid)
    if train.drop_last and rows < train.effective_batch:
        raise PaddyError(
            f"A training split holds about {rows} images ({total}{where}, less the validation rows of cv), fewer "
            f"than one optimizer step (train.effective_batch = {train.effective_batch}) with train.drop_last on: "
            "lower train.effective_batch, set train.drop_last: false, or use more data."
        )


def read_splits(path):
    table = pd.read_csv(path, dtype={"image_id": str, "label": str}, keep_default_na=False)
    return table, split_columns(table)


def split_index(index, cv):
    """The split table of the prepared index's readable training images, as `cv` (CVSettings) says."""
    train = index[(index.split == "train") & index.ok]
    return make_splits(train, cv.scheme, cv.n_splits, cv.valid_pct, cv.seed)
