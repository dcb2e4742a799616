"""Stage prepare: pre-resize data/raw into data/prepared, report bad files, write the index table."""

import argparse

from paddy.data.prepare import prepare_competition
from paddy.errors import exit_on_error, say_on_interrupt
from paddy.files import built_beside
from paddy.settings import load_settings


@exit_on_error
def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("raw_dir")
    parser.add_argument("out_dir")
    args = parser.parse_args()
    say_on_interrupt("prepare", f"{args.out_dir} is still the last complete one (the new one is built beside it).")
    settings = load_settings()
    p = settings.prepare
    with built_beside(args.out_dir) as out:  # swapped in whole: an error or Ctrl-C keeps the last good one
        index, bad = prepare_competition(args.raw_dir, out, settings.competition, p.max_size, p.workers, p.max_pixels)
    print(f"{args.out_dir}: {int(index.ok.sum())} images ready, {len(bad)} bad file(s) left out")


if __name__ == "__main__":
    main()
