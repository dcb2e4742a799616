"""The submission in the competition's form (`competition.form`), and what makes one valid: the sample's header and
ids, in its order, each once, and values of the form: a class (label), a probability per class column summing to 1
(probabilities), or the positive class's probability (probability)."""

import numpy as np
import pandas as pd

from paddy.data.competition import value_columns
from paddy.errors import PaddyError
from paddy.files import write_csv
from paddy.metrics import kaggle_clip, positive_index
from paddy.tags import predict_tags, split_tags, tag_strings

# Twelve significant digits: each written probability is off by 5e-13 at most, so a row still sums to 1 within 1e-6
# (the graders' tolerance) up to a million classes, and a clipped 1e-15 is written as it is.
FLOAT_FORMAT = "%.12g"
SUM_TOLERANCE = 1e-6


def make_submission(sample, ids, probs, classes, comp, tags=(0.5, True)):
    """The submission: the sample's rows in its order, and per row what `comp.form` sends of probs [row, class]
    (one row per id of `ids`, columns in `classes` order): label, the argmax class in the sample's value column;
    probabilities, one column per class in the sample's column order, clipped as Kaggle's log loss clips and each
    row rescaled to sum to 1; probability, the positive class's probability, clipped alike. A sample id without a
    prediction gets an empty row (validate_submission refuses it). tags (form tags): each image's tags whose
    probability passes the thresholds (tags: (a number or one per tag, allow_empty)), space-separated in class
    order."""
    id_column, columns = sample.columns[0], value_columns(sample)
    probs, classes = np.asarray(probs, dtype=float), list(classes)
    ids = [str(i) for i in ids]
    sub = pd.DataFrame({id_column: sample[id_column].astype(str)})
    if comp.form in ("label", "tags"):
        if comp.form == "tags":
            values = tag_strings(predict_tags(probs, *tags), classes)
        else:
            values = np.asarray(classes, dtype=object)[probs.argmax(1)]
        predicted = pd.Series(values, index=ids, dtype=object)
        sub[columns[0]] = sub[id_column].map(predicted)
        return sub
    rows = sub[id_column].map(pd.Series(np.arange(len(ids)), index=ids))
    found = rows.notna().to_numpy()
    at = rows[found].astype(int).to_numpy()
    if comp.form == "probabilities":
        values = np.full((len(sub), len(columns)), np.nan)
        values[found] = kaggle_clip(probs)[at][:, [classes.index(c) for c in columns]]
        return pd.concat([sub, pd.DataFrame(values, columns=columns, index=sub.index)], axis=1)
    sub[columns[0]] = np.nan
    sub.loc[found, columns[0]] = kaggle_clip(probs[:, positive_index(classes, comp.positive)])[at]
    return sub


def write_submission(sub, path):
    """submission.csv, atomically, with enough digits that a probabilities row still sums to 1 read back."""
    write_csv(sub, path, float_format=FLOAT_FORMAT)


def _numbers(sub, columns, where, what):
    """The value columns as numbers in [0, 1], or a PaddyError naming the first cell that is not."""
    values = sub[columns].apply(pd.to_numeric, errors="coerce")
    for column in columns:
        bad = values[column].isna() | (values[column] < 0) | (values[column] > 1)
        if bad.any():
            i = int(bad.to_numpy().argmax())
            raise PaddyError(
                f"{where} has {sub[column].iloc[i]!r} in column {column!r} (row {i + 2}, id "
                f"{sub.iloc[i, 0]!r}): {what} are probabilities, numbers from 0 to 1 in every row. Write it again "
                "with `dvc repro ensemble`."
            )
    return values


def validate_submission(sub, sample, classes, comp, where="submission.csv"):
    """Raise a PaddyError naming the first problem of `sub` against `sample` (both DataFrames, as read or as made)
    and the form `comp.form` (CompetitionSettings) over `classes`."""
    sample_name = comp.sample_submission
    if list(sub.columns) != list(sample.columns):
        raise PaddyError(f"{where} has header {list(sub.columns)}; Kaggle expects {list(sample.columns)}.")
    if len(sub) != len(sample):
        raise PaddyError(f"{where} has {len(sub)} rows; {sample_name} has {len(sample)}: one row per test image.")
    id_column = sample.columns[0]
    ids = sub[id_column].astype(str)
    dupes = ids[ids.duplicated()]
    if len(dupes):
        raise PaddyError(f"{where} lists {id_column} {dupes.iloc[0]!r} more than once.")
    expected = sample[id_column].astype(str)
    unknown = sorted(set(ids) - set(expected))
    if unknown:
        missing = sorted(set(expected) - set(ids))
        raise PaddyError(
            f"{where} has {id_column} {unknown[0]!r}, which is not in {sample_name}"
            + (f" (and lacks {missing[0]!r})" if missing else "")
            + "; ids must be exactly the sample's."
        )
    if not ids.reset_index(drop=True).equals(expected.reset_index(drop=True)):
        first = int((ids.to_numpy() != expected.to_numpy()).argmax())
        raise PaddyError(f"{where} rows are not in {sample_name} order (first difference at row {first + 2}).")
    columns = value_columns(sample)
    if comp.form == "tags":
        known = set(classes)
        for i, text in enumerate(sub[columns[0]]):
            if not isinstance(text, str) or not set(split_tags(text)) <= known:
                unknown = sorted(set(split_tags(text)) - known) if isinstance(text, str) else ["a gap"]
                raise PaddyError(
                    f"{where} has {columns[0]} {text!r} (row {i + 2}, id {ids.iloc[i]!r}): {', '.join(unknown)} is "
                    f"not one of the competition's {len(classes)} tags. Write it again with `dvc repro ensemble`."
                )
        return
    if comp.form == "label":
        labels = sub[columns[0]]
        bad = labels[~labels.isin(list(classes))]
        if len(bad):
            shown = ", ".join(classes[:10]) + (", ..." if len(classes) > 10 else "")
            raise PaddyError(
                f"{where} has {columns[0]} {bad.iloc[0]!r} (row {bad.index[0] + 2}), which is not one of the "
                f"competition's {len(classes)} classes: {shown}."
            )
        return
    what = "the class columns" if comp.form == "probabilities" else f"{columns[0]} values"
    values = _numbers(sub.reset_index(drop=True), columns, where, what)
    if comp.form == "probabilities":
        total = values.sum(axis=1)
        off = (total - 1).abs() > SUM_TOLERANCE
        if off.any():
            i = int(off.to_numpy().argmax())
            raise PaddyError(
                f"{where} row {i + 2} (id {ids.iloc[i]!r}) has probabilities summing to {total.iloc[i]:.9g}: each "
                f"row must sum to 1 within {SUM_TOLERANCE:g}, as the grader checks. Write it again with `dvc repro "
                "ensemble`, which rescales every row."
            )
