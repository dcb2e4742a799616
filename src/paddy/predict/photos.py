"""Classify new photos with the current experiment's trained models (`paddy predict`).

A photo goes through exactly what a test image goes through in the pipeline: the prepare stage's pre-resize
(paddy.data.prepare.resize_image, longest side `prepare.max_size`, saved as a JPEG), the model's item resize
(paddy.data.items.resize_item at its checkpoint's item size and method), then the tta stage's passes
(paddy.predict.tta.tta_probs with `tta.n`, `tta.beta`, the same seeds, the checkpoint's normalisation and eval
batch), averaged over the model's folds/bags, and the models mixed as the ensemble mixes them (paddy.predict.tables
Stack, with metrics/ensemble.json's `weights` and `temperature`; a multi-label competition's photos are given the
tags whose probability passes the submission's thresholds, tag_table). The plain pass gives a photo the
probabilities the same image gets in the test set, whatever the other photos; the augmented passes draw per batch
position (as the tta stage does), so with `tta.n > 0` they match exactly when the photos come in the test set's
order and otherwise differ by TTA's randomness only (tests/predict/test_predict.py checks both).
"""

import json
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from paddy.data.images import MAX_PIXELS, read_image
from paddy.data.items import resize_item
from paddy.data.listing import IMAGE_SUFFIXES  # what a folder is searched for; a named file is tried anyway
from paddy.data.prepare import resize_image
from paddy.errors import PaddyError
from paddy.predict.ensemble import read_choice, read_thresholds, temper
from paddy.predict.tables import Stack, Table
from paddy.predict.tta import require_finite, split_seed, tta_probs
from paddy.tags import predict_tags
from paddy.training.augment import create_augment
from paddy.training.checkpoints import checkpoint_normalization, load_checkpoint, read_meta
from paddy.training.digests import members
from paddy.training.run import checkpoint_run

MODELS_DIR = Path("data/models")
ENSEMBLE_JSON = Path("metrics/ensemble.json")
# how the tables written by `paddy predict` start (top labels, or a multi-label competition's tags): check_out
# overwrites only such files
HEADERS = (b"path,label_1,prob_1", b"path,tags,probs")


def find_photos(paths):
    """The files named, and the image files under the folders named (recursively, sorted, hidden ones skipped),
    each once, in that order. A path that does not exist is kept: it is reported as unreadable."""
    found = []
    for path in map(Path, paths):
        if path.is_dir():
            found += sorted(
                f
                for f in path.rglob("*")
                if f.suffix.lower() in IMAGE_SUFFIXES
                and f.is_file()
                and not any(part.startswith(".") for part in f.relative_to(path).parts)
            )
        else:
            found.append(path)
    if not found:
        raise PaddyError(
            f"No image found in {', '.join(map(str, paths))}: name image files, or folders holding some "
            f"({', '.join(sorted(IMAGE_SUFFIXES))})."
        )
    return list(dict.fromkeys(found))


def prepare_photos(files, out_dir, max_size, max_pixels=MAX_PIXELS):
    """Pre-resize each photo into out_dir as the prepare stage does; returns ({file: prepared path}, {file: why it
    could not be read}) (missing, empty, not an image, truncated or corrupt, too small, too many pixels)."""
    prepared, errors = {}, {}
    Path(out_dir).mkdir(parents=True, exist_ok=True)
    for i, file in enumerate(files):
        if not file.is_file():
            errors[file] = "not found" if not file.exists() else "not a file"
            continue
        # Read through a link without the photo's suffix: prepare refuses a non-JPEG named .jpg in the competition's
        # folders, but a field photo's name says nothing about its format
        source = Path(out_dir) / f"{i}.photo"
        source.unlink(missing_ok=True)
        source.symlink_to(file.resolve())
        try:
            resize_image(source, Path(out_dir) / f"{i}.jpg", max_size, max_pixels)
            prepared[file] = Path(out_dir) / f"{i}.jpg"
        except ValueError as e:  # paddy.data.images.BadImage among them: too many pixels, truncated, ...
            errors[file] = str(e)
    return prepared, errors


