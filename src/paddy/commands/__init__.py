"""`paddy <command>`: the steps a user runs by hand, beside `dvc repro` (which runs the pipeline stages).

Every command's arguments are defined here, with nothing but argparse: a command's module (torch, pandas, the Kaggle
client) is imported only to run it, so `paddy --help` and `paddy <command> --help` answer at once
(tests/test_cli.py checks that building the parser imports none of them).
"""

import argparse
import importlib
import sys
from pathlib import Path

from paddy.errors import PaddyError

LEDGER = "submissions.csv"  # paddy.kaggle.ledger.LEDGER (a test checks they agree): importing it would import pandas


def submit_arguments(parser):
    parser.add_argument("-m", "--message", required=True, help="what this submission is (Kaggle's description)")
    parser.add_argument("--file", default="submission.csv", help="file to send (default: %(default)s)")
    parser.add_argument("--data", default="data/raw", help="competition folder with sample_submission.csv, train.csv")
    parser.add_argument("--params", default="params.yaml", help="params file (default: %(default)s)")
    parser.add_argument("--metrics", default="metrics/ensemble.json", help="ensemble metrics with the CV figures")
    parser.add_argument("--ledger", default=LEDGER, help="ledger file (default: %(default)s)")
    parser.add_argument("--force", action="store_true", help="send even if the file is stale (not the current run's)")
    parser.add_argument("--dry-run", action="store_true", help="check everything and show what would be sent")
    parser.add_argument(
        "--wait", type=float, default=120.0, help="seconds to wait for the score (default: %(default)s)"
    )
    parser.add_argument("--poll", type=float, default=10.0, help="seconds between score polls (default: %(default)s)")


def scores_arguments(parser):
    parser.add_argument("--ledger", default=LEDGER, help="ledger file (default: %(default)s)")
    parser.add_argument("--wait", type=float, default=0.0, help="seconds to keep polling for pending scores")
    parser.add_argument("--poll", type=float, default=10.0, help="seconds between polls (default: %(default)s)")


def compare_arguments(parser):
    parser.add_argument(
        "--sort", metavar="COLUMN", help="sort by this column, largest first (default: oof_acc.ensemble)"
    )
    parser.add_argument("--asc", action="store_true", help="sort smallest first")
    parser.add_argument("--params", metavar="KEYS", help="comma-separated params to show (default: those that vary)")
    parser.add_argument("--all-commits", action="store_true", help="experiments of every commit, not just HEAD")
    parser.add_argument("--ledger", default=LEDGER, help="ledger file (default: %(default)s)")
    parser.add_argument("--csv", metavar="PATH", help="also write the table as CSV")
    parser.add_argument("--md", metavar="PATH", help="also write the table as markdown")


def lr_find_arguments(parser):
    parser.add_argument("model", help="a key of `models` in params.yaml")
    parser.add_argument("-S", "--set-param", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a setting for this run only, as `dvc exp run -S` does (repeatable)")  # fmt: skip
    parser.add_argument("--start-lr", type=float, default=1e-7)
    parser.add_argument("--end-lr", type=float, default=10.0)
    parser.add_argument("--num-it", type=int, default=100, help="optimizer steps of the sweep (fastai: 100)")
    parser.add_argument("--prepared", type=Path, default=Path("data/prepared"))
    parser.add_argument("--split", type=Path, default=Path("data/split.csv"))
    parser.add_argument("--out", type=Path, default=Path("lr_find"))


def profile_arguments(parser):
    parser.add_argument(
        "--arch",
        nargs="+",
        metavar="ARCH[:SIZE]",
        help="timm architectures, each with an optional size: 224 or HxW (e.g. convnext_large_in22k:320x224); "
        "without a size, the one the architecture was built for",
    )
    parser.add_argument("--params", action="store_true", help="profile the models in params.yaml instead")
    parser.add_argument(
        "--batch",
        nargs="+",
        type=int,
        help="micro-batches (default: from --effective-batch down to profile.min_micro_batch)",
    )
    parser.add_argument(
        "--effective-batch",
        type=int,
        help="samples per optimizer step, accumulated from micro-batches (default: train.effective_batch)",
    )
    parser.add_argument("--eval-batch", nargs="+", type=int, help="prediction batches (default: 4x, 2x, 1x, ...)")
    parser.add_argument(
        "--item-size", metavar="HxW", help="the uint8 items the step augments from (default: the model's size)"
    )
    parser.add_argument("--head", choices=("fastai", "timm"), help="default: fastai, or params.yaml's with --params")
    parser.add_argument("--precision", choices=("auto", "bf16", "fp16", "fp32"), help="default: train.precision")
    parser.add_argument("--estimate", action="store_true", help="estimate even where CUDA is available")
    parser.add_argument("--budget-gb", type=float, help="default: profile.budget_gb")
    parser.add_argument("--num-classes", type=int, help="default: data/prepared/targets.json's labels, else 10")
    parser.add_argument("--json", type=Path, help="also write the profiles to this file")


# command -> (module whose run(args) -> int runs it, its arguments, one-line help)
COMMANDS = {
    "submit": (
        "paddy.kaggle.submit",
        submit_arguments,
        "validate submission.csv, send it to Kaggle and record it in the ledger",
    ),
    "scores": (
        "paddy.kaggle.ledger",
        scores_arguments,
        "pull pending public/private scores for the ledger's submissions",
    ),
    "compare": (
        "paddy.kaggle.compare",
        compare_arguments,
        "table of experiments (dvc exp show) joined with the ledger's scores",
    ),
    "lr-find": (
        "paddy.commands.lr_find",
        lr_find_arguments,
        "fastai's learning-rate finder on a model's real training step, with suggestions",
    ),
    "profile": (
        "paddy.commands.profile",
        profile_arguments,
        "peak memory per architecture and micro-batch: measured on CUDA, else estimated",
    ),
}


def build_parser():
    parser = argparse.ArgumentParser(prog="paddy", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    for name, (module, add_arguments, help_) in COMMANDS.items():
        p = sub.add_parser(name, help=help_, description=help_)
        p.set_defaults(module=module)
        add_arguments(p)
    return parser


def main(argv=None):
    args = build_parser().parse_args(argv)
    try:
        return importlib.import_module(args.module).run(args) or 0
    except PaddyError as e:
        print(f"\nerror: {e}\n", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
