"""params.yaml, read and checked once into the typed settings (paddy.settings.schema), so a bad setting fails
before any data is touched or model trained, in one paragraph that names the key and params.yaml."""

import difflib
import math
import re

from paddy.errors import PaddyError
from paddy.settings import schema
from paddy.settings.schema import (
    ACCELERATORS,
    AUG_RANGES,
    CV_SCHEMES,
    DIFFICULTIES,
    ENSEMBLE_WEIGHTS,
    FORMS,
    HEADS,
    ITEM_METHODS,
    LABELS_FROM,
    LAYOUTS,
    LR_GROUPS,
    METRICS,
    MODEL_KEYS,
    PRECISIONS,
    RECIPES,
)

# Upper bounds: what no run can use, refused before it costs hours, memory or a crash
SEED_MAX = 2**31 - 1  # numpy takes seeds below 2**32; the pipeline adds a split's number (and 1000 per split for TTA)
SEED_WHY = " (numpy's seeds are 32-bit; the pipeline adds a split's number to it)"
MAX_SIDE = 4096  # pixels a side: a generated photo, an item, a model's input
MAX_BATCH = 65_536  # samples in one step or one prediction batch
MAX_WORKERS = 256  # processes

# Every key params.yaml may hold: a section is a dict of its keys, a setting None. Nothing reads any other key, so a
# typo (`train.epoch: 3` beside `epochs`) would be silently ignored: check_params refuses it. `models` holds
# user-named models, each with exactly MODEL_KEYS.
KNOWN_KEYS = {
    "seed": None,
    "data": {
        "source": None,
        "competition": None,
        "synthetic": dict.fromkeys(("n_train", "n_test", "width", "height", "seed", "difficulty", "layout", "classes")),
    },
    "competition": dict.fromkeys(
        "train_table id_column labels_from label_column train_images test_images sample_submission form positive "
        "metric".split()
    ),
    "prepare": dict.fromkeys(("max_size", "workers", "max_pixels")),
    "cv": dict.fromkeys(("scheme", "n_splits", "valid_pct", "seed")),
    "train": dict.fromkeys(
        "recipe epochs frozen_epochs lr lr_mult lr_groups weight_decay effective_batch eval_batch drop_last precision "
        "compile workers devices checkpoint_minutes".split()
    )
    | {"aug": dict.fromkeys(key for key, *_ in AUG_RANGES)},
    "tta": dict.fromkeys(("n", "beta")),
    "ensemble": dict.fromkeys(("weights", "cv_folds")),
    "report": dict.fromkeys(("top_losses", "calibration_bins", "max_classes")),
    "profile": dict.fromkeys(("budget_gb", "headroom", "min_micro_batch")),
    "kaggle": dict.fromkeys(("kernel", "accelerator", "keep_weights")),
    "models": None,  # {name: MODEL_KEYS}: checked model by model
}


def _require(params, dotted, path):
    node = params
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            raise PaddyError(f"{path} has no `{dotted}`. Every setting needs a value there; restore it from git.")
        node = node[part]
    return node


def _number(params, dotted, path, lo=None, hi=None, integer=False, above=None, auto=False, why=""):
    """A number in range: lo <= value <= hi, value > above; `auto` also accepts the string auto."""
    value = _require(params, dotted, path)
    if auto and value == "auto":
        return value
    ok = isinstance(value, int if integer else (int, float)) and not isinstance(value, bool)
    ok = ok and (not isinstance(value, float) or math.isfinite(value))  # YAML's .nan, .inf: no rate, budget, size
    ok = ok and (lo is None or value >= lo) and (hi is None or value <= hi) and (above is None or value > above)
    if not ok:
        kind = "an integer" if integer else "a number"
        bounds = [f"at least {lo}" if lo is not None else "", f"above {above}" if above is not None else ""]
        bounds += [f"at most {hi}" if hi is not None else ""]
        text = " and ".join(b for b in bounds if b)
        raise PaddyError(
            f"`{dotted}` in {path} is {value!r}; it must be {'auto or ' if auto else ''}{kind}"
            f"{' ' + text if text else ''}{why}."
        )
    return value


