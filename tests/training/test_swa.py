"""Weight averaging (train.swa_epochs): the final weights are the mean of the last epochs' ends, BatchNorm's
statistics are recomputed for them over the training images, and the last epoch's metrics are the average's."""

import pytest
import torch
from helpers.data import prepared_work
from helpers.settings import settings_with
from helpers.training import train
from torch import nn

from paddy.training.checkpoints import load_checkpoint
from paddy.training.loop import validate
from paddy.training.run import create_run

CPU = torch.device("cpu")


def test_swa_is_the_mean_of_the_last_epochs_ends_with_batchnorm_recomputed(competition, params, tmp_path):
    prepared_work(competition, tmp_path)
    settings = settings_with(params, {"train.epochs": 2, "train.swa_epochs": 2, "train.frozen_epochs": 0})
    ends, logged = {}, []

    def on_step(split, epoch, step, model, optimizer):  # the last step's weights are the epoch's end
        ends[epoch] = {n: p.detach().clone() for n, p in model.named_parameters()}
        ends[epoch]["bn"] = model[0].model.conv1[1].running_mean.clone()

    train(settings, tmp_path, tmp_path / "m", on_epoch=lambda s, e, m: logged.append(m), on_step=on_step)
    model, _ = load_checkpoint(tmp_path / "m", "v0")
    for name, p in model.named_parameters():
        torch.testing.assert_close(p, (ends[0][name] + ends[1][name]) / 2, rtol=1e-5, atol=1e-7)
    assert not torch.equal(ends[0]["0.model.conv1.0.weight"], ends[1]["0.model.conv1.0.weight"])  # two different ends

    # BatchNorm's statistics: those of the averaged weights over the training images, without augmentation, in the
    # micro-batches of the last epoch's order (the mean of each micro-batch's mean), computed here from the inputs
    # the first BatchNorm gets (the first convolution's output, which no statistics change).
    run = create_run(settings, "resnet", CPU, tmp_path / "prepared", tmp_path / "split.csv", (8, 16))
    data = run.data
    loader = data.loader(data.rows(data.splits[0])[0], 16, shuffle=True, drop_last=True, seed=settings.seed)
    loader.batch_sampler.set_epoch(1)
    bn = model[0].model.conv1[1]
    assert isinstance(bn, nn.BatchNorm2d)
    seen = []
    hook = bn.register_forward_pre_hook(lambda m, args: seen.append(args[0].mean((0, 2, 3))))
    with torch.no_grad():
        for items, _ in loader:
            for start in range(0, len(items), 8):
                model(data.augment.plain(items[start : start + 8]))
    hook.remove()
    torch.testing.assert_close(bn.running_mean, torch.stack(seen).mean(0), rtol=1e-4, atol=1e-6)
    assert int(bn.num_batches_tracked) == len(seen) == 6  # reset, then counted over one pass: 3 steps of 2
    assert not torch.allclose(bn.running_mean, ends[1]["bn"], rtol=1e-3, atol=1e-5)  # not training's running mean

    valid = data.loader(data.rows(data.splits[0])[1], 32)
    again = validate(model, valid, data.augment, run.precision, run.heads, ("label",), run.metric)
    assert logged[-1]["valid_loss"] == pytest.approx(again["valid_loss"], rel=1e-5)  # the average's, as logged
    assert logged[-1]["valid_acc"] == again["valid_acc"]
