"""Stage ensemble: weighted mean of every model's TTA probabilities -> a validated submission.csv in the competition's
form, and CV metrics scored with its metric (paddy.predict.stage)."""

import argparse

from paddy.errors import exit_on_error
from paddy.predict.stage import ensemble_stage


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
    ensemble_stage(parser.parse_args())


if __name__ == "__main__":
    main()
