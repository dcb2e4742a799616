"""What makes a submission valid: the sample's ids, in its order, each once, with a label from the vocabulary."""

import pandas as pd

from paddy.errors import PaddyError


def validate_submission(sub, sample, vocab, comp=None, where="submission.csv"):
    """Raise a PaddyError naming the first problem of `sub` against `sample` (both DataFrames)."""
    if list(sub.columns) != list(sample.columns):
        raise PaddyError(f"{where} has header {list(sub.columns)}; Kaggle expects {list(sample.columns)}.")
    if len(sub) != len(sample):
        raise PaddyError(
            f"{where} has {len(sub)} rows; sample_submission.csv has {len(sample)}: one row per test image."
        )
    ids = sub["image_id"].astype(str)
    dupes = ids[ids.duplicated()]
    if len(dupes):
        raise PaddyError(f"{where} lists image_id {dupes.iloc[0]!r} more than once.")
    expected = sample["image_id"].astype(str)
    unknown = sorted(set(ids) - set(expected))
    if unknown:
        missing = sorted(set(expected) - set(ids))
        raise PaddyError(
            f"{where} has image_id {unknown[0]!r}, which is not in sample_submission.csv"
            + (f" (and lacks {missing[0]!r})" if missing else "")
            + "; ids must be exactly the sample's."
        )
    if not ids.reset_index(drop=True).equals(expected.reset_index(drop=True)):
        first = int((ids.values != expected.values).argmax())
        raise PaddyError(f"{where} rows are not in sample_submission.csv order (first difference at row {first + 2}).")
    labels = sub["label"]
    bad = labels[~labels.isin(list(vocab))]
    if len(bad):
        raise PaddyError(
            f"{where} has label {bad.iloc[0]!r} (row {bad.index[0] + 2}), which is not one of the competition's "
            f"labels: {', '.join(vocab)}."
        )


def make_submission(sample, ids, labels):
    """Rows in the sample's order, whatever order the predictions came in."""
    pred = pd.Series(list(labels), index=list(ids), dtype=object)
    sub = pd.DataFrame({"image_id": sample["image_id"].astype(str)})
    sub["label"] = sub["image_id"].map(pred)
    return sub
