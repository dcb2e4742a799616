"""Stage split: one table of fold / bag assignments from the prepared index, shared by every model."""

import argparse

from paddy.data.prepare import read_index
from paddy.data.split import make_splits, split_columns
from paddy.errors import exit_on_error
from paddy.files import write_csv
from paddy.settings import load_settings


@exit_on_error
def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("prepared_dir")
    parser.add_argument("out_csv")
    args = parser.parse_args()
    cv = load_settings().cv
    index = read_index(args.prepared_dir)
    train = index[(index.split == "train") & index.ok]
    table = make_splits(train, cv.scheme, cv.n_splits, cv.valid_pct, cv.seed)
    write_csv(table, args.out_csv)
    sizes = [int(table[c].sum()) for c in split_columns(table)]
    print(f"{args.out_csv}: {cv.scheme}, {len(sizes)} split(s) of {len(table)} images, validation sizes {sizes}")


if __name__ == "__main__":
    main()
