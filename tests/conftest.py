"""Tests shrink the real config and data rather than mock them: tiny timm models on tiny generated images."""

import copy
from dataclasses import replace
from pathlib import Path

import pytest
import torch
import yaml

from paddy.data.synthetic import make_competition
from paddy.settings import parse_settings

ROOT = Path(__file__).resolve().parents[1]

torch.set_num_threads(2)


@pytest.fixture
def params():
    """params.yaml, shrunk: one bag, 1 epoch, small images."""
    p = yaml.safe_load((ROOT / "params.yaml").read_text())
    p = copy.deepcopy(p)
    p["data"]["synthetic"].update(n_train=60, n_test=12, width=48, height=64)
    p["prepare"].update(max_size=64, workers=1)
    p["cv"].update(scheme="bag", n_splits=1)
    p["train"].update(epochs=1, effective_batch=16, workers=0)
    p["tta"].update(n=1)
    p["models"] = {
        "resnet": dict(
            arch="test_resnet",
            pretrained=False,
            head="fastai",
            targets=["label"],
            item_size=[64, 48],
            item_method="squish",
            size=[48, 32],
            micro_batch=8,
            weight=1,
        ),
        "vit": dict(
            arch="test_vit",
            pretrained=False,
            head="fastai",
            targets=["label"],
            item_size=160,
            item_method="pad",
            size=160,
            micro_batch=8,
            weight=2,
        ),
    }
    return p


@pytest.fixture
def source_settings(params):
    """source_settings(path): the shrunk params' DataSettings with data.source set to `path`."""
    return lambda source: replace(parse_settings(params).data, source=str(source))


@pytest.fixture(autouse=True, scope="session")
def item_cache(tmp_path_factory):
    """Item arrays go to a folder of the test session, never the user's ~/.cache/paddy."""
    path = tmp_path_factory.mktemp("cache")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("PADDY_CACHE", str(path))
        yield path


@pytest.fixture(scope="session")
def competition(tmp_path_factory):
    """A tiny competition folder and its test truth file (shared: tests must not modify it)."""
    root = tmp_path_factory.mktemp("comp")
    make_competition(root / "raw", root / "truth.csv", n_train=60, n_test=12, width=48, height=64, seed=1)
    return root / "raw", root / "truth.csv"
