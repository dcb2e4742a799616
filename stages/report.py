"""Stage report: what the ensemble gets wrong, out of fold: per-class metrics, the confusion matrix and its most
confused pairs, the top losses, the least confident test images and calibration; of a multi-label competition, the
same per tag (docs/report.md)."""

import argparse

from paddy.errors import exit_on_error, say_on_interrupt
from paddy.files import built_beside, write_json
from paddy.metrics import format_score
from paddy.report.build import ENSEMBLE, pseudo_report, write_report
from paddy.settings import load_settings


@exit_on_error
def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("prepared_dir")
    parser.add_argument("preds_dir")
    parser.add_argument("ensemble_json", help="metrics/ensemble.json: the weights the ensemble chose")
    parser.add_argument("truth_csv", help="the test set's true labels; header only when unknown")
    parser.add_argument("metrics_json")
    parser.add_argument("tables_dir")
    parser.add_argument("plots_dir")
    parser.add_argument("--pseudo", help="metrics/pseudo.json: the pseudo-labels kept and wrong per class")
    args = parser.parse_args()
    kept = f"{args.plots_dir}, {args.tables_dir} and {args.metrics_json} are still the last report's."
    say_on_interrupt("report", kept)
    settings = load_settings()
    # the two folders are built beside the last report's and swapped in whole; metrics_json is written last
    with built_beside(args.plots_dir) as plots, built_beside(args.tables_dir) as tables:
        inputs = (args.prepared_dir, args.preds_dir, args.ensemble_json, args.truth_csv)
        metrics = write_report(inputs, (args.metrics_json, tables, plots), settings.report, settings.competition)
        found = pseudo_report(args.pseudo, tables, settings.report.max_classes) if args.pseudo else None
    if found is not None:  # the pseudo stage was on: its counts join the metrics, still written last
        write_json(args.metrics_json, metrics | found)
    score = format_score(metrics["oof_score"][ENSEMBLE])
    kind, kinds = ("tag", "tags") if settings.competition.multi_label else ("class", "classes")
    print(f"{args.metrics_json}: the ensemble's out-of-fold {metrics['metric']} {score}")
    if "recall" in metrics:
        recall = " ".join(f"{label} {r:.3f}" for label, r in metrics["recall"][ENSEMBLE].items())
        print(f"ensemble recall per {kind}: {recall}")
    else:  # more classes than report.max_classes: their figures are in the tables, macro averages in the metrics
        print(f"ensemble macro recall over {metrics['classes']} {kinds}: {metrics['recall_macro'][ENSEMBLE]:.3f}")
    print(f"expected calibration error: {metrics['ece']}")
    print(f"{args.plots_dir}: the pictures; {args.tables_dir}: their tables")


if __name__ == "__main__":
    main()
