"""Stage ensemble: weighted mean of every model's TTA probabilities -> a validated submission.csv and CV metrics."""

import argparse
from pathlib import Path

import pandas as pd

from paddy import charts
from paddy.data.competition import read_sample_submission
from paddy.data.prepare import read_index, read_labels
from paddy.data.split import read_splits
from paddy.errors import exit_on_error, say_on_interrupt
from paddy.files import write_csv, write_json
from paddy.predict.ensemble import build_ensemble
from paddy.settings import load_settings


@exit_on_error
def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("raw_dir")
    parser.add_argument("prepared_dir")
    parser.add_argument("preds_dir")
    parser.add_argument("truth_csv", help="the test set's true labels; header only when unknown")
    parser.add_argument("submission_csv")
    parser.add_argument("metrics_dir")
    parser.add_argument("--split", help="data/split.csv: kfold's folds cross-validate the fitted weights")
    parser.add_argument("--plot", help="the out-of-fold confusion matrix (PNG) for `dvc plots show`")
    args = parser.parse_args()
    kept = f"{args.submission_csv} and the metrics are still the last run's (written at the end)."
    say_on_interrupt("ensemble", kept)
    settings = load_settings()
    labels = read_labels(args.prepared_dir)
    index = read_index(args.prepared_dir)
    train = index[index.split == "train"][["image_id", "label"]]
    sub, metrics, confusion = build_ensemble(
        {name: model.weight for name, model in settings.models.items()},
        labels,
        read_sample_submission(args.raw_dir),
        args.preds_dir,
        train,
        pd.read_csv(args.truth_csv, dtype=str),
        fallback_label=train["label"].mode()[0],
        ensemble=settings.ensemble,
        split_table=read_splits(args.split)[0] if args.split else None,
        seed=settings.seed,
    )
    if args.plot:  # first: a picture that fails to draw leaves the metrics and the submission as they were
        title = f"ensemble, out of fold: {metrics['oof_acc']['ensemble']:.4f} accuracy over {len(confusion)} images"
        charts.confusion(confusion["actual"], confusion["predicted"], labels, args.plot, title)
    write_json(Path(args.metrics_dir) / "ensemble.json", metrics)
    write_csv(confusion, Path(args.metrics_dir) / "confusion.csv")
    write_csv(sub, args.submission_csv)
    print(f"{args.submission_csv}: {len(sub)} rows, {settings.ensemble.weights} weights {metrics['weights']}")
    print(f"out-of-fold accuracy {metrics['oof_acc']}, log loss {metrics['oof_loss']}")
    fit = metrics["fit"]
    print(f"fitted weights: in-sample log loss {fit['oof_loss']:.4f}, cross-validated {fit['cv_loss']:.4f}")
    if "test_acc" in metrics:
        print(f"test accuracy (synthetic ground truth): {metrics['test_acc']}")


if __name__ == "__main__":
    main()
