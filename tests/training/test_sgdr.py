"""Recipe sgdr (fastai 0.7's cosine annealing with restarts) and its snapshot ensemble: the rates at the cycles'
boundaries against the formula, cycles that do not add up to train.epochs refused, and a run whose snapshots (and
weight average) survive kills, join TTA, and repeat the uninterrupted run exactly."""

import json
import math
import shutil

import numpy as np
import pytest
import torch
from helpers.data import prepared_work
from helpers.settings import settings_with, shrunk_params
from helpers.training import train

from paddy.data.competition import read_sample_submission
from paddy.errors import PaddyError
from paddy.predict.photos import model_probs, prepare_photos
from paddy.predict.tta import predict_model, split_seed, tta_probs
from paddy.training.checkpoints import load_checkpoint
from paddy.training.digests import verify_models
from paddy.training.models import create_model
from paddy.training.optim import create_optimizer
from paddy.training.run import checkpoint_run
from paddy.training.schedule import position, recipe_phases, set_hyperparameters

CPU = torch.device("cpu")


def sgdr_rate(lr, t, nb):
    """fastai 0.7's CosAnneal.calc_lr without its warm-up: the t-th of a cycle's nb batches."""
    return lr / 2 * (math.cos(math.pi * t / nb) + 1)


@pytest.mark.parametrize("accumulation", [1, 2])
def test_sgdr_rates_restart_at_each_cycle_and_anneal_to_zero(params, accumulation):
    """1 frozen epoch, then cycles of 1, 2 and 4 epochs; 5 optimizer steps an epoch, each of `accumulation`
    micro-batches. Every step's rate, set as the loop sets it, is the formula's at the step's last micro-batch."""
    train = settings_with(
        params, {"train.recipe": "sgdr", "train.epochs": 7, "train.frozen_epochs": 1, "train.lr_mult": 10}
    ).train
    phases = recipe_phases(train)
    assert [(p.name, p.epochs, p.fresh) for p in phases] == [
        ("frozen", 1, True), ("unfrozen", 1, True), ("unfrozen", 2, False), ("unfrozen", 4, False),
    ]  # fmt: skip
    optimizer = create_optimizer(create_model("test_vit", 10), 0.01, lr_mult=10)
    steps = 5
    for phase in phases:
        heads, bodies = [], []
        for step in range(phase.epochs * steps):  # the loop: epoch e of the phase, step i -> e * steps + i
            set_hyperparameters(optimizer, phase, position(step, phase.epochs * steps, accumulation))
            rates = {g["part"]: g["lr"] for g in optimizer.param_groups}
            heads.append(rates["head"])
            bodies.append(rates["body"])
            assert all(g["betas"] == (0.9, 0.99) for g in optimizer.param_groups)  # no momentum schedule
        nb = phase.epochs * steps * accumulation
        expected = [sgdr_rate(0.01, s * accumulation + accumulation - 1, nb) for s in range(len(heads))]
        assert heads == pytest.approx(expected, rel=1e-12)
        assert heads[0] == pytest.approx(0.01, rel=0.11)  # the restart, at lr itself without accumulation
        if accumulation == 1:
            assert heads[0] == 0.01
        assert heads[-1] < 0.01 * 0.1 and heads[-1] == min(heads)  # near 0 at the cycle's end
        scale = 0.1 if phase.name == "frozen" else 1 / 10  # the frozen body's norm layers: lr/10; unfrozen lr/lr_mult
        assert bodies == pytest.approx([h * scale for h in heads], rel=1e-12)


def test_fine_tune_is_still_the_default_recipe(params):
    train = settings_with(params, {"train.epochs": 3, "train.frozen_epochs": 1}).train
    phases = recipe_phases(train)
    assert [(p.name, p.div, p.pct_start, p.cosine, p.snapshot) for p in phases] == [
        ("frozen", 25.0, 0.99, False, ""), ("unfrozen", 5.0, 0.3, False, ""),
    ]  # fmt: skip


