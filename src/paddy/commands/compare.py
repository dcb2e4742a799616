"""`paddy compare`: the experiments (dvc exp show) joined with the ledger's scores, as a table."""

from paddy.commands.scores import ledger_argument

HELP = "table of experiments (dvc exp show) joined with the ledger's scores; --per-class: recall per class"


def arguments(parser):
    parser.add_argument(
        "experiments", nargs="*", metavar="EXPERIMENT", help="the experiments to show, by name (default: all)"
    )
    parser.add_argument(
        "--per-class",
        action="store_true",
        help="each class's out-of-fold recall side by side (the report stage's), the change from the first experiment",
    )
    parser.add_argument("--model", default="ensemble", help="--per-class: whose recall (default: ensemble)")
    parser.add_argument(
        "--sort",
        metavar="COLUMN",
        help="sort by this column, largest first (default: the competition metric's oof_<metric>.ensemble, best "
        "first, or oof_acc.ensemble)",
    )
    parser.add_argument("--asc", action="store_true", help="sort smallest first (by default: worst first)")
    parser.add_argument("--params", metavar="KEYS", help="comma-separated params to show (default: those that vary)")
    parser.add_argument("--all-commits", action="store_true", help="experiments of every commit, not just HEAD")
    parser.add_argument("--csv", metavar="PATH", help="also write the table as CSV")
    parser.add_argument("--md", metavar="PATH", help="also write the table as markdown")
    ledger_argument(parser)


def run(args, exp_json=None):
    """`exp_json` replaces `dvc exp show` in tests."""
    from paddy.leaderboard.compare import show_experiments

    return show_experiments(args, exp_json=exp_json)