def _bool(params, dotted, path):
    value = _require(params, dotted, path)
    if not isinstance(value, bool):
        raise PaddyError(f"`{dotted}` in {path} is {value!r}; it must be true or false.")
    return value


def _choice(params, dotted, path, choices):
    value = _require(params, dotted, path)
    if value not in choices:
        raise PaddyError(f"`{dotted}` in {path} is {value!r}; it must be one of {', '.join(choices)}.")
    return value


def as_hw(value):
    """A size given as 224 or [320, 224] (height, width) -> (height, width), or None if malformed: the one place
    a size is read; everything past parse_settings takes the tuple."""
    if isinstance(value, int) and not isinstance(value, bool) and value > 0:
        return (value, value)
    if isinstance(value, (list, tuple)) and len(value) == 2 and all(isinstance(v, int) and v > 0 for v in value):
        return (int(value[0]), int(value[1]))
    return None


def check_params(params, path="params.yaml"):
    """Every setting's presence, type and range (architectures are timm's to judge:
    paddy.training.model_checks.check_archs)."""
    if not isinstance(params, dict):
        raise PaddyError(f"{path} must hold a mapping of settings; restore it from git.")
    check_unknown_keys(params, path)
    _number(params, "seed", path, lo=0, hi=SEED_MAX, integer=True, why=SEED_WHY)
    source = _require(params, "data.source", path)
    if not isinstance(source, str) or not source:
        raise PaddyError(f"`data.source` in {path} must be synthetic, kaggle, or a path to a folder or .zip.")
    for key in ("n_train", "n_test"):
        _number(params, f"data.synthetic.{key}", path, lo=1, hi=10_000_000, integer=True, why=" (generated images)")
    for key in ("width", "height"):
        _number(params, f"data.synthetic.{key}", path, lo=1, hi=MAX_SIDE, integer=True, why=" (pixels)")
    why = " (prepare writes JPEGs, whose sides stop at 65,535 pixels)"
    _number(params, "prepare.max_size", path, lo=8, hi=65_500, integer=True, why=why)
    _number(params, "prepare.workers", path, lo=1, hi=MAX_WORKERS, integer=True, why=" (processes)")
    why = " (an image of more pixels is left out: PIL's guard against decompression bombs; 200000000 by default)"
    _number(params, "prepare.max_pixels", path, lo=16 * 16, hi=10**10, integer=True, why=why)
    scheme = _choice(params, "cv.scheme", path, CV_SCHEMES)
    why = " (every split trains every model once more: 100 are days of training already)"
    _number(params, "cv.n_splits", path, lo=2 if scheme == "kfold" else 1, hi=100, integer=True, why=why)
    _number(params, "cv.valid_pct", path, lo=0.01, hi=0.99)
    _number(params, "cv.seed", path, lo=0, hi=SEED_MAX, integer=True, why=SEED_WHY)
    _number(params, "data.synthetic.seed", path, lo=0, hi=SEED_MAX, integer=True, why=SEED_WHY)
    _choice(params, "data.synthetic.difficulty", path, DIFFICULTIES)
    _choice(params, "data.synthetic.layout", path, LAYOUTS)
    why = " (0: the layout's own number of classes)"
    _number(params, "data.synthetic.classes", path, lo=0, hi=100_000, integer=True, why=why)
    check_competition(params, path)
    _choice(params, "train.recipe", path, RECIPES)
    _number(params, "train.epochs", path, lo=1, hi=1000, integer=True)
    _number(params, "train.frozen_epochs", path, lo=0, hi=1000, integer=True)
    _number(params, "train.lr", path, above=0, hi=10, why=" (a rate of 0 cannot train)")
    _number(params, "train.lr_mult", path, lo=1, hi=10_000, why=" (the body's rate is lr / lr_mult; fastai's is 100)")
    _number(params, "train.weight_decay", path, lo=0, hi=1)
    _choice(params, "train.lr_groups", path, LR_GROUPS)
    effective_batch = _number(params, "train.effective_batch", path, lo=1, hi=MAX_BATCH, integer=True)
    _number(params, "train.eval_batch", path, lo=1, hi=MAX_BATCH, integer=True, auto=True)
    _bool(params, "train.drop_last", path)
    for key, kind, lo, hi in AUG_RANGES:
        if kind == "bool":
            _bool(params, f"train.aug.{key}", path)
        else:
            _number(params, f"train.aug.{key}", path, lo=lo, hi=hi)
    if params["train"]["aug"]["max_zoom"] < params["train"]["aug"]["min_zoom"]:
        raise PaddyError(f"`train.aug.max_zoom` in {path} is below `train.aug.min_zoom`: give min_zoom <= max_zoom.")
    _choice(params, "train.precision", path, PRECISIONS)
    compile_ = _require(params, "train.compile", path)
    if not (compile_ == "auto" or isinstance(compile_, bool)):
        raise PaddyError(
            f"`train.compile` in {path} is {compile_!r}; it must be auto (torch.compile on CUDA only), true (always, "
            "the CPU included: slow to start there) or false (never: eager PyTorch)."
        )
    _number(params, "train.workers", path, lo=0, hi=MAX_WORKERS, integer=True, auto=True, why=" (loader processes)")
    _number(
        params, "train.devices", path, lo=1, integer=True,
        why=" (processes training one model with DistributedDataParallel: GPUs on CUDA, gloo processes on the CPU; "
        "1 trains in this process, docs/scale.md)",
    )  # fmt: skip
    _number(params, "train.checkpoint_minutes", path, above=0, hi=1440, why=" (and after every epoch anyway)")
    why = " (augmented passes over the test and out-of-fold images, each as long as the plain one)"
    _number(params, "tta.n", path, lo=0, hi=100, integer=True, why=why)
    _number(params, "tta.beta", path, lo=0.0, hi=1.0)
    check_ensemble(params, path)
    why = " (the out-of-fold images with the highest loss the report draws, and as many least confident test images)"
    _number(params, "report.top_losses", path, lo=0, hi=1000, integer=True, why=why)
    why = " (equal-width confidence bins of the reliability diagram)"
    _number(params, "report.calibration_bins", path, lo=2, hi=100, integer=True, why=why)
    why = " (classes with their own report.json columns and confusion rows; above it, macro averages)"
    _number(params, "report.max_classes", path, lo=2, hi=200, integer=True, why=why)
    why = " (the GB of GPU memory a training step may use)"
    _number(params, "profile.budget_gb", path, above=0, hi=10_000, why=why)
    _number(params, "profile.headroom", path, lo=0, hi=0.9, why=" (the fraction of the budget kept free)")
    why = " (the smallest micro-batch the profile tries, and out-of-memory halving stops at: a slice of one step)"
    _number(params, "profile.min_micro_batch", path, lo=1, hi=effective_batch, integer=True, why=why)
    check_kaggle(params, path)
    models = _require(params, "models", path)
    if not isinstance(models, dict) or not models:
        raise PaddyError(f"`models` in {path} is empty: name at least one model (arch, size, ...) to train.")
    for name, cfg in models.items():
        check_model(name, cfg, models, effective_batch, path)
    if params["ensemble"]["weights"] == "params" and not any(cfg["weight"] for cfg in models.values()):
        raise PaddyError(
            f"Every `models.<name>.weight` in {path} is 0 and `ensemble.weights` is params: the ensemble would "
            "average nothing. Give at least one model a weight above 0, or fit them: `ensemble.weights: fit`."
        )


