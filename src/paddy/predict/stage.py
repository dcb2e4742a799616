"""The ensemble stage's work (stages/ensemble.py parses its paths and calls ensemble_stage): every model's TTA
probabilities weighted into a validated submission.csv in the competition's form, and the metrics of the mix."""

from pathlib import Path

import pandas as pd

from paddy.data.competition import read_sample_submission
from paddy.data.prepare import read_index, read_labels
from paddy.data.split import read_splits
from paddy.errors import say_on_interrupt
from paddy.files import write_csv, write_json
from paddy.metrics import format_score
from paddy.predict.ensemble import build_ensemble
from paddy.predict.submission import write_submission
from paddy.settings import load_settings


def ensemble_stage(args):
    """args: raw_dir, prepared_dir, preds_dir, truth_csv (the test set's true labels; header only when unknown),
    submission_csv, metrics_dir and split (data/split.csv, whose kfold folds cross-validate the fitted weights)."""
    kept = f"{args.submission_csv} and the metrics are still the last run's (written at the end)."
    say_on_interrupt("ensemble", kept)
    settings = load_settings()
    comp = settings.competition
    labels = read_labels(args.prepared_dir)
    index = read_index(args.prepared_dir)
    train = index[index.split == "train"][["image_id", "label"]]
    test_truth = pd.read_csv(args.truth_csv, dtype=str, keep_default_na=False)
    split_table = read_splits(args.split)[0] if args.split else None
    sub, metrics, confusion = build_ensemble(
        {name: model.weight for name, model in settings.models.items()},
        labels,
        read_sample_submission(args.raw_dir, comp),
        args.preds_dir,
        (train, test_truth),
        settings,
        split_table,
    )
    # a multi-label competition's threshold per tag: an output of its own, not a metric, so that 3,474 tags (iMet's)
    # are not as many columns of `dvc exp show`; empty for the others, as DVC wants every output it tracks
    found = metrics.get("thresholds", {})
    write_json(Path(args.metrics_dir) / "thresholds.json", {"per_tag": found.pop("per_tag", {})})
    write_json(Path(args.metrics_dir) / "ensemble.json", metrics)
    write_csv(confusion, Path(args.metrics_dir) / "confusion.csv")
    write_submission(sub, args.submission_csv)
    weighting = settings.ensemble.weights  # params or fit
    print(f"{args.submission_csv}: {len(sub)} rows ({comp.form}), {weighting} weights {metrics['weights']}")
    print_figures(metrics)


def print_figures(metrics):
    name, fit = metrics["metric"], metrics["fit"]
    print(f"out-of-fold {name} {metrics['oof_score']}, accuracy {metrics['oof_acc']}, log loss {metrics['oof_loss']}")
    in_sample, cv = format_score(fit["oof_score"]), format_score(fit["cv_score"])
    print(f"fitted weights: in-sample {name} {in_sample}, cross-validated {cv}")
    if "temperature" in metrics:
        t = metrics["temperature"]
        print(f"temperature {t['value']:.3f}: out-of-fold log loss {t['oof_before']:.4f} -> {t['oof_after']:.4f}")
    if "test_score" in metrics:
        print(f"test {name} (synthetic ground truth): {metrics['test_score']}")
    if "thresholds" in metrics:
        t = metrics["thresholds"]
        shown = {k: format_score(v) for k, v in t.items() if k.startswith(("oof_", "test_", "cv_"))}
        print(f"thresholds ({t['fit']}; global {t['threshold_global']:.2f}): {name} {shown}")
