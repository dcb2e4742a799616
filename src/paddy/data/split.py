"""Fold and bag assignments, one table shared by every model: row i of split s is validation where v<s> is 1.

kfold: stratified k folds, each row validates exactly once, so out-of-fold predictions cover the training set.
bag: n random stratified valid_pct splits, one seed each (the seed notebook's bagging, made reproducible).
"""

import numpy as np
import pandas as pd
from sklearn.model_selection import StratifiedKFold, train_test_split

from paddy.errors import PaddyError


def split_columns(table):
    return [c for c in table.columns if c.startswith("v") and c[1:].isdigit()]


def make_splits(train, scheme, n_splits, valid_pct=0.2, seed=42):
    """train: DataFrame with image_id and label. Returns image_id, label, v0..v{n-1} (1 = validation)."""
    counts = train["label"].value_counts()
    table = train[["image_id", "label"]].reset_index(drop=True)
    if scheme == "kfold":
        if counts.min() < n_splits:
            raise PaddyError(
                f"cv.n_splits is {n_splits} but label {counts.idxmin()!r} has only {counts.min()} training images: "
                f"stratified k-fold needs at least n_splits of each label. Lower cv.n_splits or use cv.scheme: bag."
            )
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


def read_splits(path):
    table = pd.read_csv(path, dtype={"image_id": str, "label": str})
    return table, split_columns(table)


def split_index(index, cv):
    """The split table of the prepared index's readable training images, as `cv` (CVSettings) says."""
    train = index[(index.split == "train") & index.ok]
    return make_splits(train, cv.scheme, cv.n_splits, cv.valid_pct, cv.seed)
