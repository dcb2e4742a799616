"""Progressive resizing (train.progressive): fine_tune at growing sizes on the same weights, a ViT's position
embeddings resampled between them; the final checkpoint at the full size; a resume inside the second size repeats
the uninterrupted run; the profile and the check cover every size."""

import pytest
import torch
from helpers.data import prepared_work
from helpers.settings import settings_with, shrunk_params
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


@pytest.fixture(scope="module")
def resumable(work, tmp_path_factory):
    """A ViT's settings (1 epoch at half its size, then 1 at its size; a checkpoint after every step) and its
    uninterrupted run."""
    changes = {**PROGRESSIVE, **MODELS["vit"], "train.checkpoint_minutes": 1e-9}
    settings = settings_with(shrunk_params(), changes)
    out = tmp_path_factory.mktemp("reference")
    return settings, train(settings, work, out, (8, 16), name="vit"), load_checkpoint(out, "v0")[0]


@pytest.mark.parametrize("epoch, step", [(1, 0), (1, 1)])
def test_a_resume_in_the_second_size_repeats_the_uninterrupted_run(work, resumable, tmp_path, epoch, step):
    """Killed as the full size's first step runs (its last checkpoint, the half size's end, holds the half-size
    position embeddings) or at its second step (they have the full size's shape): the resumed run ends on the
    weights and metrics of the uninterrupted one. Epoch 0: the half size; 1: the full size."""
    settings, reference, weights = resumable

    def kill(split, e, s, model, optimizer):
        if (e, s) == (epoch, step):
            raise Killed

    with pytest.raises(Killed):
        train(settings, work, tmp_path / "killed", (8, 16), name="vit", on_step=kill, resume_dir=tmp_path / "resume")
    log = []
    resumed = train(
        settings, work, tmp_path / "killed", (8, 16), name="vit", resume_dir=tmp_path / "resume",
        on_epoch=lambda s, e, m: log.append(e),
    )  # fmt: skip
    assert log == [0, 1] and f"resumed at epoch {epoch + 1}, step {step + 1}" in resumed[0]["events"][0]
    timing = ("time", "images_per_s")
    strip = lambda r: {k: v for k, v in r.items() if not any(t in k for t in timing) and k != "events"}  # noqa: E731
    assert strip(resumed[0]) == strip(reference[0])
    again, _ = load_checkpoint(tmp_path / "killed", "v0")
    assert all(torch.equal(x, y) for x, y in zip(weights.state_dict().values(), again.state_dict().values()))


def test_the_check_refuses_a_size_the_vit_cannot_take(params):
    from paddy.training.model_checks import check_archs, check_models_train

    good = settings_with(params, {**PROGRESSIVE, **MODELS["vit"]})
    check_archs(good.models, scales=good.train.progressive.scales)
    check_models_train(good.models, scales=good.train.progressive.scales)
    bad = settings_with(params, {"models.vit.size": 72})  # 4.5 patches of 16 pixels
    with pytest.raises(PaddyError, match=r"`models.vit.arch` .*test_vit.*\[72, 72\].*multiple of 16"):
        check_archs(bad.models)
    same = {**MODELS["resnet"], "train.progressive.scales": [0.3, 0.4], "train.progressive.epochs": [1, 1]}
    same = settings_with(params, same)  # both scales give 32
    with pytest.raises(PaddyError, match=r"train.progressive.scales.*0.4.*\[32, 32\]"):
        check_archs(same.models, scales=same.train.progressive.scales)


def test_the_profile_covers_every_size():
    """Each candidate's row is its largest peak over the phases' sizes, so the batches chosen fit all of them."""
    from paddy.memory import display, measure, profile
    from paddy.settings import ModelSettings, ProfileSettings, TrainSettings
    from paddy.settings.schema import ProgressiveSettings

    model = ModelSettings("m", "test_vit", False, "fastai", ("label",), (64, 64), "squish", (64, 64), "auto", 1)
    train = TrainSettings(effective_batch=16, progressive=ProgressiveSettings(scales=(0.5,), epochs=(1,)))
    spec = measure.Spec(model, train, 10, "bf16")
    limits = ProfileSettings(budget_gb=16, headroom=0.1)
    got = profile.profile_model("m", spec, ([16], [32]), limits, CPU)
    assert got["sizes"] == [[32, 32], [64, 64]] and display.summary_of(got)["sizes"] == got["sizes"]
    full, evals = measure.estimate(spec, 16, [32])
    assert got["table"][0]["size"] == [64, 64] and got["table"][0]["total_gb"] == full["total_gb"]
    assert got["eval_table"][0]["total_gb"] == evals[0]["total_gb"]
    assert "progressive resizing trains it at 32x32, 64x64" in display.format_table([got])

    def one(at, micro_batch, eval_batches):  # a phase whose peak is the larger one: the small size's, here
        total = 5.0 if at.model.size == (32, 32) else 3.0
        row = {"oom": False, "allocated_gb": 0.0, "reserved_gb": 0.0, "total_gb": total}
        return row, [dict(row) for _ in eval_batches]

    train_row, eval_rows = profile.every_size(spec, [(32, 32), (64, 64)], one)(16, [32])
    assert (train_row["total_gb"], train_row["size"]) == (5.0, [32, 32]) and eval_rows[0]["size"] == [32, 32]
