"""Stage check: every setting in params.yaml, once, before any other stage deletes its outputs to run again.

DVC removes a stage's outputs before running it, git-tracked metrics included, so a bad value found by a later
stage would cost what that stage had written. Every other stage depends on this one's output, whose content never
changes: an edit to params.yaml reruns this check first, then only the stages whose own settings changed.
"""

import argparse

from paddy.errors import exit_on_error
from paddy.fileio import write_text
from paddy.models import check_archs, check_models_train
from paddy.params import load_params


@exit_on_error
def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("out", help="written once every setting passed; the same text every time")
    args = parser.parse_args()
    params = load_params()  # every setting's presence, type and range
    check_archs(params)  # every architecture and size, and that pretrained weights can be had
    check_models_train(params)  # every model with its head: one forward and backward on fake tensors, no weights
    write_text(args.out, "params.yaml passed every check\n")


if __name__ == "__main__":
    main()
