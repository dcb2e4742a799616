"""Stage download: lay the competition out in data/raw (generated, from Kaggle, or from a folder/.zip)."""

import argparse

from paddy.data.download import fetch_competition
from paddy.errors import exit_on_error, say_on_interrupt
from paddy.settings import load_settings


@exit_on_error
def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("raw_dir")
    parser.add_argument("truth_csv", help="the test set's true labels, when the source knows them")
    args = parser.parse_args()
    kept = f"{args.raw_dir} is still the last complete competition (a new one is built beside it, swapped in whole)."
    say_on_interrupt("download", kept)
    settings = load_settings()
    train, _, test, classes = fetch_competition(settings.data, settings.competition, args.raw_dir, args.truth_csv)
    print(f"{args.raw_dir}: {len(train)} training images, {len(classes)} classes, {len(test)} test images")


if __name__ == "__main__":
    main()
