"""`paddy scores`: pull pending public/private scores for the ledger's submissions."""

# paddy.leaderboard.ledger.LEDGER (tests/test_cli.py checks they agree): importing that module would import pandas
LEDGER = "submissions.csv"

HELP = "pull pending public/private scores for the ledger's submissions"


def ledger_argument(parser):
    """--ledger, which submit, scores and compare share."""
    parser.add_argument("--ledger", default=LEDGER, help="ledger file (default: %(default)s)")


def arguments(parser):
    ledger_argument(parser)
    parser.add_argument("--wait", type=float, default=0.0, help="seconds to keep polling for pending scores")
    parser.add_argument("--poll", type=float, default=10.0, help="seconds between polls (default: %(default)s)")


def run(args):
    from paddy.leaderboard.ledger import show_ledger

    return show_ledger(args)