def check_unknown_keys(params, path="params.yaml"):
    """Refuse any key that is not a setting (KNOWN_KEYS), naming the nearest one that is."""

    def walk(node, known, prefix):
        for key, value in node.items():
            if key not in known:
                close = difflib.get_close_matches(str(key), list(known), n=1)
                where = f"`{prefix[:-1]}` holds" if prefix else "its top level holds"
                hint = f"did you mean `{prefix}{close[0]}`?" if close else f"{where} {', '.join(known)}"
                raise PaddyError(
                    f"`{prefix}{key}` in {path} is not a setting paddy knows ({hint}): nothing reads it, so its value "
                    f"would be silently ignored. Fix the name or remove the key."
                )
            if isinstance(known[key], dict) and isinstance(value, dict):
                walk(value, known[key], f"{prefix}{key}.")

    walk(params, KNOWN_KEYS, "")
    models = params.get("models")
    if isinstance(models, dict):
        for name, cfg in models.items():
            if isinstance(cfg, dict):
                walk(cfg, dict.fromkeys(MODEL_KEYS), f"models.{name}.")


def _text(params, dotted, path, empty=True, why=""):
    value = _require(params, dotted, path)
    if not isinstance(value, str) or (not empty and not value):
        raise PaddyError(f"`{dotted}` in {path} is {value!r}; it must be {'a' if empty else 'a non-empty'} text{why}.")
    return value


