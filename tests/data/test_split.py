import pandas as pd
import pytest

from paddy.data.split import make_splits, split_columns
from paddy.errors import PaddyError


@pytest.fixture
def train():
    labels = ["a"] * 50 + ["b"] * 30 + ["c"] * 20
    return pd.DataFrame({"image_id": [f"{i}.jpg" for i in range(100)], "label": labels})


@pytest.mark.parametrize("scheme", ["kfold", "bag"])
def test_splits_are_deterministic(train, scheme):
    a = make_splits(train, scheme, 5, 0.2, seed=3)
    b = make_splits(train, scheme, 5, 0.2, seed=3)
    pd.testing.assert_frame_equal(a, b)
    c = make_splits(train, scheme, 5, 0.2, seed=4)
    assert not a.equals(c)


def test_kfold_validates_each_row_once_and_is_stratified(train):
    table = make_splits(train, "kfold", 5, seed=0)
    cols = split_columns(table)
    assert cols == ["v0", "v1", "v2", "v3", "v4"]
    assert (table[cols].sum(axis=1) == 1).all()
    for c in cols:  # each fold holds a fifth of every label
        counts = table[table[c] == 1].label.value_counts().to_dict()
        assert counts == {"a": 10, "b": 6, "c": 4}


def test_bags_are_stratified_and_differ(train):
    table = make_splits(train, "bag", 3, 0.2, seed=0)
    for c in split_columns(table):
        assert table[table[c] == 1].label.value_counts().to_dict() == {"a": 10, "b": 6, "c": 4}
    assert not table.v0.equals(table.v1)


def test_kfold_needs_enough_rows_per_label(train):
    with pytest.raises(PaddyError, match="'c' has only 20"):
        make_splits(train, "kfold", 25)
