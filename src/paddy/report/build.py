"""The report stage's one call: the models' out-of-fold and test probabilities, mixed with the weights the ensemble
stage chose (metrics/ensemble.json) by the ensemble's own weighted_mean, at its temperature (a log-loss
competition's), into the report's metrics, tables and pictures. It reads the probability tables and only the images
it draws."""

import json
import shutil
import textwrap
from pathlib import Path

import numpy as np
import pandas as pd

from paddy.data.prepare import read_index, read_labels
from paddy.errors import PaddyError
from paddy.files import replace_dir, write_csv, write_json
from paddy.metrics import Metric, format_score
from paddy.predict.ensemble import read_predictions, temper, weighted_mean
from paddy.report import pictures, scores

ENSEMBLE = "ensemble"
TEXT_WIDTH = 38  # characters of a cell's line under an image: the cell's width in the monospace font


def read_weights(ensemble_json):
    """(the weights the submission used, its temperature): metrics/ensemble.json's `weights` ({model: weight}) and
    `temperature.value` (1 where there is none: a competition not scored by log loss)."""
    path = Path(ensemble_json)
    if not path.exists():
        raise PaddyError(f"{path} is missing: the report reads the weights the ensemble chose there. Run `dvc repro`.")
    figures = json.loads(path.read_text())
    weights = figures.get("weights")
    if not isinstance(weights, dict) or not weights:
        raise PaddyError(f"{path} has no `weights` of the models: rerun the ensemble with `dvc repro -f ensemble`.")
    return weights, float((figures.get("temperature") or {}).get("value", 1.0))


def out_of_fold(preds_dir, weights, labels, truth, temperature=1.0):
    """(ids, y, {source: probabilities [row, class]}) on the out-of-fold rows every model predicted that have a
    label, the ensemble's first: its weighted mean at `temperature`, what metrics/ensemble.json's oof_score scores."""
    frames = {name: read_predictions(preds_dir, name, "oof") for name in weights}
    mean = weighted_mean(frames, weights, labels).merge(truth, on="image_id")
    if mean.empty:
        raise PaddyError(f"No out-of-fold row in {preds_dir} has a label in the prepared index: nothing to report on.")
    ids = mean["image_id"].to_numpy()
    probs = {ENSEMBLE: temper(mean[labels].to_numpy(float), temperature)}
    probs |= {name: df.set_index("image_id").loc[ids, labels].to_numpy(float) for name, df in frames.items()}
    return ids, pd.Index(labels).get_indexer(mean["label"]), probs


def class_metrics(y, probs, labels):
    """metrics/report.json: per-class precision, recall and F1 per source (the ensemble first), each class's
    out-of-fold rows (the same rows for every model), each source's expected calibration error; a `note` names
    classes without rows, whose recall and F1 are left out."""
    out = {"recall": {}, "precision": {}, "f1": {}}
    for name, p in probs.items():
        figures = scores.per_class(scores.confusion_counts(y, p.argmax(1), len(labels)), labels)
        for key in out:
            out[key][name] = figures[key]
        out["support"] = figures["support"]
    empty = [label for label, n in out["support"].items() if n == 0]
    if empty:
        out["note"] = (
            f"no out-of-fold rows of {', '.join(empty)}: recall and F1 undefined, left out (a bigger validation set or "
            "cv.scheme kfold gives every class rows)"
        )
    return out


def top_loss_rows(ids, y, probs, labels, n):
    """The table of the n out-of-fold images with the highest loss under the ensemble, highest first."""
    ens = probs[ENSEMBLE]
    loss = scores.losses(ens, y)
    rows = []
    for rank, i in enumerate(scores.top_losses(loss, ids, n), 1):
        predicted = ens[i].argmax()
        rows.append(
            {
                "rank": rank,
                "image_id": ids[i],
                "actual": labels[y[i]],
                "predicted": labels[predicted],
                "p_predicted": float(ens[i, predicted]),
                "p_actual": float(ens[i, y[i]]),
                "loss": float(loss[i]),
                "right": " ".join(m for m in probs if m != ENSEMBLE and probs[m][i].argmax() == y[i]),
                "wrong": " ".join(m for m in probs if m != ENSEMBLE and probs[m][i].argmax() != y[i]),
            }
        )
    columns = ["rank", "image_id", "actual", "predicted", "p_predicted", "p_actual", "loss", "right", "wrong"]
    return pd.DataFrame(rows, columns=columns)


