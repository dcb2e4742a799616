"""The report of a multi-label competition (competition.form tags; build.write_report hands it over): what the
single-label report shows per class, per tag, with each tag a yes/no decision at the threshold the submission used
(metrics/ensemble.json's, read_thresholds):

- metrics/report.json: the single-label report's keys, per tag: recall, precision and F1 per source and tag at the
  submission's thresholds, each tag's out-of-fold images (`support`; macro averages beyond report.max_classes),
  the expected calibration error over every (image, tag) pair, the competition's metric per source;
- the top losses: the out-of-fold images with the highest binary cross-entropy, their true and predicted tags;
- in place of the confusion matrix and its pairs: each tag's images found, missed and added (given wrongly);
- calibration per tag: each tag's probability against the share of images that have it;
- the least confident test images: those with a tag's probability nearest its threshold.

The pictures and tables have the single-label report's names (dvc.yaml declares them), each holding its tag
equivalent. Each source's mixture is reduced to these figures as soon as it is mixed."""

import textwrap
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from paddy.data.prepare import read_index, read_labels
from paddy.files import write_csv, write_json
from paddy.metrics import Metric, format_score
from paddy.predict.ensemble import aligned, read_choice, read_thresholds
from paddy.predict.tables import Stack, common_ids, read_tables
from paddy.report import analysis, pictures, tag_analysis
from paddy.report.build import ENSEMBLE, _image_path, _models_line, draw_cards, figure_metrics, weight_vector
from paddy.settings.schema import fbeta_of
from paddy.tags import fbeta_rows, predict_tags, split_tags, tag_strings

PANELS = 23  # tags given a reliability panel of their own beside the pooled one: a 4 x 6 grid at most
MOST = 20  # tags drawn in the missed-and-added picture


@dataclass
class Source:
    """What the report keeps of one source's out-of-fold mixture [row, tag]: per-tag precision, recall and F1 and
    the tag confusion at the submission's thresholds, the calibration sums per tag and bin, the competition's
    metric, and the tags it gives the top-loss rows."""

    figures: dict
    confusion: pd.DataFrame
    calibration: tuple
    score: float
    at_top: np.ndarray


def submitted_metric(comp, labels, ensemble_json):
    """The competition's metric at the thresholds (and allow_empty) the submission used: the tags the report counts
    as predicted are the ones submission.csv sent."""
    thresholds, allow_empty = read_thresholds(ensemble_json, labels)
    return Metric(comp.metric, tuple(labels), comp.positive, thresholds, allow_empty)


def tag_thresholds(metric):
    """The metric's threshold of each tag, one per tag even where one serves them all."""
    return np.broadcast_to(np.asarray(metric.threshold, dtype=np.float64), (len(metric.classes),))


def out_of_fold(stack, y, weights, metric, report):
    """(the top-loss rows' positions, every row's binary cross-entropy under the ensemble, {source: Source}) of the
    out-of-fold Stack against the 0/1 truth y, the ensemble (the weights' mix) first: its losses choose the top
    rows whose tags every model's Source then keeps. One source's mixture is in memory at a time."""
    sources = {ENSEMBLE: weight_vector(stack, weights)} | {name: stack.only(m) for m, name in enumerate(stack.names)}
    out, top, loss = {}, None, None
    for source, w in sources.items():
        mix = stack.mix(w)
        predicted = predict_tags(mix, metric.threshold, metric.allow_empty)
        if top is None:
            loss = tag_analysis.row_losses(y, mix)
            top = analysis.top_losses(loss, stack.ids, report.top_losses)
        out[source] = Source(
            tag_analysis.per_tag(y, predicted, metric.classes),
            tag_analysis.tag_confusion(y, predicted, metric.classes),
            tag_analysis.calibration_sums(mix, y, report.calibration_bins),
            metric(y, mix),
            predicted[top],
        )
    return top, loss, out


def top_loss_rows(ids, y, top, loss, sources, metric):
    """The table of the top-loss rows (positions `top`, highest loss first): true and predicted tags, those missed
    and added, the image's F-beta (the metric's beta) and loss, and which models give exactly the true tags."""
    labels, beta = list(metric.classes), fbeta_of(metric.name)
    truth, predicted = y[top], sources[ENSEMBLE].at_top
    models = [m for m in sources if m != ENSEMBLE]
    rows = []
    for n, (i, t, p, score) in enumerate(zip(top, truth, predicted, fbeta_rows(truth, predicted, beta))):
        right = [m for m in models if (sources[m].at_top[n] == t).all()]
        actual, guessed, missed, added = tag_strings([t, p, t & ~p, p & ~t], labels)
        rows.append(
            {
                "rank": n + 1,
                "image_id": ids[i],
                "actual": actual,
                "predicted": guessed,
                "missed": missed,
                "added": added,
                "fbeta": float(score),
                "loss": float(loss[i]),
                "right": " ".join(right),
                "wrong": " ".join(m for m in models if m not in right),
            }
        )
    columns = ["rank", "image_id", "actual", "predicted", "missed", "added", "fbeta", "loss", "right", "wrong"]
    return pd.DataFrame(rows, columns=columns)


