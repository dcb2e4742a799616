"""Fold and bag assignments, one table shared by every model: row i of split s is validation where v<s> is 1.

kfold: stratified k folds, each row validates exactly once, so out-of-fold predictions cover the training set.
bag: n random stratified valid_pct splits, one seed each (the seed notebook's bagging, made reproducible).
Multi-label (competition.form tags: each label a space-separated list of tags, "" none): iterative stratification
(the iterative-stratification package) keeps each tag's share in every validation set close to its share overall,
where stratifying on the whole tag list would make a class of nearly every combination.
"""

import numpy as np
import pandas as pd

from paddy.data.competition import tag_classes
from paddy.errors import PaddyError
from paddy.tags import tag_matrix


def split_columns(table):
    return [c for c in table.columns if c.startswith("v") and c[1:].isdigit()]


def make_splits(train, scheme, n_splits, valid_pct=0.2, seed=42, multi_label=False):
    """train: DataFrame with image_id and label (multi_label: the image's tags, space-separated). Returns image_id,
    label, v0..v{n-1} (1 = validation)."""
    if scheme not in ("kfold", "bag"):
        raise PaddyError(f"cv.scheme is {scheme!r}; it must be kfold or bag.")
    table = train[["image_id", "label"]].reset_index(drop=True)
    valids = (_tag_splits if multi_label else _label_splits)(table, scheme, n_splits, valid_pct, seed)
    for s, valid in enumerate(valids):
        table[f"v{s}"] = np.isin(np.arange(len(table)), valid).astype(int)
    return table


def _label_splits(table, scheme, n_splits, valid_pct, seed):
    """Each split's validation rows, stratified by the single label."""
    # here: the check stage imports this module on every repro (check_cv), and sklearn takes a second to import
    from sklearn.model_selection import StratifiedKFold, train_test_split

    counts = table["label"].value_counts()
    if scheme == "kfold":
        check_folds(counts, n_splits)
        folds = StratifiedKFold(n_splits=n_splits, shuffle=True, random_state=seed)
        return [valid for _, valid in folds.split(table, table["label"])]
    stratify = table["label"] if counts.min() >= 2 else None
    return [
        train_test_split(np.arange(len(table)), test_size=valid_pct, random_state=seed + s, stratify=stratify)[1]
        for s in range(n_splits)
    ]


def _tag_splits(table, scheme, n_splits, valid_pct, seed):
    """Each split's validation rows, iteratively stratified by the tags: every tag keeps about its share in each
    validation set, rare ones too (a tag of fewer images than folds cannot be in every fold's validation set)."""
    from iterstrat.ml_stratifiers import MultilabelStratifiedKFold, MultilabelStratifiedShuffleSplit  # sklearn too

    tags = stratifying_tags(table["label"])
    if scheme == "kfold":
        check_fold_images(len(table), n_splits)  # iterstrat's own ValueError would name no setting
        folds = MultilabelStratifiedKFold(n_splits=n_splits, shuffle=True, random_state=seed)
        return [valid for _, valid in folds.split(tags, tags)]
    bags = []
    for s in range(n_splits):  # one seed per bag, as the single-label bags: bag s is the same whatever n_splits is
        split = MultilabelStratifiedShuffleSplit(n_splits=1, test_size=valid_pct, random_state=seed + s)
        bags.append(next(split.split(tags, tags))[1])
    return bags


def stratifying_tags(labels):
    """The 0/1 matrix of each label's tags (paddy.tags.tag_matrix), at least two columns: iterstrat takes only
    scikit-learn's multilabel-indicator, and an all-zero column moves nothing."""
    classes = tag_classes(labels)
    matrix = tag_matrix(labels, classes).astype(int)
    return np.pad(matrix, ((0, 0), (0, max(0, 2 - len(classes)))))


def check_folds(counts, n_splits, where=""):
    """Refuse k-fold with a label of fewer training images than folds (counts: images per label); `where` says where
    the counts come from."""
    if counts.min() < n_splits:
        raise PaddyError(
            f"cv.n_splits is {n_splits} but label {counts.idxmin()!r} has only {counts.min()} training images"
            f"{where}: stratified k-fold needs at least n_splits of each label. Lower cv.n_splits or use cv.scheme: "
            "bag."
        )


def check_fold_images(images, n_splits, where=""):
    """Refuse multi-label k-fold with fewer training images than folds (a tag may have fewer: see check_cv)."""
    if images < n_splits:
        raise PaddyError(
            f"cv.n_splits is {n_splits} but there are only {images} training images{where}: k-fold needs at least "
            "one image per fold. Lower cv.n_splits or use cv.scheme: bag."
        )


def check_cv(cv, train, counts, where, multi_label=False):
    """What split and train would refuse, found from the train table's images per label (`counts`) before any stage
    deletes an output (the check stage): k-fold with a label smaller than its folds, and a training split smaller
    than one optimizer step with train.drop_last (`train`: TrainSettings). prepare may still leave a few images out.

    multi_label: `counts` are images per tag list, as the label column holds it ("a b": one image, counted once, so
    that they sum to the images). Iterative stratification splits whatever the tag counts, so k-fold with a tag of
    fewer images than folds is allowed, without a word: such a tag (0 to n_splits - 1 images) is missing from some
    folds' validation sets, as it must be. Only k-fold with fewer images than folds is refused."""
    if cv.scheme == "kfold" and multi_label:
        check_fold_images(int(counts.sum()), cv.n_splits, where)
    elif cv.scheme == "kfold":
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


def split_index(index, cv, multi_label=False):
    """The split table of the prepared index's readable training images, as `cv` (CVSettings) says; multi_label:
    each label is a space-separated list of tags."""
    train = index[(index.split == "train") & index.ok]
    return make_splits(train, cv.scheme, cv.n_splits, cv.valid_pct, cv.seed, multi_label)