def test_cycles_that_do_not_add_up_to_the_epochs_are_refused(params):
    with pytest.raises(PaddyError, match=r"`train.epochs` in params.yaml is 4.*add up to 1, 3, 7 epochs.*3 or 7"):
        settings_with(params, {"train.recipe": "sgdr", "train.epochs": 4})
    with pytest.raises(PaddyError, match=r"add up to 2, 4, 6 epochs, never 5.*4 or 6"):
        settings_with(params, {"train.recipe": "sgdr", "train.epochs": 5, "train.cycle_len": 2, "train.cycle_mult": 1})
    ok = settings_with(params, {"train.recipe": "sgdr", "train.epochs": 15, "train.cycle_mult": 2}).train
    assert [p.epochs for p in recipe_phases(ok)] == [1, 2, 4, 8]
    assert settings_with(params, {"train.epochs": 4}).train.recipe == "fastai"  # the cycles bind sgdr alone
    with pytest.raises(PaddyError, match=r"`train.snapshots`.*recipe` is fastai.*train.recipe: sgdr"):
        settings_with(params, {"train.snapshots": True})
    with pytest.raises(PaddyError, match=r"`train.swa_epochs` in params.yaml is 4, more than the 3 epochs"):
        settings_with(params, {"train.epochs": 3, "train.swa_epochs": 4})


class Killed(Exception):
    """Stands in for SIGKILL: raised from on_step, before that step's checkpoint is written."""


@pytest.fixture(scope="module")
def work(competition, tmp_path_factory):
    work = tmp_path_factory.mktemp("sgdr")
    prepared_work(competition, work)
    return work


CHANGES = {
    "train.recipe": "sgdr", "train.epochs": 3, "train.cycle_len": 1, "train.cycle_mult": 1, "train.snapshots": True,
    "train.swa_epochs": 2, "train.frozen_epochs": 0, "train.checkpoint_minutes": 1e-9, "tta.n": 1,
}  # fmt: skip


def folder(path):
    return {p.name: p.read_bytes() for p in sorted(path.iterdir())}


@pytest.fixture(scope="module")
def reference(work, tmp_path_factory):
    """An uninterrupted run: 3 one-epoch cycles, snapshots of the first two, the last two epochs averaged."""
    settings = settings_with(shrunk_params(), CHANGES)
    out, rates = tmp_path_factory.mktemp("reference") / "models", []
    results = train(settings, work, out, resume_dir=out.parent / "resume",
                    on_step=lambda s, e, i, m, o: rates.append((e, i, o.param_groups[0]["lr"])))  # fmt: skip
    return settings, out, results, rates


def test_snapshots_survive_kills_and_the_run_repeats_the_uninterrupted_one(work, reference, tmp_path):
    settings, expected, _, rates = reference
    assert sorted(p.name for p in expected.iterdir()) == [
        "meta.json", "v0.safetensors", "v0.snapshot1.safetensors", "v0.snapshot2.safetensors",
    ]  # fmt: skip
    meta = json.loads((expected / "meta.json").read_text())
    assert meta["snapshots"] == {"v0": ["snapshot1", "snapshot2"]}
    assert set(meta["sha256"]) == {"v0", "v0.snapshot1", "v0.snapshot2"}
    steps = max(i for _, i, _ in rates) + 1
    firsts = [lr for e, i, lr in rates if i == 0]
    assert len(firsts) == 3 and len({round(lr, 12) for lr in firsts}) == 1  # every cycle restarts at the same rate
    assert all(lr < firsts[0] / 10 for e, i, lr in rates if i == steps - 1)  # and ends near 0

    out, resume = tmp_path / "models", tmp_path / "resume"

    def kill_at(epoch, step):
        def on_step(split, e, i, model, optimizer):
            if (e, i) == (epoch, step):
                raise Killed

        with pytest.raises(Killed):
            train(settings, work, out, resume_dir=resume, on_step=on_step)

    kill_at(1, 1)  # in cycle 2: snapshot 1 taken, nothing averaged yet
    (run,) = resume.iterdir()
    assert sorted(p.name for p in run.glob("*.safetensors")) == ["v0.snapshot1.safetensors"]
    assert (run / "v0.snapshot1.safetensors").read_bytes() == (expected / "v0.snapshot1.safetensors").read_bytes()
    kill_at(2, 1)  # in cycle 3: the average holds epoch 2's end
    assert sorted(p.name for p in run.glob("*.safetensors")) == ["v0.snapshot1.safetensors", "v0.snapshot2.safetensors"]
    assert "average" in torch.load(run / "v0.pt", weights_only=False)
    results = train(settings, work, out, resume_dir=resume)
    assert any("resumed at epoch 3, step 2" in e for e in results[0]["events"])
    assert folder(out) == folder(expected)  # byte for byte: every snapshot, the averaged weights and meta.json