def least_confident_rows(test_probs, labels, test_truth, n):
    """The n test images whose ensemble top probability is the lowest (where a pseudo-label is least safe), with
    the runner-up and, on a generated competition, the true label."""
    p = test_probs[labels].to_numpy(float)
    ids = test_probs["image_id"].to_numpy()
    truth = dict(zip(test_truth["image_id"], test_truth["label"]))
    rows = []
    for rank, i in enumerate(scores.least_confident(p, ids, n), 1):
        first, second = np.argsort(-p[i], kind="stable")[:2]
        rows.append(
            {
                "rank": rank,
                "image_id": ids[i],
                "predicted": labels[first],
                "p_predicted": float(p[i, first]),
                "runner_up": labels[second],
                "p_runner_up": float(p[i, second]),
                "actual": truth.get(ids[i], ""),
            }
        )
    columns = ["rank", "image_id", "predicted", "p_predicted", "runner_up", "p_runner_up", "actual"]
    return pd.DataFrame(rows, columns=columns)


def _image_path(prepared_dir, index, image_id, split):
    rows = index.loc[(index["image_id"] == image_id) & (index["split"] == split), "path"]
    path = Path(prepared_dir) / rows.iloc[0] if len(rows) else None
    if path is None or not path.exists():
        raise PaddyError(
            f"The {split} image {image_id} has predictions but no prepared file ({path or 'not in the index'}): "
            "data/prepared changed since the models predicted. Run `dvc repro` to bring them together again."
        )
    return path


def _models_line(kind, names):
    return textwrap.wrap(f"{kind}: {', '.join(names.split()) or '-'}", TEXT_WIDTH)


def draw_top_losses(table, prepared_dir, index, n_rows, plots_dir):
    """plots_dir/top_losses.png (the grid, like fastai's plot_top_losses) and plots_dir/top_losses/<rank>_<image>.png
    (one picture each, for `dvc plots show` to list)."""
    grid, folder = Path(plots_dir) / "top_losses.png", Path(plots_dir) / "top_losses"
    staging = folder.with_name(f".{folder.name}.new")  # swapped in whole once every picture is drawn
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    cells = []
    for r in table.itertuples():
        image = pictures.thumbnail(_image_path(prepared_dir, index, r.image_id, "train"))
        lines = [
            f"#{r.rank} {r.image_id}",
            f"actual:    {r.actual}",
            f"predicted: {r.predicted}",
            f"p {r.p_predicted:.2f}, p(actual) {r.p_actual:.2f}",
            f"loss {r.loss:.2f}",
            *_models_line("right", r.right),
            *_models_line("wrong", r.wrong),
        ]
        right = r.actual == r.predicted
        pictures.image_card(image, lines, right, staging / f"{r.rank:02d}_{Path(r.image_id).stem}.png")
        cells.append((image, lines, right))
    if cells:
        title = (
            f"Top losses: the {len(cells)} out-of-fold images (of {n_rows}) with the highest loss under the "
            "ensemble, -log p(actual). Red: the ensemble is wrong. Right/wrong: each model on its own."
        )
        pictures.image_grid(cells, grid, textwrap.fill(title, 130))
    else:  # the folder says so too: `dvc plots show` warns about an empty one
        for path in (grid, staging / "none.png"):
            pictures.statement("report.top_losses is 0: no out-of-fold image drawn.", path)
    replace_dir(staging, folder)


def draw_least_confident(table, prepared_dir, index, path):
    """The least confident test images: predicted label and probability, the runner-up, the truth where known."""
    cells = []
    for r in table.itertuples():
        image = pictures.thumbnail(_image_path(prepared_dir, index, r.image_id, "test"))
        lines = [
            f"#{r.rank} {r.image_id}",
            f"predicted: {r.predicted}",
            f"next:      {r.runner_up}",
            f"p {r.p_predicted:.2f}, next {r.p_runner_up:.2f}",
        ]
        known = bool(r.actual)
        lines += [f"actual:    {r.actual}"] if known else []
        cells.append((image, lines, (r.actual == r.predicted) if known else None))
    if not cells:
        return pictures.statement("report.top_losses is 0: no test image drawn.", path)
    title = (
        f"The {len(cells)} least confident test images under the ensemble (lowest top probability): where a "
        "pseudo-label would be least safe"
    )
    return pictures.image_grid(cells, path, textwrap.fill(title, 130))