def check_competition(params, path="params.yaml"):
    """The competition section's own values (`paddy init` writes it); the check stage holds it against the files
    (paddy.data.competition.check_layout)."""
    init = " `paddy init SOURCE` writes this section from the competition's files (docs/competitions.md)."
    table = _text(params, "competition.train_table", path, why=" (the training labels' CSV, or empty)")
    labels_from = _choice(params, "competition.labels_from", path, LABELS_FROM)
    _text(params, "competition.id_column", path, empty=not table, why=" (the train table's column of image ids)")
    column = _require(params, "competition.label_column", path)
    if labels_from in ("column", "one_hot") and not table:
        raise PaddyError(
            f"`competition.labels_from` in {path} is {labels_from}, which reads the labels from the train table, "
            f"but `competition.train_table` is empty. Name the table, or set labels_from to folders or "
            f"file_names.{init}"
        )
    if labels_from == "column" and not (isinstance(column, str) and column):
        raise PaddyError(
            f"`competition.label_column` in {path} is {column!r}; with `labels_from: column` it must name the train "
            f"table's column of labels.{init}"
        )
    if labels_from == "one_hot" and not (
        isinstance(column, list) and len(column) >= 2 and all(isinstance(c, str) and c for c in column)
    ):
        raise PaddyError(
            f"`competition.label_column` in {path} is {column!r}; with `labels_from: one_hot` it must list the train "
            f"table's 0/1 columns, one per class (at least two).{init}"
        )
    train_images = _text(params, "competition.train_images", path, empty=False)
    test_images = _text(params, "competition.test_images", path, empty=False)
    examples = {
        "train_images": "with {id} where an image's id goes and {label} for a class folder, e.g. "
        "train_images/{label}/{id} or train/{id}.jpg",
        "test_images": "with {id} where a test image's id goes, e.g. test_images/{id} or test/{id}.jpg",
    }
    for key, template in (("train_images", train_images), ("test_images", test_images)):
        fields = set(re.findall(r"{([^}]*)}", template))
        allowed = {"id", "label"} if key == "train_images" else {"id"}
        if "id" not in fields or not fields <= allowed or template.startswith("/") or ".." in template.split("/"):
            raise PaddyError(
                f"`competition.{key}` in {path} is {template!r}; it must be a path inside the competition folder "
                f"{examples[key]}.{init}"
            )
    if labels_from == "folders" and "{label}" not in train_images:
        raise PaddyError(
            f"`competition.train_images` in {path} is {train_images!r}, which names no class folder, but "
            f"`competition.labels_from` is folders: give the folder as {{label}}, e.g. train/{{label}}/{{id}}.{init}"
        )
    if labels_from == "file_names" and not train_images.endswith("{id}"):
        raise PaddyError(
            f"`competition.train_images` in {path} is {train_images!r}; with `labels_from: file_names` the file "
            f"name is the id (e.g. train/{{id}}, ids like cat.0.jpg).{init}"
        )
    _text(params, "competition.sample_submission", path, empty=False)
    form = _choice(params, "competition.form", path, FORMS)
    positive = _text(params, "competition.positive", path)
    if form == "probability" and not positive:
        raise PaddyError(
            f"`competition.positive` in {path} is empty, but `competition.form` is probability: name the class whose "
            f"probability the submission sends (e.g. dog, or 1).{init}"
        )
    _choice(params, "competition.metric", path, METRICS)


