"""Settings for tests: params.yaml shrunk (tiny models, images and runs), the default competition, and a setting
changed by its dotted key."""

import copy

import yaml

from helpers.pipeline import ROOT
from paddy.settings import parse_settings

SLUG = "paddy-disease-classification"  # the default competition (params.yaml)


def shrunk_params():
    """params.yaml, shrunk: one bag, 1 epoch, small images (the one way tests shrink it; the `params` fixture)."""
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


def default_competition():
    """params.yaml's competition section (Paddy's), as CompetitionSettings."""
    return parse_settings(shrunk_params()).competition


def settings_with(params, changes=None):
    """parse_settings of a copy of the raw params dict `params` with `changes`, {dotted key: value}, set: a key that
    does not exist yet is added beside the others (as a typo would be), `params` itself is left as it was.

        settings_with(params, {"train.compile": True, "models.resnet.size": [40, 32]})"""
    params = copy.deepcopy(params)
    for key, value in (changes or {}).items():
        *path, last = key.split(".")
        node = params
        for part in path:
            node = node[part]
        node[last] = value
    return parse_settings(params)
