"""The learning-rate finder: fastai's sweep and suggestions on the real step; its suggestion trains; repeatable."""

import numpy as np
import pytest
import torch

from paddy.data.loaders import ItemDataset, create_loader, open_items
from paddy.data.prepare import prepare_competition, read_index, read_targets
from paddy.data.split import make_splits, read_splits
from paddy.files import write_csv
from paddy.training import lr_find
from paddy.training.augment import model_augment
from paddy.training.folds import target_table, train_model
from paddy.training.models import create_model

CPU = torch.device("cpu")


def test_suggestions_follow_fastais_rules():
    lrs = np.logspace(-7, 1, 100)
    losses = 2.0 - 1.5 / (1 + np.exp(-(np.log10(lrs) + 3)))  # falls around 1e-3 ...
    losses[80:] += np.linspace(0, 10, 20) ** 2  # ... and diverges past 1e-1
    found = lr_find.suggestions(lrs, losses)
    assert set(found) == {"valley", "slide", "minimum", "steep"}
    assert 1e-4 < found["steep"][0] < 1e-2  # the steepest fall is at 1e-3
    lr_min = lrs[10:-5][np.argmin(losses[10:-5])]
    assert found["minimum"][0] == pytest.approx(lr_min / 10)
    assert 1e-5 < found["valley"][0] < lr_min  # inside the long fall, before the bottom
    with_nan = losses.copy()
    with_nan[50:] = np.nan
    assert max(v for v, _ in lr_find.suggestions(lrs, with_nan).values()) < lrs[50]  # nothing from past a NaN


def test_the_plots_legend_gives_the_suggested_rates(tmp_path):
    """minimum suggests a tenth of the curve's lowest point: the legend says the suggestion, not the point."""
    lrs = np.logspace(-7, 1, 100)
    losses = 2.0 - 1.5 / (1 + np.exp(-(np.log10(lrs) + 3)))
    losses[80:] += np.linspace(0, 10, 20) ** 2
    found = lr_find.suggestions(lrs, losses)
    legend = lr_find.plot(lrs, losses, found, tmp_path / "lr.png")
    assert [line.split(": ")[1] for line in legend] == [f"{lr:.2e}" for lr, _ in found.values()]
    assert f"minimum/10: {found['minimum'][1][0] / 10:.2e}" in legend  # the point is at lr_min, the rate lr_min / 10
    assert (tmp_path / "lr.png").read_bytes()[:4] == b"\x89PNG"


@pytest.fixture(scope="module")
def prepared(competition, tmp_path_factory):
    out = tmp_path_factory.mktemp("lrf")
    index, _ = prepare_competition(competition[0], out / "prepared", max_size=64, workers=1)
    write_csv(make_splits(index[index.split == "train"], "bag", 1, 0.2, 0), out / "split.csv")
    return out


def run_sweep(prepared, params, num_it=20):
    cfg, train = params["models"]["resnet"], params["train"]
    index, vocab = read_index(prepared / "prepared"), read_targets(prepared / "prepared")
    table, splits = read_splits(prepared / "split.csv")
    targets = target_table(table, index, ["label"], vocab)
    rows = (table[splits[0]].to_numpy() == 0).nonzero()[0]
    items = open_items(prepared / "prepared", index, [f"images/train/{i}" for i in table.image_id],
                       cfg["item_size"], cfg["item_method"], 1)  # fmt: skip
    loader = create_loader(ItemDataset(items, rows, targets[rows]), 16, CPU, shuffle=True, drop_last=True, seed=0)
    torch.manual_seed(0)
    model = create_model(cfg["arch"], len(vocab["label"]), False, cfg["head"])
    before = {k: v.clone() for k, v in model.state_dict().items()}
    augment = model_augment(cfg, train["aug"])
    lrs, losses = lr_find.sweep(model, loader, augment, 8, "fp32", train, False, 0, num_it=num_it)
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in before.items())  # the weights are restored
    return lrs, losses


def test_the_sweep_is_repeatable_and_its_suggestion_trains(prepared, params, tmp_path):
    lrs, losses = run_sweep(prepared, params, num_it=16)
    again = run_sweep(prepared, params, num_it=16)
    assert np.array_equal(lrs, again[0]) and np.array_equal(losses, again[1])  # the same on the CPU
    assert lrs[0] == 1e-7 and np.all(np.diff(lrs) > 0)
    found = lr_find.suggestions(lrs, losses, num_it=16)
    lr = found["valley"][0]
    params["train"].update(epochs=3, lr=lr)
    trained = train_model("resnet", params, prepared / "prepared", prepared / "split.csv", tmp_path / "m", (8, 16),
                          CPU, "fp32")  # fmt: skip
    tiny = dict(params["train"], lr=1e-7)
    params["train"] = tiny
    untrained = train_model("resnet", params, prepared / "prepared", prepared / "split.csv", tmp_path / "u", (8, 16),
                            CPU, "fp32")  # fmt: skip
    assert trained[0]["train_loss"] < untrained[0]["train_loss"]  # at the suggested rate it learns
    assert 1e-6 < lr < 10


def test_the_command_writes_its_files(prepared, params, tmp_path, monkeypatch, capsys):
    import yaml

    from paddy.commands import main

    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    monkeypatch.chdir(tmp_path)
    code = main(["lr-find", "resnet", "-S", "train.frozen_epochs=1", "--num-it", "12",
                 "--prepared", str(prepared / "prepared"), "--split", str(prepared / "split.csv")])  # fmt: skip
    assert code == 0
    out = capsys.readouterr().out
    assert "body frozen" in out and "valley" in out
    assert all((tmp_path / "lr_find" / f"resnet.{ext}").exists() for ext in ("csv", "json", "png"))
    assert main(["lr-find", "resnet", "-S", "train.nonsense=1"]) == 2
