"""What `dvc exp show` and `dvc plots show` give a competitor: the scores and train time, no memory profile and no
per-split copies; pictures that render without a network. The end-to-end check is test_pipeline's (slow)."""

from pathlib import Path

import pytest
import yaml

from paddy.training import folds

ROOT = Path(__file__).resolve().parents[1]


def declared(kind):
    """Every path dvc.yaml declares as `kind` (metrics, plots, outs), with ${key} left in."""
    stages = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
    paths = []
    for stage in stages.values():
        for entry in stage.get("do", stage).get(kind, []):
            paths.append(next(iter(entry)) if isinstance(entry, dict) else entry)
    return paths


def test_metrics_are_the_models_the_ensembles_its_pseudo_labels_and_its_reports_only():
    metrics = ["dvclive/${key}/metrics.json", "metrics/ensemble.json", "metrics/pseudo.json", "metrics/report.json"]
    assert sorted(declared("metrics")) == metrics
    assert "metrics/profile/${key}.json" in declared("outs")  # the profile in short: a plain file


def test_plots_are_images():
    """PNG files: `dvc plots show` embeds them as they are, where its vega charts load their library from a CDN."""
    assert sorted(declared("plots")) == [
        "dvclive/${key}/learning_curves.png", "plots/profile/${key}.png",
        "plots/report/confusion_normalised.png", "plots/report/least_confident.png", "plots/report/most_confused.png",
        "plots/report/reliability.png", "plots/report/top_losses", "plots/report/top_losses.png",
    ]  # fmt: skip
    # The folder of top losses holds PNG files only (tests/report/test_report.py), so the page embeds each.


def test_train_summary_is_the_models_figures_over_its_splits():
    split = {"train_loss": 0.5, "valid_loss": 0.4, "valid_acc": 0.8, "valid_acc_variety": 0.6, "images_per_s": 9.0,
             "epoch_time_s": 2.0, "train_time_s": 10.0, "micro_batch": 32, "events": []}  # fmt: skip
    other = dict(split, valid_loss=0.2, valid_acc=0.9, events=["out of memory at micro-batch 32: now 16"])
    summary = folds.summary([split, other])
    expected = {"valid_acc": 0.85, "valid_acc_variety": 0.6, "valid_loss": 0.3, "train_time_s": 20.0}
    assert summary == pytest.approx(dict(expected, out_of_memory_fallbacks=1))
    assert folds.summary([split]).keys() == expected.keys()  # no fallback, no compile: no column for them
    # The competition's metric: the mean over the splits that define it (ROC AUC over one class has none)
    scored = [dict(split, valid_roc_auc=0.7), dict(other, valid_roc_auc=0.9), split]
    assert folds.summary(scored)["valid_roc_auc"] == pytest.approx(0.8)
    assert list(folds.summary(scored))[:4] == ["valid_acc", "valid_acc_variety", "valid_roc_auc", "valid_loss"]
