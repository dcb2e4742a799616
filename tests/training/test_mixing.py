"""Mixup, CutMix and label smoothing in the one training step (paddy.training.step.Mixing, timm.data.Mixup in batch
mode), and the exponential moving average of the weights (train.ema, timm.utils.ModelEmaV3): the soft targets, the
same draws for every micro-batch of a step, every target mixed alike, a run through train_model, a killed run resumed
to the same weights, the average saved as the split's weights, and the checks that refuse what cannot mix."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from helpers.data import prepared_work, tags_settings
from helpers.settings import settings_with
from helpers.training import train
from safetensors.torch import load_file

from paddy.errors import PaddyError
from paddy.memory import measure as memory
from paddy.settings import ModelSettings, TrainSettings
from paddy.training.augment import BatchAugment
from paddy.training.models import create_model
from paddy.training.step import Heads, Mixing, Step, mix_batch, seed_step, target_loss, train_step

MIXED = {"train.mixup": 0.4, "train.cutmix": 1.0, "train.label_smoothing": 0.1}


def smoothed(y, classes, eps):
    """A smoothed one-hot, written out: 1 - eps + eps / classes on the class, eps / classes elsewhere."""
    return F.one_hot(y, classes).float() * (1 - eps) + eps / classes


def how_mixed(x, plain):
    """What was done to the images `plain` to make `x`: ("mixup", lambda) for x = lam plain + (1 - lam) plain
    flipped, ("cutmix", box) for a box pasted from the flipped batch, ("none",); and lambda as the targets see it."""
    mirror = plain.flip(0)
    if torch.equal(x, plain):
        return ("none",), 1.0
    changed = (x != plain).any(0).any(0)
    rows, cols = changed.any(1).nonzero().flatten(), changed.any(0).nonzero().flatten()
    box = (rows.min().item(), rows.max().item() + 1, cols.min().item(), cols.max().item() + 1)
    inside = torch.zeros_like(changed)
    inside[box[0] : box[1], box[2] : box[3]] = True
    if torch.equal(x, torch.where(inside, mirror, plain)):
        return ("cutmix", box), 1 - inside.sum().item() / inside.numel()
    lam = ((x - mirror) / (plain - mirror))[0, 0, 0, 0].item()
    torch.testing.assert_close(x, lam * plain + (1 - lam) * mirror)
    return ("mixup", round(lam, 5)), lam


@pytest.mark.parametrize("changes", [{"train.mixup": 0.4}, {"train.cutmix": 1.0}])
def test_mixed_targets_are_lambda_one_hot_plus_the_rest_of_the_flipped_one(changes, params):
    """Both targets of a multi-target model are mixed with the image's lambda and pairing, each smoothed; every
    row of each target sums to 1."""
    mixing = Mixing.of(settings_with(params, {**changes, "train.label_smoothing": 0.1}).train)
    sizes, eps = (10, 4), 0.1
    torch.manual_seed(0)
    plain = torch.rand(7, 3, 16, 12)  # odd: the middle image is paired with itself
    y = torch.stack([torch.randint(0, 10, (7,)), torch.randint(0, 4, (7,))], dim=1)
    kinds = set()
    for seed in range(6):
        np.random.seed(seed)
        x = plain.clone()
        soft = mix_batch(mixing.mixer(), x, y, sizes, np.random.get_state())
        kind, lam = how_mixed(x, plain)  # a CutMix box may round to nothing: lambda 1
        kinds.add(kind[0])
        for t, part in enumerate(soft.split(sizes, dim=1)):
            one = smoothed(y[:, t], sizes[t], eps)
            torch.testing.assert_close(part, lam * one + (1 - lam) * one.flip(0))
            torch.testing.assert_close(part.sum(1), torch.ones(7))
    assert ("mixup" if "train.mixup" in changes else "cutmix") in kinds


def test_smoothing_alone_is_the_soft_target_loss_of_smoothed_one_hots():
    """Label smoothing without mixing (F.cross_entropy's) trains on what a mixed batch's soft targets hold at
    lambda 1, for each target of a multi-target model."""
    torch.manual_seed(0)
    logits, heads = torch.randn(8, 14), Heads((10, 4))
    y = torch.stack([torch.randint(0, 10, (8,)), torch.randint(0, 4, (8,))], dim=1)
    soft = torch.cat([smoothed(y[:, 0], 10, 0.2), smoothed(y[:, 1], 4, 0.2)], dim=1)
    hard = target_loss(logits, y, heads, smoothing=0.2)
    torch.testing.assert_close(hard, target_loss(logits, soft, heads))
    assert hard.item() != pytest.approx(target_loss(logits, y, heads).item(), rel=1e-3)


class Recorder(torch.nn.Module):
    """A linear model that keeps every input it is given."""

    def __init__(self):
        super().__init__()
        self.linear, self.seen = torch.nn.Linear(3, 10), []

    def forward(self, x):
        self.seen.append(x.detach().clone())
        return self.linear(x.mean((2, 3)))


@pytest.mark.parametrize("micro", [16, 12])
def test_every_micro_batch_of_a_step_draws_the_same_lambda_and_box(micro, params):
    """32 samples as 1 x 32, 2 x 16, or 12 + 12 + 8: each step mixes each micro-batch with the same draw (mixup's
    lambda or CutMix's box), seeded by the step's seeds, and steps differ."""
    train = settings_with(params, MIXED).train
    augment = BatchAugment((16, 16), (0.5,) * 3, (0.5,) * 3)
    items, targets = torch.randint(0, 256, (32, 20, 20, 3), dtype=torch.uint8), torch.randint(0, 10, (32,))
    kinds, heads = [], Heads((10,))
    for step_number in range(6):
        draws = []
        for size in (32, micro):
            model, generator = Recorder(), torch.Generator()
            optimizer = torch.optim.SGD(model.parameters(), lr=0.0)
            seed_step(generator, 42, 0, step_number)
            plain = augment.apply(items, augment.draw(items, torch.Generator().manual_seed(generator.initial_seed())))
            train_step(model, optimizer, items, targets, generator, Step.of(train, augment, "fp32", size, heads=heads))
            starts = range(0, 32, size)
            draws.append([how_mixed(x, plain[s : s + size])[0] for x, s in zip(model.seen, starts)])
        whole, parts = draws
        assert len(parts) == len(range(0, 32, micro)) and all(p == whole[0] for p in parts), (whole, parts)
        kinds.append(whole[0])
    assert {k[0] for k in kinds} == {"mixup", "cutmix"} and len(set(kinds)) == len(kinds)


def test_defaults_mix_nothing(params):
    """With every technique off the step has no mixing: the step as it was (the fastai parity tests' runs)."""
    assert Step.of(settings_with(params).train, None, "fp32", 8).mixing is None
    assert Step.of(settings_with(params, {"train.label_smoothing": 0.1}).train, None, "fp32", 8).mixing.mixes is False


@pytest.fixture(scope="module")
def workspace(competition, tmp_path_factory):
    work = tmp_path_factory.mktemp("mixing")
    prepared_work(competition, work)
    return work


def mixed_settings():
    """1 frozen + 1 unfrozen epoch of 3 steps, mixed, smoothed, with an EMA whose decay shows within 6 steps."""
    from helpers.settings import shrunk_params

    params = shrunk_params()
    params["models"] = {"resnet": params["models"]["resnet"]}
    params["train"].update(epochs=1, frozen_epochs=1, eval_batch=32, checkpoint_minutes=1e-9)
    return settings_with(params, {**MIXED, "train.ema": True, "train.ema_decay": 0.5})


class Killed(Exception):
    pass


def test_a_mixed_run_with_an_ema_trains_resumes_exactly_and_saves_the_average(workspace, tmp_path):
    """train_model end to end (test_resnet, mixup + CutMix + smoothing + EMA); the saved weights are the average
    of every step's weights (timm's warmup, then the decay), not the last ones; killed at the second epoch's second
    step and run again from the checkpoints, it ends with the same bytes and metrics; a finished split restored
    from its checkpoint saves the same weights again."""
    settings = mixed_settings()
    average, last, steps = {}, {}, []

    def on_step(split, epoch, step, model, optimizer):
        n = len(steps) + 1
        decay = 0.0 if n == 1 else min(0.5, 1 - n ** (-2 / 3))  # ModelEmaV3's warmup: 1 - (1 + (n - 1))^(-2/3)
        for k, v in model.state_dict().items():
            last[k] = v.detach().clone()
            keep = v.is_floating_point() and k in average
            average[k] = decay * average[k] + (1 - decay) * v.detach() if keep else v.detach().clone()
        steps.append((epoch, step))

    reference = train(settings, workspace, tmp_path / "reference", on_step=on_step)
    assert len(steps) == 6 and np.isfinite(reference[0]["train_loss"]) and 0 <= reference[0]["valid_acc"] <= 1
    saved = load_file(str(tmp_path / "reference" / "v0.safetensors"))
    for k, v in saved.items():
        torch.testing.assert_close(v, average[k].to(v.dtype), rtol=1e-5, atol=1e-6)
    assert any(not torch.allclose(saved[k], last[k]) for k in saved if saved[k].is_floating_point())

    def kill(split, epoch, step, model, optimizer):
        if (epoch, step) == (1, 1):
            raise Killed

    resume = {"resume_dir": tmp_path / "resume"}
    with pytest.raises(Killed):
        train(settings, workspace, tmp_path / "killed", on_step=kill, **resume)
    resumed = train(settings, workspace, tmp_path / "killed", **resume)
    assert any("resumed at epoch 2, step 2" in e for e in resumed[0]["events"])
    assert saved_bytes(tmp_path / "killed") == saved_bytes(tmp_path / "reference")
    strip = ("time", "images_per_s", "events")
    assert {k: v for k, v in resumed[0].items() if not any(s in k for s in strip)} == {
        k: v for k, v in reference[0].items() if not any(s in k for s in strip)
    }
    restored = train(settings, workspace, tmp_path / "restored", **resume)
    assert any("finished earlier" in e for e in restored[0]["events"])
    assert (tmp_path / "restored" / "v0.safetensors").read_bytes() == saved_bytes(tmp_path / "reference")


def saved_bytes(out):
    return (out / "v0.safetensors").read_bytes()


@pytest.mark.parametrize("average", [{"ema": True}, {"swa_epochs": 2}])
def test_the_memory_estimate_counts_the_averages_copy_of_the_weights(average):
    """train.ema's and train.swa_epochs' averages each hold one more copy of the weights on the device."""
    model = ModelSettings("m", "resnet18", False, "fastai", ("label",), (32, 32), "squish", (32, 32), "auto", 1)
    rows = [memory.estimate(memory.Spec(model, TrainSettings(effective_batch=2, **on), 10, "bf16"), 2)[0]
            for on in ({}, average)]  # fmt: skip
    state = sum(t.numel() * t.element_size() for t in create_model("resnet18", 10).state_dict().values())
    grown = (rows[1]["allocated_gb"] - rows[0]["allocated_gb"]) * memory.GiB
    assert abs(grown - state) < 0.002 * memory.GiB  # the rows' rounding (0.001 GB each)


@pytest.mark.parametrize("key, value", [("train.mixup", 0.2), ("train.cutmix", 1.0), ("train.label_smoothing", 0.1)])
def test_mixing_a_multi_label_model_is_refused(params, key, value):
    with pytest.raises(PaddyError, match=rf"`{key}` in params.yaml is {value}, but the competition is multi-label"):
        tags_settings(params, {key: value})
    assert tags_settings(params, {"train.ema": True}).train.ema  # the average of a tags model's weights is fine


@pytest.mark.parametrize("value", [0, 1, 1.5, -0.1])
def test_an_ema_decay_outside_0_1_is_refused(params, value):
    with pytest.raises(PaddyError, match=r"`train.ema_decay` in params.yaml .*above 0 and below 1"):
        settings_with(params, {"train.ema": True, "train.ema_decay": value})
