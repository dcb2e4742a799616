"""The report stage's one call: the models' out-of-fold and test probabilities, mixed with the weights the ensemble
stage chose (metrics/ensemble.json) by the ensemble's own mix, at its temperature (a log-loss competition's), into
the report's metrics, tables and pictures. It reads the probability tables (one source's mixture in memory at a
time, kept as per-row figures) and only the images it draws."""

import json
import shutil
import textwrap
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from paddy.data.prepare import read_index, read_labels
from paddy.errors import PaddyError
from paddy.files import replace_dir, write_csv, write_json
from paddy.metrics import Metric, format_score
from paddy.predict.ensemble import aligned, read_choice, temper
from paddy.predict.tables import Stack, common_ids, read_tables
from paddy.report import analysis, pictures

ENSEMBLE = "ensemble"
TEXT_WIDTH = 38  # characters of a cell's line under an image: the cell's width in the monospace font


@dataclass
class Rows:
    """What the report reads of one source's probabilities [row, class], per row: the predicted class, its
    probability, and the true class's."""

    predicted: np.ndarray
    confidence: np.ndarray
    p_true: np.ndarray

    @classmethod
    def of(cls, probs, y):
        predicted = probs.argmax(1)
        rows = np.arange(len(y))
        return cls(predicted, probs[rows, predicted].astype(float), probs[rows, y].astype(float))


def weight_vector(stack, weights):
    """The ensemble's weights (metrics/ensemble.json's, by model name) in the stack's order, summing to 1."""
    w = np.array([float(weights[name]) for name in stack.names])
    return w / w.sum()


def out_of_fold(preds_dir, weights, labels, truth, metric, temperature=1.0):
    """(ids, y, {source: Rows}, {source: its metric}) on the out-of-fold rows every model predicted that have a
    label, the ensemble's first: its mix at `temperature`, what metrics/ensemble.json's oof_score scores. One
    source's [row, class] mixture is in memory at a time."""
    stack, y = aligned(read_tables(preds_dir, list(weights), "oof", labels), truth, labels)
    sources = {ENSEMBLE: (weight_vector(stack, weights), temperature)}
    sources |= {name: (stack.only(m), 1.0) for m, name in enumerate(stack.names)}
    rows, score = {}, {}
    for source, (w, t) in sources.items():
        mix = temper(stack.mix(w), t)
        rows[source], score[source] = Rows.of(mix, y), metric(y, mix)
    return stack.ids, y, rows, score


def class_metrics(y, rows, labels, max_classes):
    """metrics/report.json's per-class part and the per-class table: precision, recall and F1 per source (the
    ensemble first) and each class's out-of-fold rows (the same for every model). A competition of more than
    `max_classes` classes gets the macro averages in report.json instead (a column per class would swamp `dvc exp
    show`); its table keeps every class. A `note` names classes without rows, whose recall and F1 are left out."""
    figures = {name: analysis.per_class(y, r.predicted, labels) for name, r in rows.items()}
    return figure_metrics(figures, labels, max_classes)


# A class (a tag) without out-of-fold rows: why its recall and F1 are missing, and what gives it some
EMPTY_NOTE = {
    "class": "no out-of-fold rows of {}: recall and F1 undefined, left out (a bigger validation set or cv.scheme "
    "kfold gives every class rows)",
    "tag": "no out-of-fold image has {}: recall and F1 undefined, left out (a bigger validation set or cv.scheme "
    "kfold gives every tag images)",
}


def figure_metrics(figures, labels, max_classes, kind="class"):
    """class_metrics of the per-class figures ({source: analysis.per_class's}) of `labels`, classes or (kind tag) a
    multi-label competition's tags: the report.json part and the table, its `kind` column naming them."""
    support = next(iter(figures.values()))["support"]
    table = pd.DataFrame(
        [
            {"source": name, kind: label, **{k: f[k].get(label) for k in ("precision", "recall", "f1")}}
            | {"support": support[label]}
            for name, f in figures.items()
            for label in labels
        ]
    )
    if len(labels) <= max_classes:
        out = {key: {name: f[key] for name, f in figures.items()} for key in ("recall", "precision", "f1")}
        out["support"] = support
    else:
        out = {
            f"{key}_macro": {name: float(np.mean(list(f[key].values()))) for name, f in figures.items()}
            for key in ("recall", "precision", "f1")
        }
        out["classes"] = len(labels)
    empty = [label for label, n in support.items() if n == 0]
    if empty:
        shown = ", ".join(empty[:10]) + (f" and {len(empty) - 10} more" if len(empty) > 10 else "")
        out["note"] = EMPTY_NOTE[kind].format(shown)
    return out, table


