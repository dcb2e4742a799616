"""Progressive resizing (train.progressive): fine_tune at growing sizes on the same weights, a ViT's position
embeddings resampled between them; the final checkpoint at the full size; a resume inside the second size repeats
the uninterrupted run; the profile and the check cover every size."""

import pytest
import torch
from helpers.data import prepared_work
from helpers.settings import settings_with
from helpers.training import train

from paddy.errors import PaddyError
from paddy.predict.tta import predict_model
from paddy.training.archs import phase_sizes
from paddy.training.checkpoints import load_checkpoint
from paddy.training.loop import training_stages
from paddy.training.models import TimmBody
from paddy.training.run import TrainingRun, checkpoint_run

CPU = torch.device("cpu")
PROGRESSIVE = {"train.progressive.scales": [0.5], "train.progressive.epochs": [1]}
# test_vit was built for 160: 64 is a size it now takes (a multiple of its 16-pixel patches), 32 its half
MODELS = {
    "resnet": {"models.resnet.item_size": [64, 64], "models.resnet.size": [64, 64]},
    "vit": {"models.vit.item_size": 64, "models.vit.size": 64},
}


@pytest.fixture(scope="module")
def work(competition, tmp_path_factory):
    work = tmp_path_factory.mktemp("progressive")
    prepared_work(competition, work)
    return work


def test_phase_sizes_round_to_the_architectures_stride():
    assert phase_sizes("test_resnet", (224, 224), [0.5]) == [(128, 128), (224, 224)]  # 112: 3.5 x 32, up to 4
    assert phase_sizes("test_vit", (224, 160), [0.25, 0.5]) == [(64, 48), (112, 80), (224, 160)]  # 16-pixel patches
    assert phase_sizes("test_resnet", (64, 48), [0.1]) == [(32, 32), (64, 48)]  # never below one stride
    assert phase_sizes("test_resnet", (64, 48), []) == [(64, 48)]


def test_stages_restart_the_recipe_at_each_size(params):
    settings = settings_with(params, {**PROGRESSIVE, **MODELS["vit"], "train.epochs": 2, "train.frozen_epochs": 1})
    stages = training_stages(run_without_data(settings, "vit"))
    assert [s.size for s in stages] == [(32, 32), (64, 64)]
    assert [[(p.name, p.epochs) for p in s.phases] for s in stages] == [
        [("frozen", 1), ("unfrozen", 1)],
        [("frozen", 1), ("unfrozen", 2)],
    ]
    off = training_stages(run_without_data(settings_with(params, MODELS["vit"]), "vit"))
    assert [s.size for s in off] == [(64, 64)] and [p.epochs for p in off[0].phases] == [1]


def run_without_data(settings, name):
    return TrainingRun(settings, name, CPU, "fp32", {"label": ["a", "b"]}, 8, 16)


@pytest.mark.parametrize("name", ["resnet", "vit"])
def test_trains_at_each_size_and_predicts_at_the_full_one(work, params, tmp_path, name, monkeypatch):
    """0.5 of the size for one epoch, then the full size: the model sees each, and the checkpoint is the full one."""
    settings = settings_with(params, {**PROGRESSIVE, **MODELS[name]})
    seen = []
    real = torch.nn.Module.__call__

    def record(module, x, *args, **kwargs):
        if isinstance(module, torch.nn.Sequential) and isinstance(module[0], TimmBody) and module.training:
            seen.append(tuple(x.shape[2:]))
        return real(module, x, *args, **kwargs)

    monkeypatch.setattr(torch.nn.Module, "__call__", record)
    results = train(settings, work, tmp_path / name, (8, 16), name=name)
    monkeypatch.undo()
    assert sorted(set(seen)) == [(32, 32), (64, 64)] and seen[0] == (32, 32) and seen[-1] == (64, 64)
    assert len(results) == 1 and results[0]["train_loss"] > 0
    model, meta = load_checkpoint(tmp_path / name, "v0")
    assert meta["size"] == [64, 64]
    if name == "vit":
        assert model[0].model.pos_embed.shape[1] == 1 + 4 * 4  # a class token and the 64-pixel grid of patches
    test, oof = predict_model(
        checkpoint_run(settings, tmp_path / name, CPU, work / "prepared", work / "split.csv"), tmp_path / name
    )
    assert len(test) == 12 and torch.allclose(torch.tensor(test.probs.sum(1)), torch.ones(12), atol=1e-4)


class Killed(Exception):
    pass


def test_a_resume_inside_the_second_size_repeats_the_uninterrupted_run(work, params, tmp_path):
    """Killed at the second step of the full-size stage's unfrozen phase (the ViT's position embeddings then have
    the full size's shape, the checkpoint its state): the resumed run ends on the same weights and metrics."""
    changes = {**PROGRESSIVE, **MODELS["vit"], "train.frozen_epochs": 1, "train.checkpoint_minutes": 1e-9}
    settings = settings_with(params, changes)
    reference = train(settings, work, tmp_path / "reference", (8, 16), name="vit")

    def kill(split, epoch, step, model, optimizer):
        if epoch == 3 and step == 1:  # epochs 0-1: the half size; 2: full size, frozen; 3: full size, unfrozen
            raise Killed

    with pytest.raises(Killed):
        train(settings, work, tmp_path / "killed", (8, 16), name="vit", on_step=kill, resume_dir=tmp_path / "resume")
    log = []
    resumed = train(
        settings, work, tmp_path / "killed", (8, 16), name="vit", resume_dir=tmp_path / "resume",
        on_epoch=lambda s, e, m: log.append(e),
    )  # fmt: skip
    assert log == [0, 1, 2, 3] and "resumed at epoch 4, step 2" in resumed[0]["events"][0]
    timing = ("time", "images_per_s")
    strip = lambda r: {k: v for k, v in r.items() if not any(t in k for t in timing) and k != "events"}  # noqa: E731
    assert strip(resumed[0]) == strip(reference[0])
    a, _ = load_checkpoint(tmp_path / "reference", "v0")
    b, _ = load_checkpoint(tmp_path / "killed", "v0")
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))


def test_the_check_refuses_a_size_the_vit_cannot_take(params):
    from paddy.training.model_checks import check_archs, check_models_train

    good = settings_with(params, {**PROGRESSIVE, **MODELS["vit"]})
    check_archs(good.models, scales=good.train.progressive.scales)
    check_models_train(good.models, scales=good.train.progressive.scales)
    bad = settings_with(params, {"models.vit.size": 72})  # 4.5 patches of 16 pixels
    with pytest.raises(PaddyError, match=r"`models.vit.arch` .*test_vit.*\[72, 72\].*multiple of 16"):
        check_archs(bad.models)
    same = settings_with(params, {**MODELS["resnet"], "train.progressive.scales": [0.3, 0.4]})  # both 32
    with pytest.raises(PaddyError, match=r"train.progressive.scales.*0.4.*\[32, 32\]"):
        check_archs(same.models, scales=same.train.progressive.scales)