def check_ensemble(params, path="params.yaml"):
    weights = _require(params, "ensemble.weights", path)
    if weights not in ENSEMBLE_WEIGHTS:
        raise PaddyError(
            f"`ensemble.weights` in {path} is {weights!r}; it must be params (each model's `models.<name>.weight`) or "
            "fit (non-negative weights summing to 1, fitted to the out-of-fold log loss), e.g. "
            "`dvc exp run -S ensemble.weights=fit`."
        )
    why = " (folds of the fitted weights' cross-validation)"
    _number(params, "ensemble.cv_folds", path, lo=2, hi=100, integer=True, why=why)


def check_kaggle(params, path="params.yaml"):
    kernel = _require(params, "kaggle.kernel", path)
    if not (isinstance(kernel, str) and re.fullmatch(r"[a-z0-9](?:[a-z0-9-]{3,48})[a-z0-9]", kernel)):
        raise PaddyError(
            f"`kaggle.kernel` in {path} is {kernel!r}; it must be a kernel slug: 5 to 50 lowercase letters, digits and "
            "hyphens, not starting or ending with a hyphen (e.g. paddy-train), the name Kaggle's address shows."
        )
    _choice(params, "kaggle.accelerator", path, tuple(ACCELERATORS))
    _bool(params, "kaggle.keep_weights", path)


def check_model(name, cfg, models, effective_batch, path="params.yaml"):
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
        if max(as_hw(cfg[key])) > MAX_SIDE:
            raise PaddyError(
                f"`models.{name}.{key}` in {path} is {cfg[key]!r}; a side may be at most {MAX_SIDE} pixels (one such "
                "image is 50 MB as the item cache holds it, and no model here was built for it)."
            )
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
    if not (isinstance(weight, (int, float)) and not isinstance(weight, bool) and 0 <= weight < math.inf):
        raise PaddyError(f"`models.{name}.weight` in {path} is {weight!r}; it must be a number >= 0.")
    if not isinstance(cfg["pretrained"], (bool, str)) or cfg["pretrained"] == "":
        raise PaddyError(
            f"`models.{name}.pretrained` in {path} is {cfg['pretrained']!r}; it must be true (timm's weights), false "
            "(random initialisation) or the path of a weights file."
        )
    targets = cfg["targets"]
    if not (isinstance(targets, list) and targets and targets[0] == "label" and len(set(targets)) == len(targets)
            and all(isinstance(t, str) and t for t in targets)):  # fmt: skip
        raise PaddyError(
            f"`models.{name}.targets` in {path} is {targets!r}; it must be [label] (the competition's label), or "
            "label then other columns of the train table, each once (e.g. [label, variety], the seed's multi-target "
            "model: one output per label and per variety, the sum of both losses)."
        )
    if cfg["head"] not in HEADS:
        raise PaddyError(
            f"`models.{name}.head` in {path} is {cfg['head']!r}; it must be fastai (fastai's vision_learner head: "
            "concat pooling, BatchNorm, dropout, a hidden layer of 512) or timm (the architecture's own classifier)."
        )


def parse_settings(params, path="params.yaml"):
    """The raw mapping of params.yaml -> schema.Settings, after check_params has checked every value."""
    check_params(params, path)
    train = dict(params["train"], aug=schema.AugmentSettings(**params["train"]["aug"]))
    data = dict(params["data"], synthetic=schema.SyntheticSettings(**params["data"]["synthetic"]))
    return schema.Settings(
        seed=params["seed"],
        data=schema.DataSettings(**data),
        competition=schema.CompetitionSettings.of(params["competition"]),
        prepare=schema.PrepareSettings(**params["prepare"]),
        cv=schema.CVSettings(**params["cv"]),
        train=schema.TrainSettings(**train),
        tta=schema.TTASettings(**params["tta"]),
        ensemble=schema.EnsembleSettings(**params["ensemble"]),
        report=schema.ReportSettings(**params["report"]),
        profile=schema.ProfileSettings(**params["profile"]),
        kaggle=schema.KaggleSettings(**params["kaggle"]),
        models={name: _model(name, cfg) for name, cfg in params["models"].items()},
    )


def _model(name, cfg):
    sizes = {key: as_hw(cfg[key]) for key in ("item_size", "size")}
    return schema.ModelSettings(name=name, **dict(cfg, targets=tuple(cfg["targets"]), **sizes))
