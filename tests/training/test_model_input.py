"""What the model sees: the input normalisation decided in one place (fastai's rule: the architecture's mean/std for
pretrained weights, none for random ones), recorded in the checkpoint, and separate random streams per step."""

import dataclasses
import json

import pytest
import timm
import torch
from helpers.data import prepared_work
from helpers.training import train

from paddy.settings import AugmentSettings, ModelSettings, parse_settings
from paddy.training.augment import BatchAugment, create_augment
from paddy.training.checkpoints import checkpoint_normalization
from paddy.training.model_data import model_augment
from paddy.training.models import input_normalization
from paddy.training.step import seed_step, stream_seeds

CPU = torch.device("cpu")


def items(n=4, h=40, w=30, seed=0):
    return torch.randint(0, 256, (n, h, w, 3), dtype=torch.uint8, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("arch", ["test_vit", "test_resnet", "convnext_tiny"])
def test_random_weights_see_pixels_and_pretrained_ones_their_statistics(arch, tmp_path):
    cfg = timm.get_pretrained_cfg(arch).to_dict()
    assert input_normalization(arch, False) is None
    stats = input_normalization(arch, True)
    assert stats == {"mean": list(cfg["mean"]), "std": list(cfg["std"])}
    assert input_normalization(arch, str(tmp_path / "weights.safetensors")) == stats  # a weights file: pretrained


def test_without_normalisation_the_input_is_the_pixels_in_0_1():
    x = items()
    full = create_augment((40, 30), AugmentSettings(min_scale=1.0, **_no_aug())).plain(
        x
    )  # no crop, same size: the pixels
    assert torch.allclose(full, x.permute(0, 3, 1, 2).float() / 255, atol=1e-5)
    assert BatchAugment((20, 20)).mean is None
    trained = create_augment((24, 24), _aug()).train(x, torch.Generator().manual_seed(0))
    assert trained.min() >= 0 and trained.max() <= 1


def test_with_normalisation_the_input_is_standardised_by_the_architectures_statistics():
    x = items()
    stats = input_normalization("test_vit", True)
    raw = create_augment((24, 24), _aug()).train(x, torch.Generator().manual_seed(3))
    normed = create_augment((24, 24), _aug(), stats).train(x, torch.Generator().manual_seed(3))
    mean, std = (torch.tensor(stats[k]).view(1, 3, 1, 1) for k in ("mean", "std"))
    assert torch.allclose(normed, (raw - mean) / std, atol=1e-5)


def test_a_models_augmentation_follows_its_pretrained_setting(tmp_path):
    model = ModelSettings("vit", "test_vit", False, "fastai", ("label",), (32, 32), "squish", (32, 32), 8, 1)
    assert model_augment(model, _aug()).mean is None
    model = dataclasses.replace(model, pretrained=str(tmp_path / "w.safetensors"))
    expected = torch.tensor(timm.get_pretrained_cfg("test_vit").mean)
    assert torch.allclose(model_augment(model, _aug()).mean.flatten(), expected)


def test_the_checkpoint_records_the_normalisation_and_old_ones_keep_theirs(competition, params, tmp_path):
    prepared_work(competition, tmp_path)
    params["models"] = {"resnet": params["models"]["resnet"]}
    settings = parse_settings(params)
    train(settings, tmp_path, tmp_path / "m")
    meta = json.loads((tmp_path / "m" / "meta.json").read_text())
    assert meta["normalization"] is None and checkpoint_normalization(meta) is None  # random init: pixels
    del meta["normalization"]  # a checkpoint from before the rule: it was trained on normalised input
    assert checkpoint_normalization(meta) == input_normalization("test_resnet", True)


def test_a_steps_augmentation_and_dropout_streams_are_distinct_and_repeatable():
    seeds = {stream_seeds(42, e, s) for e in range(3) for s in range(50)}
    assert len(seeds) == 150 and all(a != d for a, d in seeds)
    generator = torch.Generator()
    seed_step(generator, 42, 1, 7)
    crops, dropout = torch.rand(1000, generator=generator), torch.rand(1000)
    assert abs(torch.corrcoef(torch.stack([crops, dropout]))[0, 1]) < 0.1  # the old single seed gave 1.0
    seed_step(generator, 42, 1, 7)
    assert torch.equal(torch.rand(1000, generator=generator), crops) and torch.equal(torch.rand(1000), dropout)


def _aug():
    return AugmentSettings()  # fastai's defaults


def _no_aug():
    return {"do_flip": False, "flip_vert": False, "max_rotate": 0.0, "min_zoom": 1.0, "max_zoom": 1.0,
            "max_warp": 0.0, "max_lighting": 0.0, "p_affine": 0.75, "p_lighting": 0.75}  # fmt: skip
