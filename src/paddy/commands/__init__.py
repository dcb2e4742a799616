"""`paddy <command>`: the steps a user runs by hand, beside `dvc repro` (which runs the pipeline stages).

Each command is a module of this package with its HELP, its arguments (nothing but argparse) and run(args), which
imports what the command needs (torch, pandas, the Kaggle client) only when it runs: `paddy --help` and
`paddy <command> --help` answer at once (tests/test_cli.py checks that building the parser imports none of them).
"""

import argparse
import sys

from paddy.commands import compare, init, kaggle, lr_find, predict, profile, scores, submit
from paddy.commands.scores import LEDGER
from paddy.errors import PaddyError, print_error

COMMANDS = {
    "init": init,
    "submit": submit,
    "scores": scores,
    "compare": compare,
    "lr-find": lr_find,
    "profile": profile,
    "predict": predict,
    "kaggle": kaggle,
}
__all__ = ["COMMANDS", "LEDGER", "build_parser", "main"]


def build_parser():
    parser = argparse.ArgumentParser(prog="paddy", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    for name, command in COMMANDS.items():
        p = sub.add_parser(name, help=command.HELP, description=command.HELP)
        p.set_defaults(run=command.run)
        command.arguments(p)
    return parser


def main(argv=None):
    args = build_parser().parse_args(argv)
    try:
        return args.run(args) or 0
    except PaddyError as e:
        return print_error(e)
    except KeyboardInterrupt:  # Ctrl-C: one line, not a traceback
        print(f"\npaddy {args.command} stopped by Ctrl-C.", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
