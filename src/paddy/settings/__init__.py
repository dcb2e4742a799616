"""The settings of a run: params.yaml read and checked once (parse) into frozen dataclasses (schema).

A stage calls load_settings() at its entry and hands each function the part it needs; nothing past it reads the raw
mapping. `paddy lr-find -S key=value` applies its overrides to the raw mapping first, as `dvc exp run -S` does."""

import copy
from pathlib import Path

import yaml

from paddy.errors import PaddyError
from paddy.settings.parse import parse_settings
from paddy.settings.schema import (
    AugmentSettings,
    CompetitionSettings,
    CVSettings,
    DataSettings,
    EnsembleSettings,
    KaggleSettings,
    ModelSettings,
    PrepareSettings,
    ProfileSettings,
    ReportSettings,
    Settings,
    SyntheticSettings,
    TagSettings,
    TrainSettings,
    TTASettings,
)

__all__ = [
    "AugmentSettings",
    "CompetitionSettings",
    "CVSettings",
    "DataSettings",
    "EnsembleSettings",
    "KaggleSettings",
    "ModelSettings",
    "PrepareSettings",
    "ProfileSettings",
    "ReportSettings",
    "Settings",
    "SyntheticSettings",
    "TagSettings",
    "TTASettings",
    "TrainSettings",
    "load_settings",
    "override",
    "parse_settings",
    "read_params",
]


def load_settings(path="params.yaml", overrides=()):
    """params.yaml (with `key=value` overrides applied, if any) as checked Settings."""
    return parse_settings(override(read_params(path), overrides, path), path)


def read_params(path="params.yaml"):
    """params.yaml's raw mapping, unchecked: for `-S` overrides (override) before parse_settings checks it."""
    path = Path(path)
    if not path.exists():
        raise PaddyError(f"{path} does not exist: run from the repository root, where dvc.yaml and params.yaml live.")
    try:
        params = yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        raise PaddyError(f"{path} is not valid YAML ({e}). Fix it, or restore it with `git checkout {path}`.") from e
    return params


def override(params, assignments, path="params.yaml"):
    """Apply `key=value` assignments as `dvc exp run -S` does: dotted keys that exist already (a leading + adds
    one), values parsed as YAML. Returns a new dict; check it with parse_settings."""
    params = copy.deepcopy(params)
    for text in assignments:
        key, sep, raw = text.partition("=")
        if not sep:
            raise PaddyError(f"-S {text!r}: give key=value, e.g. -S train.lr=0.02.")
        add, key = key.startswith("+"), key.lstrip("+")
        *parents, last = key.split(".")
        node = params
        for part in parents:
            if not isinstance(node.get(part), dict):
                raise PaddyError(f"-S {text!r}: {path} has no `{'.'.join(parents)}` section.")
            node = node[part]
        if last not in node and not add:
            raise PaddyError(f"-S {text!r}: {path} has no `{key}`; add a new key with -S '+{key}=...'.")
        node[last] = yaml.safe_load(raw)
    return params