class PhotoBatches:
    """Batches of (uint8 items (B, H, W, 3), None) of prepared photos at an item size, built as they are read (the
    item cache's resize, paddy.data.items), so only one batch is in memory: what tta_probs reads from a loader."""

    def __init__(self, files, item_size, item_method, batch_size):
        self.files, self.size, self.method, self.batch_size = list(files), item_size, item_method, batch_size
        self.dataset = self.files  # its length is the rows' count, as a DataLoader's dataset's

    def __iter__(self):
        for start in range(0, len(self.files), self.batch_size):
            items = [self._item(f) for f in self.files[start : start + self.batch_size]]
            yield torch.from_numpy(np.stack(items)), None

    def _item(self, file):
        return np.asarray(resize_item(read_image(file), self.size, self.method))


def model_probs(run, ckpt_dir, files):
    """One model's TTA probabilities for prepared photos, averaged over its folds/bags as the tta stage averages
    the test set's: {target: (photos, classes) array} for each target the model predicts, label first. run: the
    model's checkpoint_run (paddy.training.run): its sizes, classes, eval batch and precision."""
    meta, model = read_meta(ckpt_dir), run.model
    augment = create_augment(model.size, run.train.aug, checkpoint_normalization(meta))
    batches = PhotoBatches(files, model.item_size, model.item_method, run.eval_batch)
    total = None
    for s, split in enumerate(meta["splits"]):
        seed, names, p = split_seed(run.settings.seed, s), members(meta, split), None
        for member in names:  # train.snapshots: each snapshot, then the final weights, averaged as the tta stage does
            net, _ = load_checkpoint(ckpt_dir, member, run.device)
            mp = tta_probs(net, batches, augment, run.settings.tta, run.precision, seed, run.heads, True)
            require_finite((mp,), ckpt_dir, member, run.name)
            p = mp if p is None else p + mp
        p = p if len(names) == 1 else p / len(names)
        total = p if total is None else total + p
    probs = (total / len(meta["splits"])).numpy()
    return dict(zip(model.targets, np.split(probs, np.cumsum(run.sizes)[:-1], axis=1)))


def ensemble_weights(models_dir=MODELS_DIR, ensemble_json=ENSEMBLE_JSON, only=None):
    """{model: weight} of the models the submission mixes (metrics/ensemble.json `weights`), or of `only` among
    them, each with a trained model in models_dir; those weighted 0 are left out (they change nothing)."""
    models_dir, ensemble_json = Path(models_dir), Path(ensemble_json)
    rerun = "Run `dvc repro` (it trains the models of params.yaml and writes both), then predict again."
    if not models_dir.is_dir():
        raise PaddyError(f"{models_dir} does not exist: no model is trained yet. {rerun}")
    weights, _ = read_choice(ensemble_json)
    if only:
        unknown = [name for name in only if name not in weights]
        if unknown:
            raise PaddyError(
                f"--models names {', '.join(unknown)}, not in the ensemble of {ensemble_json}: pick among "
                f"{', '.join(weights)}."
            )
        weights = {name: weights[name] for name in only}
    weights = {name: w for name, w in weights.items() if w > 0}
    if not weights:
        raise PaddyError(
            f"Every model asked for has weight 0 in {ensemble_json} (`weights`): name at least one model that the "
            "ensemble uses with --models, or leave --models out."
        )
    for name in weights:
        if not (models_dir / name / "meta.json").is_file():
            raise PaddyError(f"{models_dir / name} holds no trained model, yet the ensemble uses {name!r}. {rerun}")
        meta = read_meta(models_dir / name)
        stems = [m for s in meta["splits"] for m in members(meta, s)]  # train.snapshots' too
        missing = [m for m in stems if not (models_dir / name / f"{m}.safetensors").is_file()]
        if missing:
            raise PaddyError(f"{models_dir / name} lacks the weights of split(s) {', '.join(missing)}. {rerun}")
    return weights


