"""presets/*.yaml replace params.yaml whole (`cp presets/seed.yaml params.yaml`): each must hold every setting
params.yaml holds, no stale ones, and pass the same checks, or the documented command fails at the first stage."""

import pytest
import yaml
from helpers.pipeline import ROOT

from paddy.settings import parse_settings
from paddy.settings.parse import MODEL_KEYS

PRESETS = sorted((ROOT / "presets").glob("*.yaml"))


def keys(tree, prefix=""):
    """Dotted keys of every setting, models excluded (each preset names its own; check_model checks them)."""
    out = set()
    for key, value in tree.items():
        dotted = f"{prefix}{key}"
        if dotted == "models":
            continue
        out |= keys(value, dotted + ".") if isinstance(value, dict) else {dotted}
    return out


@pytest.mark.parametrize("preset", PRESETS, ids=[p.name for p in PRESETS])
def test_a_preset_holds_every_setting_and_passes_the_checks(preset):
    params = yaml.safe_load(preset.read_text())
    defaults = yaml.safe_load((ROOT / "params.yaml").read_text())
    assert keys(params) == keys(defaults), f"{preset.name} differs from params.yaml in its settings"
    parse_settings(params, preset)
    for name, cfg in params["models"].items():
        assert set(cfg) == set(MODEL_KEYS), f"{preset.name}: models.{name}"


def test_the_seed_preset_is_the_lectures_ensemble():
    params = yaml.safe_load((ROOT / "presets" / "seed.yaml").read_text())
    assert params["data"]["source"] == "kaggle"
    assert (params["train"]["epochs"], params["train"]["frozen_epochs"], params["train"]["lr_mult"]) == (12, 1, 100)
    archs = {cfg["arch"] for cfg in params["models"].values()}
    assert archs == {
        "convnext_large_in22k",
        "vit_large_patch16_224",
        "swinv2_large_window12_192_22k",
        "swin_large_patch4_window7_224",
    }
    assert all(cfg["pretrained"] is True for cfg in params["models"].values())
    assert {n: cfg["weight"] for n, cfg in params["models"].items() if cfg["arch"].startswith("vit")} == {
        "vit_large_squish": 2,
        "vit_large_crop": 2,
    }


@pytest.mark.parametrize("preset", PRESETS, ids=[p.name for p in PRESETS])
def test_a_presets_architectures_are_timms_at_sizes_they_take(preset):
    from paddy.settings.parse import as_hw
    from paddy.training.model_checks import check_arch

    for name, cfg in yaml.safe_load(preset.read_text())["models"].items():
        check_arch(f"models.{name}.arch in {preset.name}", cfg["arch"], as_hw(cfg["size"]))
