"""params.yaml, read and checked once through the declarations (paddy.settings.schema) into the typed settings, so a
bad setting fails before any data is touched or model trained, in one paragraph that names the key and params.yaml.

Each value is checked by its own declaration (paddy.settings.checks); the checks here are those of settings taken
together (a competition's label columns and paths, batch sizes that must divide, zoom bounds)."""

import dataclasses
import difflib

from paddy.errors import PaddyError
from paddy.settings import schema
from paddy.settings.checks import as_hw
from paddy.settings.schema import INIT, MODEL_KEYS, settings_of

__all__ = ["MODEL_KEYS", "as_hw", "known_keys", "parse_settings"]


def parse_settings(params, path="params.yaml"):
    """The raw mapping of params.yaml -> schema.Settings, every value checked against its declaration."""
    if not isinstance(params, dict):
        raise PaddyError(f"{path} must hold a mapping of settings; restore it from git.")
    check_unknown_keys(params, path)
    settings = _section(schema.Settings, params, "", path)
    models = _require(params, "models", path)
    if not isinstance(models, dict) or not models:
        raise PaddyError(f"`models` in {path} is empty: name at least one model (arch, size, ...) to train.")
    settings = dataclasses.replace(
        settings, models={name: _model(name, cfg, models, path) for name, cfg in models.items()}
    )
    check_together(settings, params, path)
    return settings


def known_keys(cls=schema.Settings):
    """Every key a section may hold: a section is a dict of its keys, a setting None; `models` holds user-named
    models, each with exactly MODEL_KEYS."""
    known = {
        name: known_keys(f.type) if dataclasses.is_dataclass(f.type) else None for name, f in settings_of(cls).items()
    }
    return known | ({"models": None} if cls is schema.Settings else {})


def _require(params, dotted, path):
    node = params
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            raise PaddyError(f"{path} has no `{dotted}`. Every setting needs a value there; restore it from git.")
        node = node[part]
    return node


def _section(cls, params, prefix, path):
    """Section `cls` of the raw mapping, each setting checked (and converted) by its declaration's check."""
    values = {}
    for name, f in settings_of(cls).items():
        dotted = prefix + name
        if dataclasses.is_dataclass(f.type):
            values[name] = _section(f.type, params, f"{dotted}.", path)
        else:
            values[name] = f.metadata["check"](_require(params, dotted, path), dotted, path)
    return cls(**values)


def check_unknown_keys(params, path="params.yaml"):
    """Refuse any key that is not a setting, naming the nearest one that is: nothing reads any other key, so a typo
    (`train.epoch: 3` beside `epochs`) would be silently ignored."""

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

    walk(params, known_keys(), "")
    models = params.get("models")
    if isinstance(models, dict):
        for name, cfg in models.items():
            if isinstance(cfg, dict):
                walk(cfg, dict.fromkeys(MODEL_KEYS), f"models.{name}.")


def _model(name, cfg, models, path):
    where = f"`models.{name}` in {path}"
    if not isinstance(cfg, dict):
        raise PaddyError(f"{where} must be a mapping with {', '.join(MODEL_KEYS)}.")
    if "arch" not in cfg:
        others = [m for m in models if m != name and isinstance(models[m], dict) and "arch" in models[m]]
        close = difflib.get_close_matches(name, others, n=1)
        hint = f" Did you mean `models.{close[0]}`?" if close else f" Models defined: {', '.join(others) or 'none'}."
        raise PaddyError(
            f"{where} sets {', '.join(sorted(cfg)) or 'nothing'} but names no arch: there is no model `{name}` to "
            f"weight or train.{hint} To add a model give all of {', '.join(MODEL_KEYS)}, "
            f"e.g. -S '+models.{name}={{arch: ..., ...}}'."
        )
    missing = [k for k in MODEL_KEYS if k not in cfg]
    if missing:
        raise PaddyError(f"{where} lacks {', '.join(missing)}; every model needs {', '.join(MODEL_KEYS)}.")
    fields = settings_of(schema.ModelSettings)
    return schema.ModelSettings(
        name=name, **{k: f.metadata["check"](cfg[k], f"models.{name}.{k}", path) for k, f in fields.items()}
    )


def tighter(section, name, **bounds):
    """A setting's declared check with bounds that other settings set (paddy.settings.checks: its fields)."""
    return dataclasses.replace(settings_of(section)[name].metadata["check"], **bounds)


