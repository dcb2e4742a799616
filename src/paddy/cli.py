"""`paddy <command>`: the steps a user runs by hand, beside `dvc repro` (which runs the pipeline stages)."""

import argparse
import importlib
import sys

from paddy.errors import PaddyError

# command -> (module with add_arguments(parser) and run(args) -> int, one-line help)
COMMANDS = {
    "submit": ("paddy.submit", "validate submission.csv, send it to Kaggle and record it in the ledger"),
    "scores": ("paddy.ledger", "pull pending public/private scores for the ledger's submissions"),
    "compare": ("paddy.compare", "table of experiments (dvc exp show) joined with the ledger's scores"),
    "lr-find": ("paddy.lr_find_cli", "fastai's learning-rate finder on a model's real training step, with suggestions"),
    "profile": ("paddy.profile_cli", "peak memory per architecture and micro-batch: measured on CUDA, else estimated"),
}


def main(argv=None):
    parser = argparse.ArgumentParser(prog="paddy", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    for name, (module, help_) in COMMANDS.items():
        p = sub.add_parser(name, help=help_, description=help_)
        p.set_defaults(module=module)
        importlib.import_module(module).add_arguments(p)
    args = parser.parse_args(argv)
    try:
        return importlib.import_module(args.module).run(args) or 0
    except PaddyError as e:
        print(f"\nerror: {e}\n", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