@dataclass
class Predictions:
    """Every photo found, in order; why the unreadable ones could not be read; the ensemble's probabilities of the
    readable ones (image_id: the photo's path, then one column per class), for the label and, where a model
    predicts them, the other targets (`others`: {target: such a table}, e.g. the variety); each model's own label
    probabilities; of a multi-label competition, the thresholds its tags are given at (tags: (a number or one per
    tag, allow_empty), photo_thresholds), else None."""

    files: list
    errors: dict
    labels: pd.DataFrame
    others: dict
    models: dict
    tags: tuple | None = None


def predict_photos(paths, settings, device, models_dir=MODELS_DIR, ensemble_json=ENSEMBLE_JSON, only=None, top=1):
    """Predictions for the photos at `paths` (files or folders) by the trained models in models_dir, mixed by
    ensemble_json's weights (only: a subset of the models, their weights renormalised). Another target (a variety)
    is the weighted mean of the models that predict it. top: the labels the table will list, checked before any
    model runs."""
    weights = ensemble_weights(models_dir, ensemble_json, only)
    files = find_photos(paths)
    metas = {name: read_meta(Path(models_dir) / name) for name in weights}
    classes = metas[next(iter(weights))]["labels"]
    check_top(top, classes)
    multi = settings.competition.multi_label  # checked before any model runs, as top is
    tags = photo_thresholds(settings, ensemble_json, classes) if multi else None
    targets = list(dict.fromkeys(t for meta in metas.values() for t in meta["targets"]))  # label first
    with tempfile.TemporaryDirectory(prefix="paddy-predict-") as tmp:
        prepared, errors = prepare_photos(files, tmp, settings.prepare.max_size, settings.prepare.max_pixels)
        ok = [f for f in files if f in prepared]
        ids = np.array([str(f) for f in ok], dtype=object)
        frames = {target: {} for target in targets}
        if ok:
            for name in weights:
                ckpt_dir = Path(models_dir) / name
                run = checkpoint_run(settings, ckpt_dir, device)
                probs = model_probs(run, ckpt_dir, [prepared[f] for f in ok])
                for target, p in probs.items():
                    frames[target][name] = p
    mixed = {}
    for target in targets:
        predicting = [name for name, meta in metas.items() if target in meta["targets"]]
        vocab = metas[predicting[0]]["targets"][target]
        mixed[target] = pd.DataFrame(columns=["image_id", *vocab])
        if ok:
            tables = {n: Table(ids, frames[target][n], vocab) for n in predicting}
            # a multi-label competition's tags: sigmoid probabilities, mixed as they are, not rescaled to sum to 1
            stack = Stack(tables, ids, tags=multi and target == targets[0])
            w = np.array([weights[n] for n in predicting])
            mixed[target] = Table(ids, stack.mix(w / w.sum()), vocab).frame()
    labels = mixed.pop(targets[0])
    _, t = read_choice(ensemble_json)
    if ok and t != 1:  # the submission's probabilities: the mix at the temperature fitted out of fold (log loss)
        classes = list(labels.columns[1:])
        labels[classes] = temper(labels[classes].to_numpy(float), t)
    each = {n: Table(ids, p, metas[n]["labels"]).frame() for n, p in frames[targets[0]].items()}
    return Predictions(files, errors, labels, mixed, each, tags)


def photo_thresholds(settings, ensemble_json, classes):
    """(thresholds, allow_empty) a multi-label competition's photos are given tags at: the submission's
    (read_thresholds), or, while the ensemble has fitted none (an ensemble.json without `thresholds`), the `tags`
    settings' fixed threshold."""
    try:
        fitted = "thresholds" in json.loads(Path(ensemble_json).read_text())
    except (OSError, ValueError):
        fitted = False
    if not fitted:
        return settings.tags.threshold, settings.tags.allow_empty
    return read_thresholds(ensemble_json, classes)