def top_loss_rows(ids, y, rows, labels, n):
    """The table of the n out-of-fold images with the highest loss under the ensemble, highest first."""
    ens = rows[ENSEMBLE]
    loss = analysis.losses(ens.p_true)
    models = [m for m in rows if m != ENSEMBLE]
    out = []
    for rank, i in enumerate(analysis.top_losses(loss, ids, n), 1):
        out.append(
            {
                "rank": rank,
                "image_id": ids[i],
                "actual": labels[y[i]],
                "predicted": labels[ens.predicted[i]],
                "p_predicted": float(ens.confidence[i]),
                "p_actual": float(ens.p_true[i]),
                "loss": float(loss[i]),
                "right": " ".join(m for m in models if rows[m].predicted[i] == y[i]),
                "wrong": " ".join(m for m in models if rows[m].predicted[i] != y[i]),
            }
        )
    columns = ["rank", "image_id", "actual", "predicted", "p_predicted", "p_actual", "loss", "right", "wrong"]
    return pd.DataFrame(out, columns=columns)


def least_confident_rows(ids, test_probs, labels, test_truth, n):
    """The n test images whose ensemble top probability (test_probs [row, class], rows `ids`) is the lowest (where a
    pseudo-label is least safe), with the runner-up and, on a generated competition, the true label."""
    truth = dict(zip(test_truth["image_id"], test_truth["label"]))
    rows = []
    for rank, i in enumerate(analysis.least_confident(test_probs.max(1), ids, n), 1):
        p = test_probs[i].astype(float)
        first, second = np.argsort(-p, kind="stable")[:2]
        rows.append(
            {
                "rank": rank,
                "image_id": ids[i],
                "predicted": labels[first],
                "p_predicted": float(p[first]),
                "runner_up": labels[second],
                "p_runner_up": float(p[second]),
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
    cards = []
    for r in table.itertuples():
        lines = [
            f"#{r.rank} {r.image_id}",
            f"actual:    {r.actual}",
            f"predicted: {r.predicted}",
            f"p {r.p_predicted:.2f}, p(actual) {r.p_actual:.2f}",
            f"loss {r.loss:.2f}",
            *_models_line("right", r.right),
            *_models_line("wrong", r.wrong),
        ]
        cards.append((r.rank, r.image_id, lines, r.actual == r.predicted))
    title = (
        f"Top losses: the {len(cards)} out-of-fold images (of {n_rows}) with the highest loss under the "
        "ensemble, -log p(actual). Red: the ensemble is wrong. Right/wrong: each model on its own."
    )
    draw_cards(cards, (prepared_dir, index), plots_dir, title)


def draw_cards(cards, prepared, plots_dir, title):
    """The top losses' grid, plots_dir/top_losses.png, and its cells one by one,
    plots_dir/top_losses/<rank>_<image>.png; cards: (rank, image_id, text lines, right) of training images in
    prepared = (prepared_dir, index)."""
    grid, folder = Path(plots_dir) / "top_losses.png", Path(plots_dir) / "top_losses"
    staging = folder.with_name(f".{folder.name}.new")  # swapped in whole once every picture is drawn
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    cells = []
    for rank, image_id, lines, right in cards:
        image = pictures.thumbnail(_image_path(*prepared, image_id, "train"))
        pictures.image_card(image, lines, right, staging / f"{rank:02d}_{Path(image_id).stem}.png")
        cells.append((image, lines, right))
    if cells:
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


def write_report(inputs, outputs, report, comp):
    """The report (report: ReportSettings; comp: the CompetitionSettings, whose metric it scores) of inputs =
    (prepared_dir, preds_dir, ensemble_json, truth_csv) into outputs = (metrics_json, tables_dir, plots_dir):
    pictures in plots_dir, tables in tables_dir, then metrics_json last, so a picture that fails to draw leaves the
    metrics as they were. Returns the metrics. A multi-label competition's report is paddy.report.tags's: the same
    files, per tag."""
    if comp.multi_label:
        # imported here, not at the top: the tags report builds on this module's helpers
        from paddy.report.tags import write_tags_report

        return write_tags_report(inputs, outputs, report, comp)
    (prepared_dir, preds_dir, ensemble_json, truth_csv), (metrics_json, tables_dir, plots_dir) = inputs, outputs
    labels, index = read_labels(prepared_dir), read_index(prepared_dir)
    weights, temperature = read_choice(ensemble_json)
    train = index[index["split"] == "train"][["image_id", "label"]]
    metric = Metric.of(comp, labels)
    ids, y, rows, oof_score = out_of_fold(preds_dir, weights, labels, train, metric, temperature)
    calibration = {
        name: analysis.calibration(r.confidence, r.predicted == y, report.calibration_bins) for name, r in rows.items()
    }
    # recall first: `dvc exp show` lists the columns in the file's order
    metrics, per_class = class_metrics(y, rows, labels, report.max_classes)
    metrics["ece"] = {name: ece for name, (_, ece) in calibration.items()}
    metrics["metric"] = metric.name
    metrics["oof_score"] = oof_score
    if "note" in metrics:
        print(f"note: {metrics['note']}")
    predicted = rows[ENSEMBLE].predicted
    pairs = analysis.most_confused(y, predicted, labels)
    shown = labels if len(labels) <= report.max_classes else analysis.most_involved(pairs, labels, report.max_classes)
    at = pd.Index(labels).get_indexer(shown)
    counts = analysis.confusion_counts(y, predicted, at)
    totals = np.bincount(y, minlength=len(labels))[at]
    top = top_loss_rows(ids, y, rows, labels, report.top_losses)
    test_tables = read_tables(preds_dir, list(weights), "test", labels)
    test = Stack(test_tables, common_ids(test_tables))
    test_probs = temper(test.mix(weight_vector(test, weights)), temperature)
    truth = pd.read_csv(truth_csv, dtype=str, keep_default_na=False)
    unsure = least_confident_rows(test.ids, test_probs, labels, truth, report.top_losses)
    del test_probs

    plots, tables = Path(plots_dir), Path(tables_dir)
    accuracy = float((predicted == y).mean())
    named = "" if metric.name == "accuracy" else f", {metric.name} {format_score(metrics['oof_score'][ENSEMBLE])}"
    title = f"ensemble, out of fold: {accuracy:.4f} accuracy{named} over {len(y)} images; each row sums to 1"
    if len(shown) < len(labels):
        title = (
            f"ensemble, out of fold: {accuracy:.4f} accuracy{named} over {len(y)} images of {len(labels)} classes: "
            f"the {len(shown)} classes most involved in confusions (a row's predictions outside them not drawn)"
        )
    pictures.confusion_normalised(counts, totals, shown, plots / "confusion_normalised.png", textwrap.fill(title, 110))
    most = 20
    title = f"Most confused pairs (out of fold, ensemble): {len(pairs)} pairs" + (
        f", the {most} most frequent" if len(pairs) > most else ""
    )
    pictures.most_confused(pairs.head(most), plots / "most_confused.png", title)
    title = (
        f"Reliability, out of fold: ensemble ECE {metrics['ece'][ENSEMBLE]:.4f} over {len(y)} images, "
        f"{report.calibration_bins} bins"
    )
    pictures.reliability({name: table for name, (table, _) in calibration.items()}, plots / "reliability.png", title)
    draw_top_losses(top, prepared_dir, index, len(y), plots)
    draw_least_confident(unsure, prepared_dir, index, plots / "least_confident.png")

    write_csv(per_class, tables / "per_class.csv")
    write_csv(_matrix(counts, shown), tables / "confusion.csv")
    share = analysis.row_normalised(counts, totals)
    write_csv(_matrix(share, shown), tables / "confusion_normalised.csv", float_format="%.4f")
    write_csv(pairs, tables / "most_confused.csv")
    write_csv(top, tables / "top_losses.csv", float_format="%.6f")
    write_csv(unsure, tables / "least_confident.csv", float_format="%.6f")
    calibration_table = pd.concat([t.assign(source=name) for name, (t, _) in calibration.items()])
    write_csv(calibration_table, tables / "calibration.csv", float_format="%.6f")
    write_json(metrics_json, metrics)
    return metrics


def pseudo_report(pseudo_json, tables_dir, max_classes):
    """The pseudo stage's labels (metrics/pseudo.json) in the report, when it was on: tables_dir/pseudo.csv (each
    class's pseudo-labels kept and, on a generated competition, wrong) and report.json's pseudo_kept and
    pseudo_wrong (totals, and per class up to `max_classes` classes, as the other columns), or None when it was
    off. Prints the table."""
    path = Path(pseudo_json)
    figures = json.loads(path.read_text()) if path.is_file() else {}
    if not figures.get("enabled"):
        return None
    kept, wrong = figures["kept"], figures.get("wrong")
    classes = [c for c in kept if c != "total"]
    table = pd.DataFrame({"class": classes, "kept": [kept[c] for c in classes]})
    if wrong is not None:
        table["wrong"] = [wrong[c] for c in classes]
    write_csv(table, Path(tables_dir) / "pseudo.csv")
    print(f"pseudo-labels per class (wrong: against the generated truth):\n{table.to_string(index=False)}")
    few = len(classes) <= max_classes
    metrics = {"pseudo_kept": kept if few else {"total": kept["total"]}}
    if wrong is not None:
        metrics["pseudo_wrong"] = wrong if few else {"total": wrong["total"]}
    return metrics