def least_confident_rows(test, weights, metric, test_truth, n):
    """The n test images (of the Stack `test`, mixed by `weights`) with a tag's probability nearest its threshold,
    nearest first: their predicted tags, that tag, its probability and threshold, and on a generated competition
    the true tags and whether the predicted ones are exactly those (`right`; empty where unknown)."""
    probs = test.mix(weight_vector(test, weights))
    thresholds = tag_thresholds(metric)
    nearest, distance = tag_analysis.nearest_decision(probs, thresholds)
    known = dict(zip(test_truth["image_id"], test_truth["label"]))
    rows = []
    for rank, i in enumerate(analysis.least_confident(distance, test.ids, n), 1):
        predicted = predict_tags(probs[i : i + 1], metric.threshold, metric.allow_empty)
        guessed = tag_strings(predicted, metric.classes)[0]
        actual = known.get(test.ids[i])
        k = nearest[i]
        rows.append(
            {
                "rank": rank,
                "image_id": test.ids[i],
                "predicted": guessed,
                "nearest": metric.classes[k],
                "p_nearest": float(probs[i, k]),
                "threshold": float(thresholds[k]),
                "actual": actual or "",
                "right": None if actual is None else set(split_tags(actual)) == set(guessed.split()),
            }
        )
    columns = ["rank", "image_id", "predicted", "nearest", "p_nearest", "threshold", "actual", "right"]
    return pd.DataFrame(rows, columns=columns)


def calibration_of(sums):
    """(the pooled calibration table, its ECE, [(table, ECE)] per tag) of one source's calibration_sums."""
    pooled = tag_analysis.calibration_table(*(s.sum(0) for s in sums))
    return (*pooled, [tag_analysis.calibration_table(*(s[k] for s in sums)) for k in range(len(sums[0]))])


def draw_top_losses(table, prepared, n_rows, plots_dir, metric):
    """The top losses' grid and cards (build.draw_cards) of a multi-label competition: the true, predicted, missed
    and added tags; red: the ensemble's tags are not exactly the true ones."""
    beta = fbeta_of(metric.name)
    cards = []
    for r in table.itertuples():
        lines = [
            f"#{r.rank} {r.image_id}",
            *_models_line("actual", r.actual),
            *_models_line("predicted", r.predicted),
            *_models_line("missed", r.missed),
            *_models_line("added", r.added),
            f"F{beta:g} {r.fbeta:.2f}, loss {r.loss:.3f}",
            *_models_line("right", r.right),
            *_models_line("wrong", r.wrong),
        ]
        cards.append((r.rank, r.image_id, lines, r.actual == r.predicted))
    title = (
        f"Top losses: the {len(cards)} out-of-fold images (of {n_rows}) with the highest binary cross-entropy under "
        "the ensemble, mean over the tags. Red: the ensemble's tags are not exactly the true ones. Right/wrong: "
        "each model on its own."
    )
    draw_cards(cards, prepared, plots_dir, title)


def draw_least_confident(table, prepared, path):
    """The least confident test images: predicted tags, the tag nearest its threshold, the truth where known."""
    cells = []
    for r in table.itertuples():
        image = pictures.thumbnail(_image_path(*prepared, r.image_id, "test"))
        lines = [
            f"#{r.rank} {r.image_id}",
            *_models_line("predicted", r.predicted),
            f"nearest: {r.nearest}",
            f"p {r.p_nearest:.2f}, threshold {r.threshold:.2f}",
        ]
        lines += [] if r.right is None else _models_line("actual", r.actual)
        cells.append((image, lines, r.right))
    if not cells:
        return pictures.statement("report.top_losses is 0: no test image drawn.", path)
    title = (
        f"The {len(cells)} least confident test images under the ensemble (a tag's probability nearest its "
        "threshold): where a pseudo-label would be least safe"
    )
    return pictures.image_grid(cells, path, textwrap.fill(title, 130))


def shown_tags(confusion, max_classes):
    """The tags the confusion picture draws: all of them, or the max_classes with the most mistakes, in tag order."""
    if len(confusion) <= max_classes:
        return confusion
    worst = tag_analysis.most_missed_and_added(confusion)["tag"].head(max_classes)
    chosen = set(worst) | set(confusion["tag"][~confusion["tag"].isin(worst)].head(max_classes - len(worst)))
    return confusion[confusion["tag"].isin(chosen)]


