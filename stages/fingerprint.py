"""Stage fingerprint: what `data.source` holds now, cheaply, so that download reruns exactly when it changed.

dvc.yaml marks it always_changed: DVC cannot see a Kaggle zip, or a folder or zip outside the repository, so this
runs on every repro and download depends on its output instead.
"""

import argparse

from paddy.data.fingerprint import fingerprint
from paddy.errors import exit_on_error, say_on_interrupt
from paddy.files import write_json
from paddy.settings import load_settings


@exit_on_error
def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("out_json")
    args = parser.parse_args()
    say_on_interrupt("fingerprint", f"{args.out_json} is written whole or not at all.")
    data = load_settings().data  # the check stage has checked every setting, archs included
    write_json(args.out_json, fingerprint(data))


if __name__ == "__main__":
    main()
