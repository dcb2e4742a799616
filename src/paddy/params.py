"""Load params.yaml and check it once, so a bad setting fails before any data is touched or model trained."""

import difflib
from pathlib import Path

import yaml

from paddy.errors import PaddyError

MODEL_KEYS = ("arch", "pretrained", "item_size", "item_method", "size", "micro_batch", "weight")
ITEM_METHODS = ("squish", "crop", "pad")
PRECISIONS = ("auto", "bf16", "fp16", "fp32")


def load_params(path="params.yaml", check_archs=True):
    path = Path(path)
    if not path.exists():
        raise PaddyError(f"{path} does not exist: run from the repository root, where dvc.yaml and params.yaml live.")
    try:
        params = yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        raise PaddyError(f"{path} is not valid YAML ({e}). Fix it, or restore it with `git checkout {path}`.") from e
    check_params(params, path, check_archs=check_archs)
    return params


def _require(params, dotted, path):
    node = params
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            raise PaddyError(f"{path} has no `{dotted}`. Every setting needs a value there; restore it from git.")
        node = node[part]
    return node


def _number(params, dotted, path, lo=None, hi=None, integer=False):
    value = _require(params, dotted, path)
    ok = isinstance(value, int if integer else (int, float)) and not isinstance(value, bool)
    if ok and lo is not None:
        ok = value >= lo
    if ok and hi is not None:
        ok = value <= hi
    if not ok:
        kind = "an integer" if integer else "a number"
        bounds = f" between {lo} and {hi}" if hi is not None else (f" of at least {lo}" if lo is not None else "")
        raise PaddyError(f"`{dotted}` in {path} is {value!r}; it must be {kind}{bounds}.")
    return value


def _choice(params, dotted, path, choices):
    value = _require(params, dotted, path)
    if value not in choices:
        raise PaddyError(f"`{dotted}` in {path} is {value!r}; it must be one of {', '.join(choices)}.")
    return value


def as_hw(value):
    """A size given as 224 or [320, 224] (height, width) -> (height, width), or None if malformed."""
    if isinstance(value, int) and not isinstance(value, bool) and value > 0:
        return (value, value)
    if isinstance(value, (list, tuple)) and len(value) == 2 and all(isinstance(v, int) and v > 0 for v in value):
        return (int(value[0]), int(value[1]))
    return None


def check_params(params, path="params.yaml", check_archs=True):
    if not isinstance(params, dict):
        raise PaddyError(f"{path} must hold a mapping of settings; restore it from git.")
    _number(params, "seed", path, integer=True)
    source = _require(params, "data.source", path)
    if not isinstance(source, str) or not source:
        raise PaddyError(f"`data.source` in {path} must be synthetic, kaggle, or a path to a folder or .zip.")
    for key in ("n_train", "n_test", "width", "height"):
        _number(params, f"data.synthetic.{key}", path, lo=1, integer=True)
    _number(params, "prepare.max_size", path, lo=8, integer=True)
    _number(params, "prepare.workers", path, lo=1, integer=True)
    scheme = _choice(params, "cv.scheme", path, ("kfold", "bag"))
    _number(params, "cv.n_splits", path, lo=2 if scheme == "kfold" else 1, integer=True)
    _number(params, "cv.valid_pct", path, lo=0.01, hi=0.99)
    _number(params, "train.epochs", path, lo=1, integer=True)
    _number(params, "train.frozen_epochs", path, lo=0, integer=True)
    _number(params, "train.lr", path, lo=0)
    _number(params, "train.lr_mult", path, lo=1)
    effective_batch = _number(params, "train.effective_batch", path, lo=1, integer=True)
    _number(params, "train.min_scale", path, lo=0.05, hi=1.0)
    _choice(params, "train.precision", path, PRECISIONS)
    _number(params, "tta.n", path, lo=0, integer=True)
    _number(params, "tta.beta", path, lo=0.0, hi=1.0)
    models = _require(params, "models", path)
    if not isinstance(models, dict) or not models:
        raise PaddyError(f"`models` in {path} is empty: name at least one model (arch, size, ...) to train.")
    for name, cfg in models.items():
        check_model(name, cfg, models, effective_batch, path, check_archs)


def check_model(name, cfg, models, effective_batch, path="params.yaml", check_archs=True):
    where = f"`models.{name}` in {path}"
    if not isinstance(cfg, dict):
        raise PaddyError(f"{where} must be a mapping with {', '.join(MODEL_KEYS)}.")
    missing = [k for k in MODEL_KEYS if k not in cfg]
    if "arch" not in cfg:
        others = [m for m in models if m != name and isinstance(models[m], dict) and "arch" in models[m]]
        close = difflib.get_close_matches(name, others, n=1)
        hint = f" Did you mean `models.{close[0]}`?" if close else f" Models defined: {', '.join(others) or 'none'}."
        raise PaddyError(
            f"{where} sets {', '.join(sorted(cfg)) or 'nothing'} but names no arch: there is no model `{name}` to "
            f"weight or train.{hint} To add a model give all of {', '.join(MODEL_KEYS)}, "
            f"e.g. -S '+models.{name}={{arch: ..., ...}}'."
        )
    if missing:
        raise PaddyError(f"{where} lacks {', '.join(missing)}; every model needs {', '.join(MODEL_KEYS)}.")
    for key in ("item_size", "size"):
        if as_hw(cfg[key]) is None:
            raise PaddyError(f"`models.{name}.{key}` in {path} is {cfg[key]!r}; give 224 or [height, width].")
    if cfg["item_method"] not in ITEM_METHODS:
        raise PaddyError(
            f"`models.{name}.item_method` in {path} is {cfg['item_method']!r}; it must be one of "
            f"{', '.join(ITEM_METHODS)}."
        )
    micro = cfg["micro_batch"]
    if micro != "auto" and not (isinstance(micro, int) and not isinstance(micro, bool) and micro >= 1):
        raise PaddyError(
            f"`models.{name}.micro_batch` in {path} is {micro!r}; it must be a positive integer, or auto (the "
            "largest micro-batch the memory profile says fits the budget)."
        )
    if micro != "auto" and micro > effective_batch:
        raise PaddyError(
            f"`models.{name}.micro_batch` ({micro}) is larger than `train.effective_batch` ({effective_batch}) in "
            f"{path}: a micro-batch is a slice of one optimizer step. Lower micro_batch, or raise effective_batch."
        )
    weight = cfg["weight"]
    if not (isinstance(weight, (int, float)) and not isinstance(weight, bool) and weight >= 0):
        raise PaddyError(f"`models.{name}.weight` in {path} is {weight!r}; it must be a number >= 0.")
    if not isinstance(cfg["pretrained"], bool):
        raise PaddyError(f"`models.{name}.pretrained` in {path} is {cfg['pretrained']!r}; it must be true or false.")
    if check_archs:
        from paddy.models import check_arch

        check_arch(name, cfg["arch"], as_hw(cfg["size"]), path)
