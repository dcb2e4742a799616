"""One model's run (paddy.training.run): built once, and taken whole by training, the learning-rate finder, the
memory profile and TTA, the seed's multi-target model included; and the train stage's epoch log."""

import numpy as np
import pytest
import torch
from helpers.data import prepared_work
from helpers.settings import shrunk_params

from paddy.memory.profile import profile_settings
from paddy.predict.tta import predict_model
from paddy.settings import parse_settings
from paddy.train import EpochLog
from paddy.training import lr_find
from paddy.training.folds import train_model
from paddy.training.run import checkpoint_run, create_run

CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def work(competition, tmp_path_factory):
    out = tmp_path_factory.mktemp("run")
    prepared_work(competition, out)
    return out


@pytest.mark.parametrize("targets", [["label"], ["label", "variety"]])
def test_lr_find_the_profile_and_tta_take_a_multi_target_run(work, tmp_path, targets):
    params = shrunk_params()
    params["models"] = {"resnet": dict(params["models"]["resnet"], targets=targets)}
    params["train"].update(epochs=1, frozen_epochs=0)
    params["tta"]["n"] = 1
    settings = parse_settings(params)
    run = create_run(settings, "resnet", CPU, work / "prepared", work / "split.csv", (8, 16))
    assert run.sizes == tuple(len(run.vocab[t]) for t in targets) and run.precision == "fp32"

    data = run.data
    loader = data.loader(data.rows(data.splits[0])[0], 16, shuffle=True, drop_last=True, seed=0)
    lrs, losses = lr_find.sweep(run, data.create_model(), loader, num_it=8)
    assert len(lrs) == len(losses) > 0 and np.isfinite(losses).all()

    profile = profile_settings(run)
    assert profile["num_classes"] == sum(run.sizes) and profile["micro_batch"] is not None

    results = train_model(run, tmp_path / "m")
    assert ("valid_acc_variety" in results[0]) == ("variety" in targets)
    test, oof = predict_model(
        checkpoint_run(settings, tmp_path / "m", CPU, work / "prepared", work / "split.csv"), tmp_path / "m"
    )
    labels = len(run.vocab["label"])  # TTA gives the label's probabilities, whatever else the model predicts
    assert test.probs.shape[1] == oof.probs.shape[1] == labels
    np.testing.assert_allclose(np.asarray(test.probs).sum(1), 1, atol=1e-4)


class FakeLive:
    def __init__(self):
        self.step, self.logged = None, []

    def log_metric(self, key, value):
        self.logged.append((self.step, key, value))


def test_the_epoch_log_logs_each_split_and_says_the_time_left(capsys):
    live = FakeLive()
    log = EpochLog(live, "vit", epochs=3, splits=2)
    log(0, 0, {"train_loss": 1.5, "epoch_time_s": 60.0, "micro_batch": 8})
    log(0, 1, {"train_loss": 1.0, "epoch_time_s": 60.0, "micro_batch": 8})
    assert live.logged == [(0, "split0/train_loss", 1.5), (0, "split0/epoch_time_s", 60.0),
                           (0, "split0/micro_batch", 8), (1, "split0/train_loss", 1.0),
                           (1, "split0/epoch_time_s", 60.0), (1, "split0/micro_batch", 8)]  # fmt: skip
    lines = capsys.readouterr().out.splitlines()
    assert lines[-1] == "vit split 0 epoch 2/3: train_loss 1; 4.0 min left"  # 4 of 6 epochs left at a minute each
    log(0, 1, {"train_loss": 0.9, "epoch_time_s": 60.0, "micro_batch": 8})  # a resume replays an epoch
    assert [m["train_loss"] for m in log.history[0]] == [1.5, 0.9]
