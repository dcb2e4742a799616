import numpy as np
import pandas as pd
import pytest
import torch

from paddy.ensemble import weighted_mean
from paddy.errors import PaddyError
from paddy.submission import make_submission, validate_submission
from paddy.tta import blend

LABELS = ["a", "b", "c"]


def test_tta_blend_is_three_quarters_augmented():
    aug, plain = torch.tensor([[1.0, 0.0]]), torch.tensor([[0.0, 1.0]])
    torch.testing.assert_close(blend(aug, plain, 0.25), torch.tensor([[0.75, 0.25]]))


def probs(ids, rows):
    return pd.DataFrame(rows, columns=LABELS).assign(image_id=ids)[["image_id", *LABELS]]


def test_weighted_mean_counts_a_model_twice():
    ids = ["1.jpg", "2.jpg"]
    a = probs(ids, [[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
    b = probs(ids, [[0.0, 1.0, 0.0], [0.0, 0.0, 1.0]])
    mean = weighted_mean({"a": a, "b": b}, {"a": 1.0, "b": 2.0}, LABELS)
    np.testing.assert_allclose(mean[LABELS].to_numpy(), [[1 / 3, 2 / 3, 0], [0, 1 / 3, 2 / 3]])
    assert mean["image_id"].tolist() == ids
    equal = weighted_mean({"a": a, "b": b}, {"a": 1.0, "b": 1.0}, LABELS)
    assert equal[LABELS].to_numpy()[0, 0] == pytest.approx(0.5)


def test_all_zero_weights_are_refused():
    a = probs(["1.jpg"], [[1.0, 0.0, 0.0]])
    with pytest.raises(PaddyError, match="weight"):
        weighted_mean({"a": a}, {"a": 0.0}, LABELS)


@pytest.fixture
def sample():
    return pd.DataFrame({"image_id": ["3.jpg", "1.jpg", "2.jpg"], "label": ""})


def test_submission_keeps_sample_order(sample):
    sub = make_submission(sample, ["1.jpg", "2.jpg", "3.jpg"], ["a", "b", "c"])
    assert sub.values.tolist() == [["3.jpg", "c"], ["1.jpg", "a"], ["2.jpg", "b"]]
    validate_submission(sub, sample, LABELS)


@pytest.mark.parametrize(
    "rows, message",
    [
        ([["3.jpg", "c"], ["1.jpg", "a"], ["9.jpg", "b"]], "9.jpg"),  # wrong id
        ([["3.jpg", "c"], ["1.jpg", "a"]], "2 rows"),  # missing row
        ([["3.jpg", "c"], ["1.jpg", "zzz"], ["2.jpg", "b"]], "zzz"),  # unknown label
        ([["1.jpg", "a"], ["3.jpg", "c"], ["2.jpg", "b"]], "order"),  # rows shuffled
        ([["3.jpg", "c"], ["3.jpg", "a"], ["2.jpg", "b"]], "more than once"),
    ],
)
def test_bad_submissions_are_refused(sample, rows, message):
    with pytest.raises(PaddyError, match=message):
        validate_submission(pd.DataFrame(rows, columns=["image_id", "label"]), sample, LABELS)
