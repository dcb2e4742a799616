"""Stage split: one table of fold / bag assignments from the prepared index, shared by every model."""

import argparse

from paddy.data.prepare import read_index
from paddy.data.split import split_columns, split_index
from paddy.errors import exit_on_error, say_on_interrupt
from paddy.files import write_csv
from paddy.settings import load_settings


@exit_on_error
def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("prepared_dir", help="prepare's output: index.csv names the readable training images")
    parser.add_argument("out_csv", help="the split table: image_id, then one 0/1 column per split (1: validation)")
    args = parser.parse_args()
    say_on_interrupt("split", f"{args.out_csv} is still the last one (written whole at the end).")
    settings = load_settings()
    cv = settings.cv
    table = split_index(read_index(args.prepared_dir), cv, multi_label=settings.competition.multi_label)
    write_csv(table, args.out_csv)
    sizes = [int(table[c].sum()) for c in split_columns(table)]
    print(f"{args.out_csv}: {cv.scheme}, {len(sizes)} split(s) of {len(table)} images, validation sizes {sizes}")


if __name__ == "__main__":
    main()