def check_together(settings, params, path="params.yaml"):
    """What no single setting's check can see: settings that bound each other."""
    if settings.cv.scheme == "kfold":  # k folds need two at least
        tighter(schema.CVSettings, "n_splits", lo=2)(settings.cv.n_splits, "cv.n_splits", path)
    if settings.train.aug.max_zoom < settings.train.aug.min_zoom:
        raise PaddyError(f"`train.aug.max_zoom` in {path} is below `train.aug.min_zoom`: give min_zoom <= max_zoom.")
    progressive = settings.train.progressive
    if len(progressive.epochs) != len(progressive.scales):
        raise PaddyError(
            f"`train.progressive.epochs` in {path} is {list(progressive.epochs)}, but `train.progressive.scales` is "
            f"{list(progressive.scales)}: give one number of epochs per scale (the full-size phase trains "
            "train.epochs), e.g. scales [0.5] with epochs [5]."
        )
    effective_batch = settings.train.effective_batch
    check = tighter(schema.ProfileSettings, "min_micro_batch", hi=effective_batch)  # a slice of one step
    check(settings.profile.min_micro_batch, "profile.min_micro_batch", path)
    check_competition(params["competition"], path)
    _check_mixing(settings, path)
    for name, model in settings.models.items():
        if settings.competition.multi_label and list(model.targets) != ["label"]:
            raise PaddyError(
                f"`models.{name}.targets` in {path} is {list(model.targets)}, but the competition is multi-label "
                "(`competition.form: tags`): its model predicts the set of tags alone. Set targets to [label]."
            )
        if model.micro_batch != "auto" and model.micro_batch > effective_batch:
            raise PaddyError(
                f"`models.{name}.micro_batch` ({model.micro_batch}) is larger than `train.effective_batch` "
                f"({effective_batch}) in {path}: a micro-batch is a slice of one optimizer step. Lower micro_batch, "
                "or raise effective_batch."
            )
    if settings.pseudo.enabled:
        check_pseudo(settings, path)
    check_recipe(settings.train, path)
    if settings.ensemble.weights == "params" and not any(m.weight for m in settings.models.values()):
        raise PaddyError(
            f"Every `models.<name>.weight` in {path} is 0 and `ensemble.weights` is params: the ensemble would "
            "average nothing. Give at least one model a weight above 0, or fit them: `ensemble.weights: fit`."
        )


def _check_mixing(settings, path):
    """Mixup, CutMix and label smoothing make softmax targets: a multi-label model has none to mix."""
    train = settings.train
    mixing = [(k, getattr(train, k)) for k in ("mixup", "cutmix", "label_smoothing") if getattr(train, k) > 0]
    if settings.competition.multi_label and mixing:
        key, value = mixing[0]
        raise PaddyError(
            f"`train.{key}` in {path} is {value}, but the competition is multi-label (`competition.form: tags`): "
            "mixup, CutMix and label smoothing mix and smooth one class per image into softmax targets, and a model "
            "of tags trains a sigmoid per tag with binary cross-entropy instead. Set train.mixup, train.cutmix and "
            "train.label_smoothing to 0 for this competition (train.ema works with it)."
        )


def check_pseudo(settings, path="params.yaml"):
    """pseudo.enabled: a label per test image, which a single-target model learns from."""
    if settings.competition.multi_label:
        raise PaddyError(
            f"`pseudo.enabled` is true in {path}, but the competition is multi-label (`competition.form: tags`): "
            "pseudo-labels here are one class per test image, not a set of tags. Set pseudo.enabled: false."
        )
    for name, model in settings.models.items():
        if list(model.targets) != ["label"]:
            raise PaddyError(
                f"`pseudo.enabled` is true in {path}, but `models.{name}.targets` is {list(model.targets)}: a "
                "pseudo-labelled test image has a label and nothing else to learn the other targets from. Set "
                "targets: [label] for round 2, or pseudo.enabled: false."
            )


def check_recipe(train, path="params.yaml"):
    """recipe sgdr's cycles must add up to each stage's epochs (train.epochs, and with progressive resizing each of
    train.progressive.epochs); snapshots need its cycles; SWA averages the last epochs."""
    if train.recipe == "sgdr":
        stages = [("train.epochs", train.epochs)]
        stages += [(f"train.progressive.epochs[{i}]", n) for i, n in enumerate(train.progressive.epochs)]
        for key, epochs in stages:
            sums = [train.cycle_len]  # the epochs after 1, 2, ... cycles
            while sums[-1] < epochs:
                sums.append(sums[-1] + train.cycle_len * train.cycle_mult ** len(sums))
            if sums[-1] != epochs:
                fits = ", ".join(map(str, sums[:6]))
                raise PaddyError(
                    f"`{key}` in {path} is {epochs}, but recipe sgdr's cycles (train.cycle_len "
                    f"{train.cycle_len} epochs, each next one train.cycle_mult {train.cycle_mult} times as long) add "
                    f"up to {fits}{', ...' if len(sums) > 6 else ''} epochs, never {epochs}: every cycle must end for "
                    f"its rate to anneal to 0. Set {key} to such a sum (the nearest: "
                    f"{' or '.join(map(str, sums[-2:]))}), or change train.cycle_len / train.cycle_mult."
                )
    elif train.snapshots:
        raise PaddyError(
            f"`train.snapshots` in {path} is true, but `train.recipe` is {train.recipe}: snapshots are the weights "
            "at the end of each of recipe sgdr's cycles, and this recipe has none. Set train.recipe: sgdr, or "
            "train.snapshots: false."
        )
    if train.swa_epochs and train.ema:
        raise PaddyError(
            f"`train.swa_epochs` ({train.swa_epochs}) and `train.ema` (true) are both on in {path}: each averages the "
            "weights into the split's final ones (the ends of the last epochs, or every step's), and only one can be "
            "what is saved. Keep one: train.swa_epochs: 0, or train.ema: false."
        )
    if train.swa_epochs > train.epochs:
        raise PaddyError(
            f"`train.swa_epochs` in {path} is {train.swa_epochs}, more than the {train.epochs} epochs of the last "
            "phase (train.epochs, after the frozen ones) whose ends it averages. Lower train.swa_epochs to at most "
            f"{train.epochs}, or 0 to turn weight averaging off."
        )


