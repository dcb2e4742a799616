"""Stage pseudo: pseudo-labels of the test images the ensemble is confident of, and a second round of every model on
each split's training rows and those (paddy.pseudo); off by default (pseudo.enabled), then it only says so.
Interrupted, the same command or `dvc repro` continues round 2 from the checkpoints in --resume-dir."""

import argparse

from paddy.errors import exit_on_error
from paddy.pseudo import pseudo_stage


@exit_on_error
def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("prepared_dir")
    parser.add_argument("split_csv")
    parser.add_argument("preds_dir", help="round 1's TTA probabilities (data/preds)")
    parser.add_argument("ensemble_json", help="metrics/ensemble.json: round 1's weights and scores")
    parser.add_argument("truth_csv", help="the test set's true labels; header only when unknown")
    parser.add_argument("raw_dir", help="the competition folder: its sample submission")
    parser.add_argument("submission_csv", help="round 1's submission")
    parser.add_argument("out_dir", help="data/pseudo: labels.csv, models/, preds/, submission.csv")
    parser.add_argument("metrics_json")
    parser.add_argument("--profile-dir", default="data/profile", help="each model's <model>.batches.json")
    parser.add_argument("--resume-dir", default="data/resume/pseudo", help="round 2's checkpoints, per model")
    pseudo_stage(parser.parse_args())


if __name__ == "__main__":
    main()
