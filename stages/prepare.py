"""Stage prepare: pre-resize data/raw into data/prepared, report bad files, write the index table."""

import argparse

from paddy.data.prepare import prepare_competition
from paddy.errors import exit_on_error
from paddy.settings import load_settings


@exit_on_error
def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("raw_dir")
    parser.add_argument("out_dir")
    args = parser.parse_args()
    settings = load_settings()
    p = settings.prepare
    index, bad = prepare_competition(
        args.raw_dir, args.out_dir, settings.competition, p.max_size, p.workers, p.max_pixels
    )
    print(f"{args.out_dir}: {int(index.ok.sum())} images ready, {len(bad)} bad file(s) left out")


if __name__ == "__main__":
    main()
