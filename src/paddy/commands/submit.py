"""`paddy submit -m MESSAGE`: validate submission.csv, send it to Kaggle and record it in the ledger."""

import time

from paddy.commands.scores import ledger_argument

HELP = "validate submission.csv, send it to Kaggle and record it in the ledger"


def arguments(parser):
    parser.add_argument("-m", "--message", required=True, help="what this submission is (Kaggle's description)")
    parser.add_argument(
        "--file", help="file to send (default: submission.csv; data/pseudo/submission.csv with pseudo.enabled)"
    )
    parser.add_argument("--data", default="data/raw", help="competition folder with its sample submission")
    parser.add_argument("--prepared", default="data/prepared", help="prepare's output: labels.json, the classes")
    parser.add_argument("--params", default="params.yaml", help="params file (default: %(default)s)")
    parser.add_argument(
        "--metrics",
        help="ensemble metrics with the CV figures (default: metrics/ensemble.json; data/pseudo/ensemble.json with "
        "pseudo.enabled)",
    )
    parser.add_argument("--kernel", metavar="NAME[/VERSION]",
                        help="send a Kaggle kernel's pulled submission (`paddy kaggle pull NAME`): its file, "
                        "competition CSVs, params and metrics instead of the workspace's")  # fmt: skip
    ledger_argument(parser)
    parser.add_argument("--force", action="store_true", help="send even if the file is stale (not the current run's)")
    parser.add_argument("--dry-run", action="store_true", help="check everything and show what would be sent")
    parser.add_argument(
        "--wait", type=float, default=120.0, help="seconds to wait for the score (default: %(default)s)"
    )
    parser.add_argument("--poll", type=float, default=10.0, help="seconds between score polls (default: %(default)s)")


def run(args, client=None, exp_json=None, status=None, sleep=time.sleep):
    """`client`, `exp_json` and `status` replace the Kaggle API, `dvc exp show` and `dvc status` in tests."""
    from paddy.leaderboard.submit import submit

    return submit(args, client=client, exp_json=exp_json, status=status, sleep=sleep)