def check_top(top, labels):
    if not 1 <= top <= len(labels):
        raise PaddyError(f"--top {top}: the models know {len(labels)} labels, so ask for 1 to {len(labels)}.")


def top_table(pred, top):
    """The CSV's rows, one per photo in order: path, label_1, prob_1, ..., label_<top>, prob_<top>, then each other
    target a model predicts and its probability (variety, variety_prob), and error (why an unreadable photo has no
    prediction, else empty)."""
    labels = list(pred.labels.columns[1:])
    check_top(top, labels)
    columns = ["path"] + [c for k in range(1, top + 1) for c in (f"label_{k}", f"prob_{k}")]
    columns += [c for target in pred.others for c in (target, f"{target}_prob")]
    rows = {str(f): {"path": str(f), "error": pred.errors[f]} for f in pred.files if f in pred.errors}
    p = pred.labels[labels].to_numpy(float)
    order = np.argsort(-p, axis=1, kind="stable")[:, :top]
    for i, image_id in enumerate(pred.labels["image_id"]):
        row = {"path": image_id, "error": ""}
        for k, j in enumerate(order[i], 1):
            row[f"label_{k}"], row[f"prob_{k}"] = labels[j], p[i, j]
        rows[image_id] = row
    for target, table in pred.others.items():
        classes = list(table.columns[1:])
        v = table[classes].to_numpy(float)
        for image_id, j, prob in zip(table["image_id"], v.argmax(1), v.max(1)):
            rows[image_id].update({target: classes[j], f"{target}_prob": prob})
    return pd.DataFrame([rows[str(f)] for f in pred.files], columns=columns + ["error"])


def tag_table(pred):
    """A multi-label competition's CSV rows, one per photo in order: path, its tags (those the submission would
    send: above their thresholds, an image with none given its likeliest unless allow_empty), likeliest first, and
    their probabilities in the same order, space-separated; error (why an unreadable photo has none, else
    empty)."""
    tags = np.asarray(pred.labels.columns[1:])
    p = pred.labels[tags].to_numpy(float)
    predicted = predict_tags(p, *pred.tags)
    rows = {str(f): {"path": str(f), "tags": "", "probs": "", "error": pred.errors[f]} for f in pred.errors}
    for image_id, probs, chosen in zip(pred.labels["image_id"], p, predicted):
        order = [k for k in np.argsort(-probs, kind="stable") if chosen[k]]
        shown = " ".join(f"{probs[k]:.4f}" for k in order)
        rows[image_id] = {"path": image_id, "tags": " ".join(tags[order]), "probs": shown, "error": ""}
    return pd.DataFrame([rows[str(f)] for f in pred.files], columns=["path", "tags", "probs", "error"])


def tag_lines(table):
    """What `paddy predict` prints of tag_table's readable photos: `path: tag (p), tag (p)`, likeliest first."""
    lines = []
    for r in table[table["error"] == ""].itertuples():
        given = ", ".join(f"{t} ({p})" for t, p in zip(r.tags.split(), r.probs.split()))
        lines.append(f"{r.path}: {given or 'no tag'}")
    return lines


def check_out(path):
    """Refuse an output path that would overwrite anything but an earlier `paddy predict` table (submission.csv, a
    stage's output, a photo), before any model runs."""
    path = Path(path)
    if path.is_dir():
        raise PaddyError(f"--out {path} is a folder: name a file for the predictions, such as {path}/predictions.csv.")
    if path.exists():
        with open(path, "rb") as f:
            head = f.read(max(map(len, HEADERS)))
        if not head.startswith(HEADERS):
            raise PaddyError(
                f"--out {path} exists and is not an earlier `paddy predict` table (its first line does not start with "
                f"{' or '.join(h.decode() for h in HEADERS)}): it is left as it is. Choose another --out, or move the "
                "file away first."
            )
