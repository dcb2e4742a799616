"""`paddy predict PATH...`: classify new photos (files or folders) with the current experiment's trained models,
their TTA and the ensemble's weights; writes a CSV of each photo's top labels (and other targets, such as the
variety, where a model predicts them); of a multi-label competition, each photo's tags above the submission's
thresholds with their probabilities, printed too. Unreadable photos are listed, on stderr and in the table's
`error` column, and the others still predicted."""

import sys
from pathlib import Path

HELP = "classify new photos (files or folders) with the trained models, their TTA and the ensemble's weights"


def arguments(parser):
    parser.add_argument("paths", nargs="+", type=Path, metavar="PATH",
                        help="image files, or folders searched recursively for images")  # fmt: skip
    parser.add_argument("--out", type=Path, default=Path("predictions.csv"), help="CSV to write (default: %(default)s)")
    parser.add_argument("--top", type=int, default=3,
                        help="labels listed per photo, likeliest first (default: 3); a multi-label competition "
                        "lists the tags above their thresholds instead")  # fmt: skip
    parser.add_argument("--models", nargs="+", metavar="NAME",
                        help="mix only these models (keys of `models`), their weights renormalised")  # fmt: skip


def run(args):
    from paddy.files import write_csv
    from paddy.predict.photos import check_out, predict_photos, tag_lines, tag_table, top_table
    from paddy.settings import load_settings
    from paddy.training.gpus import claim_device

    settings = load_settings()
    check_out(args.out)
    device = claim_device()  # a GPU no other run holds, or the CPU
    pred = predict_photos(args.paths, settings, device, only=args.models, top=args.top)
    if pred.tags is None:
        table = top_table(pred, args.top)
    else:  # a multi-label competition: each photo's tags above the submission's thresholds, printed too
        table = tag_table(pred)
        for line in tag_lines(table):
            print(line)
    write_csv(table, args.out, float_format="%.6f")
    for path, why in pred.errors.items():
        print(f"unreadable {path}: {why}", file=sys.stderr)
    unreadable = f", {len(pred.errors)} unreadable (listed above and in its error column)" if pred.errors else ""
    print(f"{args.out}: {len(pred.labels)} photo(s) predicted by {', '.join(pred.models) or 'no model'}{unreadable}")
    return 0 if len(pred.labels) else 1  # every photo unreadable: the table lists them, but a script should notice
