"""`paddy scores`: pull pending public/private scores for the ledger's submissions."""

from paddy.commands.submit import LEDGER

HELP = "pull pending public/private scores for the ledger's submissions"


def arguments(parser):
    parser.add_argument("--ledger", default=LEDGER, help="ledger file (default: %(default)s)")
    parser.add_argument("--wait", type=float, default=0.0, help="seconds to keep polling for pending scores")
    parser.add_argument("--poll", type=float, default=10.0, help="seconds between polls (default: %(default)s)")


def run(args):
    from paddy.kaggle.ledger import report

    return report(args)