def check_competition(section, path="params.yaml"):
    """How the competition section's values fit together (`paddy init` writes it); the check stage holds it against
    the files (paddy.data.competition.check_layout)."""
    table, labels_from, column = section["train_table"], section["labels_from"], section["label_column"]
    train_images = section["train_images"]
    if table:
        tighter(schema.CompetitionSettings, "id_column", empty=False)(
            section["id_column"], "competition.id_column", path
        )
    if labels_from in ("column", "one_hot") and not table:
        raise PaddyError(
            f"`competition.labels_from` in {path} is {labels_from}, which reads the labels from the train table, "
            f"but `competition.train_table` is empty. Name the table, or set labels_from to folders or "
            f"file_names.{INIT}"
        )
    if labels_from == "column" and not (isinstance(column, str) and column):
        raise PaddyError(
            f"`competition.label_column` in {path} is {column!r}; with `labels_from: column` it must name the train "
            f"table's column of labels.{INIT}"
        )
    if labels_from == "one_hot" and not (
        isinstance(column, list) and len(column) >= 2 and all(isinstance(c, str) and c for c in column)
    ):
        raise PaddyError(
            f"`competition.label_column` in {path} is {column!r}; with `labels_from: one_hot` it must list the train "
            f"table's 0/1 columns, one per class (at least two).{INIT}"
        )
    if labels_from == "folders" and "{label}" not in train_images:
        raise PaddyError(
            f"`competition.train_images` in {path} is {train_images!r}, which names no class folder, but "
            f"`competition.labels_from` is folders: give the folder as {{label}}, e.g. train/{{label}}/{{id}}.{INIT}"
        )
    if labels_from == "file_names" and not train_images.endswith("{id}"):
        raise PaddyError(
            f"`competition.train_images` in {path} is {train_images!r}; with `labels_from: file_names` the file "
            f"name is the id (e.g. train/{{id}}, ids like cat.0.jpg).{INIT}"
        )
    check_tags(section["form"], section["metric"], labels_from, train_images, path)
    if section["form"] == "probability" and not section["positive"]:
        raise PaddyError(
            f"`competition.positive` in {path} is empty, but `competition.form` is probability: name the class whose "
            f"probability the submission sends (e.g. dog, or 1).{INIT}"
        )


def check_tags(form, metric, labels_from, train_images, path="params.yaml"):
    """form tags (a multi-label competition) and a mean_f<beta> or micro_f<beta> metric go together, each scoring or
    needing only the other, and its tags come from one column of the train table, as the submission sends them."""
    tags, fbeta = form == "tags", schema.fbeta_of(metric) is not None
    if fbeta and not tags:
        raise PaddyError(
            f"`competition.metric` in {path} is {metric}, an F-beta between tag sets, which "
            f"scores a multi-label competition (`competition.form: tags`: each image's tags sent space-separated), "
            f"but `competition.form` is {form}: set form to tags if the sample submission sends tags, or the metric "
            "to the one Kaggle scores this competition by."
        )
    if tags and not fbeta:
        raise PaddyError(
            f"`competition.form` in {path} is tags (each image's tags sent space-separated), which a mean_f<beta> "
            f"metric scores (the mean over images of F-beta between the true and predicted tags) or a micro_f<beta> "
            f"one (F-beta of the tags pooled), but `competition.metric` is {metric}, which scores one label per "
            "image: set the metric to mean_f2 (Planet's), micro_f1 (iMet 2020's) or another beta, as Kaggle scores "
            "this competition."
        )
    if tags and (labels_from != "column" or "{label}" in train_images):
        raise PaddyError(
            f"`competition.form` in {path} is tags (each image's tags, space-separated), which reads the training "
            f"tags from one column of the train table the same way, but `competition.labels_from` is {labels_from} "
            f"and `competition.train_images` {train_images!r}: set labels_from to column, label_column to that column "
            f"(Planet's tags) and train_images to a path without {{label}} (an image has several tags, not one class "
            f"folder).{INIT}"
        )