def test_tta_averages_each_splits_members(work, reference, tmp_path):
    """The model's TTA is the mean of its three members' (the same seeds each), not its final weights' alone."""
    settings, out, _, _ = reference
    run = checkpoint_run(settings, out, CPU, work / "prepared", work / "split.csv")
    test, _ = predict_model(run, out)
    _, loader = run.data.test_loader(run.eval_batch)
    seed = split_seed(settings.seed, 0)
    each = [
        tta_probs(load_checkpoint(out, m, CPU)[0], loader, run.data.augment, settings.tta, run.precision, seed)
        for m in ("v0.snapshot1", "v0.snapshot2", "v0")
    ]
    torch.testing.assert_close(torch.from_numpy(test.probs), sum(each) / 3, rtol=1e-5, atol=1e-6)
    assert not torch.allclose(each[0], each[2]) and not torch.allclose(each[1], each[2])  # three different members

    alone = tmp_path / "alone"
    shutil.copytree(out, alone)
    meta = json.loads((alone / "meta.json").read_text())
    del meta["snapshots"]
    (alone / "meta.json").write_text(json.dumps(meta))
    final, _ = predict_model(checkpoint_run(settings, alone, CPU, work / "prepared", work / "split.csv"), alone)
    torch.testing.assert_close(torch.from_numpy(final.probs), each[2], rtol=1e-5, atol=1e-6)
    assert not torch.allclose(torch.from_numpy(final.probs), torch.from_numpy(test.probs))


def test_a_damaged_snapshot_is_named(work, reference, tmp_path):
    settings, out, _, _ = reference
    damaged = tmp_path / "damaged"
    shutil.copytree(out, damaged)
    (damaged / "v0.snapshot1.safetensors").write_bytes(b"truncated")
    with pytest.raises(PaddyError, match=r"v0.snapshot1.safetensors is damaged"):
        predict_model(checkpoint_run(settings, damaged, CPU, work / "prepared", work / "split.csv"), damaged)
    with pytest.raises(PaddyError, match=r"v0.snapshot1.safetensors is damaged.*dvc repro -f train@resnet"):
        verify_models(tmp_path, ["damaged"])  # the check stage's look, before DVC would retrain it silently


def test_paddy_predict_averages_the_members_as_the_tta_stage(work, reference, competition, tmp_path):
    """`paddy predict` on the raw test images gets the tta stage's probabilities: the same members, seeds, mean."""
    settings, out, _, _ = reference
    test, _ = predict_model(checkpoint_run(settings, out, CPU, work / "prepared", work / "split.csv"), out)
    sample = read_sample_submission(competition[0], settings.competition)
    assert test.ids.tolist() == sample.image_id.tolist()
    files = [competition[0] / "test_images" / i for i in sample.image_id]
    prepared, _ = prepare_photos(files, tmp_path, settings.prepare.max_size)  # as `paddy predict` does
    probs = model_probs(checkpoint_run(settings, out, CPU), out, [prepared[f] for f in files])["label"]
    np.testing.assert_allclose(probs, test.probs, atol=1e-6, rtol=0)
