"""Stage check: every setting in params.yaml, once, before any other stage deletes its outputs to run again.

DVC removes a stage's outputs before running it, git-tracked metrics included, so a bad value found by a later
stage would cost what that stage had written. Every other stage depends on this one's output, whose content never
changes: the check runs on every repro (always_changed, dvc.yaml says why), then only the stages whose own settings
or inputs changed run. The checks are paddy.check's.
"""

import argparse

from paddy.check import check_everything
from paddy.errors import exit_on_error, say_on_interrupt
from paddy.files import write_text
from paddy.settings import load_settings


@exit_on_error
def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("out", help="written once every setting passed; the same text every time")
    args = parser.parse_args()
    say_on_interrupt("check", "It writes nothing but data/checked, which the next repro writes again.")
    check_everything(load_settings())  # load_settings: every value's presence, type and range; no unknown key
    write_text(args.out, "params.yaml passed every check\n")


if __name__ == "__main__":
    main()