def _matrix(matrix, labels):
    return pd.DataFrame(matrix, columns=labels).assign(actual=labels)[["actual", *labels]]


def write_report(prepared_dir, preds_dir, ensemble_json, truth_csv, metrics_json, tables_dir, plots_dir, report, comp):
    """The report (report: ReportSettings; comp: the CompetitionSettings, whose metric it scores): pictures in
    plots_dir, tables in tables_dir, then metrics_json last, so a picture that fails to draw leaves the metrics as
    they were. Returns the metrics."""
    labels, index = read_labels(prepared_dir), read_index(prepared_dir)
    weights, temperature = read_weights(ensemble_json)
    train = index[index["split"] == "train"][["image_id", "label"]]
    ids, y, probs = out_of_fold(preds_dir, weights, labels, train, temperature)
    calibration = {name: scores.calibration(p, y, report.calibration_bins) for name, p in probs.items()}
    metrics = class_metrics(y, probs, labels)  # recall first: `dvc exp show` lists the columns in the file's order
    metrics["ece"] = {name: ece for name, (_, ece) in calibration.items()}
    metric = Metric.of(comp, labels)
    metrics["metric"] = metric.name
    metrics["oof_score"] = {name: metric(y, p) for name, p in probs.items()}
    if "note" in metrics:
        print(f"note: {metrics['note']}")
    counts = scores.confusion_counts(y, probs[ENSEMBLE].argmax(1), len(labels))
    pairs = scores.most_confused(counts, labels)
    top = top_loss_rows(ids, y, probs, labels, report.top_losses)
    test = weighted_mean({name: read_predictions(preds_dir, name, "test") for name in weights}, weights, labels)
    test[labels] = temper(test[labels].to_numpy(float), temperature)
    unsure = least_confident_rows(test, labels, pd.read_csv(truth_csv, dtype=str), report.top_losses)

    plots, tables = Path(plots_dir), Path(tables_dir)
    accuracy = np.trace(counts) / len(y)
    named = "" if metric.name == "accuracy" else f", {metric.name} {format_score(metrics['oof_score'][ENSEMBLE])}"
    title = f"ensemble, out of fold: {accuracy:.4f} accuracy{named} over {len(y)} images; each row sums to 1"
    pictures.confusion_normalised(counts, labels, plots / "confusion_normalised.png", title)
    shown = 20
    title = f"Most confused pairs (out of fold, ensemble): {len(pairs)} pairs" + (
        f", the {shown} most frequent" if len(pairs) > shown else ""
    )
    pictures.most_confused(pairs.head(shown), plots / "most_confused.png", title)
    title = (
        f"Reliability, out of fold: ensemble ECE {metrics['ece'][ENSEMBLE]:.4f} over {len(y)} images, "
        f"{report.calibration_bins} bins"
    )
    pictures.reliability({name: table for name, (table, _) in calibration.items()}, plots / "reliability.png", title)
    draw_top_losses(top, prepared_dir, index, len(y), plots)
    draw_least_confident(unsure, prepared_dir, index, plots / "least_confident.png")

    per_class = pd.DataFrame(
        [
            {"source": name, "class": label, **{k: metrics[k][name].get(label) for k in ("precision", "recall", "f1")}}
            | {"support": metrics["support"][label]}
            for name in probs
            for label in labels
        ]
    )
    write_csv(per_class, tables / "per_class.csv")
    write_csv(_matrix(counts, labels), tables / "confusion.csv")
    write_csv(_matrix(scores.row_normalised(counts), labels), tables / "confusion_normalised.csv", float_format="%.4f")
    write_csv(pairs, tables / "most_confused.csv")
    write_csv(top, tables / "top_losses.csv", float_format="%.6f")
    write_csv(unsure, tables / "least_confident.csv", float_format="%.6f")
    calibration_table = pd.concat([t.assign(source=name) for name, (t, _) in calibration.items()])
    write_csv(calibration_table, tables / "calibration.csv", float_format="%.6f")
    write_json(metrics_json, metrics)
    return metrics
