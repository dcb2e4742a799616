"""The learning-rate finder: fastai's sweep and suggestions on the real step; its suggestion trains; repeatable."""

import numpy as np
import pytest
import torch
from helpers.data import prepared_work
from helpers.training import train

from paddy.settings import parse_settings
from paddy.training import lr_find
from paddy.training.run import create_run

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
    prepared_work(competition, out)
    return out


def run_sweep(prepared, params, num_it=20):
    run = create_run(parse_settings(params), "resnet", CPU, prepared / "prepared", prepared / "split.csv", (8, 16))
    data = run.data
    loader = data.loader(data.rows(data.splits[0])[0], 16, shuffle=True, drop_last=True, seed=0)
    torch.manual_seed(0)
    model = data.create_model()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    lrs, losses = lr_find.sweep(run, model, loader, num_it=num_it)
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
    trained = train(parse_settings(params), prepared, tmp_path / "m")
    params["train"]["lr"] = 1e-7
    untrained = train(parse_settings(params), prepared, tmp_path / "u")
    assert trained[0]["train_loss"] < untrained[0]["train_loss"]  # at the suggested rate it learns
    assert 1e-6 < lr < 10


@pytest.mark.parametrize("targets", [["label"], ["label", "variety"]])
def test_the_command_writes_its_files(prepared, params, tmp_path, monkeypatch, capsys, targets):
    """Also for the seed's multi-target model: its sweep died with a traceback (the step was not told the targets'
    sizes)."""
    import yaml

    from paddy.commands import main

    params["models"]["resnet"]["targets"] = targets
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    monkeypatch.chdir(tmp_path)
    code = main(["lr-find", "resnet", "-S", "train.frozen_epochs=1", "--num-it", "12",
                 "--prepared", str(prepared / "prepared"), "--split", str(prepared / "split.csv")])  # fmt: skip
    assert code == 0
    out = capsys.readouterr().out
    assert "body frozen" in out and "valley" in out
    assert all((tmp_path / "lr_find" / f"resnet.{ext}").exists() for ext in ("csv", "json", "png"))
    assert main(["lr-find", "resnet", "-S", "train.nonsense=1"]) == 2


def test_unfrozen_sweeps_the_whole_model_from_the_weights_after_the_frozen_epochs(
    prepared, params, tmp_path, monkeypatch, capsys
):
    """`paddy lr-find --unfrozen` (2018 lesson 2): the frozen epoch trains first (the head and norm layers learn, the
    rest of the body stays as it was), then the sweep trains every parameter from those weights."""
    import yaml

    from paddy.commands import main
    from paddy.training.step import seed_everything

    seen = []
    real = lr_find.train_step

    def spy(model, optimizer, items, targets, generator, step, no_sync=None):
        if not seen:
            seen.append({k: v.clone() for k, v in model.state_dict().items()})
            seen.append(all(p.requires_grad for p in model.parameters()))
        return real(model, optimizer, items, targets, generator, step, no_sync)

    monkeypatch.setattr(lr_find, "train_step", spy)
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    monkeypatch.chdir(tmp_path)
    paths = [
        "-S",
        "train.eval_batch=32",
        "--prepared",
        str(prepared / "prepared"),
        "--split",
        str(prepared / "split.csv"),
    ]
    code = main(["lr-find", "resnet", "-S", "train.frozen_epochs=1", "--num-it", "8", "--unfrozen", *paths])
    assert code == 0
    out = capsys.readouterr().out
    assert "training the 1 frozen epoch(s) first" in out and "frozen epoch 1: train_loss" in out
    assert "whole model after the frozen epochs" in out
    start, trainable = seen
    assert trainable  # everything learns in the sweep
    run = create_run(parse_settings(params), "resnet", CPU, prepared / "prepared", prepared / "split.csv", (8, 16))
    seed_everything(params["seed"])
    initial = run.data.create_model().state_dict()  # the command's model before the frozen epoch
    assert not torch.equal(start["1.8.weight"], initial["1.8.weight"])  # the head trained
    assert torch.equal(start["0.model.conv1.0.weight"], initial["0.model.conv1.0.weight"])  # the body was frozen
    seen.clear()
    assert main(["lr-find", "resnet", "--num-it", "6", "--unfrozen", *paths]) == 0
    assert "whole model from the start (train.frozen_epochs is 0" in capsys.readouterr().out
    assert all(torch.equal(v, initial[k]) for k, v in seen[0].items())  # nothing trained before the sweep