def draw_figures(figures, report, plots, n_rows):
    """confusion_normalised.png, most_confused.png and reliability.png of the ensemble's figures: figures = (the
    metric, its out-of-fold score, the ensemble's Source, {source: calibration_of})."""
    metric, score, ens, calibration = figures
    labels = list(metric.classes)
    shown = shown_tags(ens.confusion, report.max_classes)
    title = (
        f"ensemble, out of fold: {metric.name} {format_score(score)} over {n_rows} images at the submission's "
        "thresholds; of each tag's images, the share found or missed, of the others, added or left out"
    )
    if len(shown) < len(labels):
        title += f"; the {len(shown)} tags of {len(labels)} with the most mistakes"
    shares = tag_analysis.confusion_shares(shown)
    pictures.tag_confusion(shares, shown, plots / "confusion_normalised.png", textwrap.fill(title, 80))
    wrong = tag_analysis.most_missed_and_added(ens.confusion)
    title = f"Tags most often missed and added (out of fold, ensemble): {len(wrong)} tags with mistakes" + (
        f", the {MOST} with the most" if len(wrong) > MOST else ""
    )
    pictures.missed_and_added(wrong.head(MOST), plots / "most_confused.png", textwrap.fill(title, 90))
    _, ece, per_tag = calibration[ENSEMBLE]
    panels = range(len(labels))
    if len(labels) > PANELS:  # the worst calibrated, in tag order
        panels = sorted(np.argsort([-e for _, e in per_tag], kind="stable")[:PANELS])
    title = (
        f"Reliability, out of fold: ensemble ECE {ece:.4f} over {n_rows} images x {len(labels)} tags, "
        f"{report.calibration_bins} bins" + (f"; the {PANELS} tags worst calibrated" if len(labels) > PANELS else "")
    )
    pooled = {name: table for name, (table, _, _) in calibration.items()}
    panels = {labels[k]: per_tag[k] for k in panels}
    pictures.tag_reliability(pooled, panels, plots / "reliability.png", textwrap.fill(title, 110))


def write_tables(tables, figures, top, unsure):
    """The tables behind the pictures into the folder `tables`: figures = (per-tag table, {source: Source},
    {source: calibration_of}); top, unsure: the top losses' and least confident images' tables."""
    per_tag, sources, calibration = figures
    write_csv(per_tag, tables / "per_class.csv", float_format="%.6f")
    confusion = sources[ENSEMBLE].confusion
    write_csv(confusion, tables / "confusion.csv")
    write_csv(tag_analysis.confusion_shares(confusion), tables / "confusion_normalised.csv", float_format="%.4f")
    write_csv(tag_analysis.most_missed_and_added(confusion), tables / "most_confused.csv")
    write_csv(top, tables / "top_losses.csv", float_format="%.6f")
    write_csv(unsure, tables / "least_confident.csv", float_format="%.6f")
    labels = list(confusion["tag"])
    rows = [
        table.assign(source=name, tag=tag)
        for name, (pooled, _, each) in calibration.items()
        for tag, table in [(tag_analysis.ALL_TAGS, pooled), *zip(labels, (t for t, _ in each))]
    ]
    write_csv(pd.concat(rows, ignore_index=True), tables / "calibration.csv", float_format="%.6f")


def write_tags_report(inputs, outputs, report, comp):
    """build.write_report of a multi-label competition: inputs = (prepared_dir, preds_dir, ensemble_json, truth_csv),
    outputs = (metrics_json, tables_dir, plots_dir), the same files, metrics_json last. Returns the metrics."""
    (prepared_dir, preds_dir, ensemble_json, truth_csv), (metrics_json, tables_dir, plots_dir) = inputs, outputs
    labels, index = read_labels(prepared_dir), read_index(prepared_dir)
    weights, _ = read_choice(ensemble_json)  # no temperature: tags are sent at thresholds, never tempered
    metric = submitted_metric(comp, labels, ensemble_json)
    train = index[index["split"] == "train"][["image_id", "label"]]
    stack, y = aligned(read_tables(preds_dir, list(weights), "oof", labels), train, labels, tags=True)
    y = y.astype(bool)
    top, loss, sources = out_of_fold(stack, y, weights, metric, report)
    # recall first: `dvc exp show` lists the columns in the file's order
    metrics, per_tag = figure_metrics({n: s.figures for n, s in sources.items()}, labels, report.max_classes, "tag")
    calibration = {name: calibration_of(s.calibration) for name, s in sources.items()}
    per_tag["threshold"] = np.tile(tag_thresholds(metric), len(sources))
    per_tag["ece"] = [e for _, _, each in calibration.values() for _, e in each]
    metrics["ece"] = {name: ece for name, (_, ece, _) in calibration.items()}
    metrics["metric"] = metric.name
    metrics["oof_score"] = {name: s.score for name, s in sources.items()}
    if "note" in metrics:
        print(f"note: {metrics['note']}")
    top_table = top_loss_rows(stack.ids, y, top, loss, sources, metric)
    test_tables = read_tables(preds_dir, list(weights), "test", labels)
    test = Stack(test_tables, common_ids(test_tables), tags=True)
    truth = pd.read_csv(truth_csv, dtype=str, keep_default_na=False)
    unsure = least_confident_rows(test, weights, metric, truth, report.top_losses)

    plots, tables = Path(plots_dir), Path(tables_dir)
    draw_figures((metric, metrics["oof_score"][ENSEMBLE], sources[ENSEMBLE], calibration), report, plots, len(y))
    draw_top_losses(top_table, (prepared_dir, index), len(y), plots, metric)
    draw_least_confident(unsure, (prepared_dir, index), plots / "least_confident.png")
    write_tables(tables, (per_tag, sources, calibration), top_table, unsure)
    write_json(metrics_json, metrics)
    return metrics
