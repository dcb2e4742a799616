"""The pseudo stage's work (stages/pseudo.py parses its paths and calls pseudo_stage): pseudo-labels, then a second
round of every model on each split's training rows and its pseudo-labelled test images (docs/techniques.md).

Off (`pseudo.enabled: false`, the default), it writes {"enabled": false} and a header-only labels.csv and returns,
without importing torch. On: the threshold (pseudo.threshold, or the lowest confidence whose out-of-fold rows are
wrong at most pseudo.max_error of the time), each split's kept test images (paddy.predict.pseudo), round 2 through
the train stage's train_model with each model's profiled batches, resumable from resume_dir/<model>, its TTA and
ensemble, and the figures of both rounds. Everything is built in <out_dir>.partial and swapped in whole at the end:
a stop keeps the last good one, and the same command (or `dvc repro`) goes on from the checkpoints."""

import json
import shutil
import sys
import time
from pathlib import Path

import pandas as pd

from paddy.errors import say_on_interrupt
from paddy.files import built_beside, write_csv, write_json
from paddy.settings import load_settings

LABELS = ("image_id", "split", "label", "confidence")


def pseudo_stage(args):
    """args: prepared_dir, split_csv, preds_dir (round 1's), ensemble_json (its weights and scores), truth_csv,
    raw_dir (the sample submission), submission_csv (round 1's), profile_dir (each model's <model>.batches.json),
    out_dir (data/pseudo), metrics_json and resume_dir (round 2's checkpoints, a folder per model)."""
    kept_note = f"{args.out_dir} and {args.metrics_json} are still the last run's."
    say_on_interrupt("pseudo", kept_note)
    settings = load_settings()
    if not settings.pseudo.enabled:
        with built_beside(args.out_dir) as out:
            write_csv(pd.DataFrame(columns=LABELS), out / "labels.csv")
        write_json(args.metrics_json, {"enabled": False})
        print(f"{args.metrics_json}: pseudo-labels are off (pseudo.enabled: false)")
        return
    # here, not at the top: the stage switched off reads nothing else (scipy, torch) and takes a second
    from paddy.data.prepare import read_index, read_labels
    from paddy.data.split import read_splits
    from paddy.predict.pseudo import choose_threshold, count_kept, error_at, oof_calibration, pseudo_labels

    labels = read_labels(args.prepared_dir)
    index = read_index(args.prepared_dir)
    train_truth = index[index.split == "train"][["image_id", "label"]]
    confidence, correct = oof_calibration(args.preds_dir, args.ensemble_json, labels, train_truth)
    chosen = settings.pseudo.threshold
    if chosen == "auto":
        threshold, _ = choose_threshold(confidence, correct, settings.pseudo.max_error)
        how = f"auto: the lowest whose out-of-fold rows are wrong at most {settings.pseudo.max_error} of the time"
    else:
        threshold, how = float(chosen), "pseudo.threshold"
    oof_kept, expected = error_at(confidence, correct, threshold) if threshold is not None else (0, None)
    splits = read_splits(args.split_csv)[1]
    kept = pseudo_labels(args.preds_dir, args.ensemble_json, labels, splits, threshold)
    truth = pd.read_csv(args.truth_csv, dtype=str, keep_default_na=False)
    figures = {"enabled": True, "threshold": threshold, "threshold_from": how, "expected_error": expected}
    figures["oof_rows_kept"] = oof_kept
    figures |= count_kept(kept, labels, truth)
    if figures["wrong"] is not None and figures["kept"]["total"]:
        figures["test_error"] = figures["wrong"]["total"] / figures["kept"]["total"]
    print(
        f"pseudo-labels: threshold {threshold} ({how}); {figures['kept']['total']} kept over {len(splits)} split(s), "
        f"expected error {expected}" + (f", {figures['wrong']['total']} wrong" if figures["wrong"] else "")
    )
    round1 = json.loads(Path(args.ensemble_json).read_text())
    with built_beside(args.out_dir) as out:
        write_csv(kept, out / "labels.csv")
        if len(kept):
            round2 = second_round(args, settings, kept, out)
        else:  # nothing confident enough: round 2 would be round 1 again
            print("no test image is confident enough: round 2 is round 1 (its submission and figures copied)")
            shutil.copy(args.submission_csv, out / "submission.csv")
            shutil.copy(args.ensemble_json, out / "ensemble.json")
            round2 = round1
    for key in ("oof_score", "test_score"):
        if key in round1:
            figures[key] = {"round1": round1[key]["ensemble"], "round2": round2[key]["ensemble"]}
    figures["metric"] = round1.get("metric")
    write_json(args.metrics_json, figures)
    shutil.rmtree(args.resume_dir, ignore_errors=True)  # every model is in out_dir now; DVC keeps it


def second_round(args, settings, kept, out):
    """Train, predict and ensemble every model of params.yaml again with each split's pseudo-labels `kept`, into
    `out` (models/, preds/, submission.csv, ensemble.json); the round-2 ensemble's metrics."""
    from paddy.data.competition import read_sample_submission
    from paddy.data.prepare import read_index, read_labels
    from paddy.data.split import read_splits
    from paddy.memory.profile import resolve_batches
    from paddy.predict.ensemble import build_ensemble
    from paddy.predict.submission import write_submission
    from paddy.predict.tables import write_table
    from paddy.predict.tta import predict_model
    from paddy.training.folds import train_model
    from paddy.training.gpus import claim_device
    from paddy.training.loop import Interrupted, stop_at_next_step_on_signals
    from paddy.training.model_checks import check_archs
    from paddy.training.model_data import with_pseudo
    from paddy.training.run import checkpoint_run, create_run

    check_archs(settings.models)
    device = claim_device()
    if settings.train.devices > 1:
        print(f"note: round 2 trains on one device ({device}), not train.devices ({settings.train.devices})")
    stop_at_next_step_on_signals()
    for name in settings.models:
        started = time.time()
        run = create_run(settings, name, device, args.prepared_dir, args.split_csv)
        run.micro_batch, run.eval_batch = resolve_batches(run, Path(args.profile_dir) / f"{name}.batches.json")
        run.data = with_pseudo(run.data, kept)
        run.on_epoch = _log(name, settings.train.frozen_epochs + settings.train.epochs)
        ckpt = out / "models" / name
        try:
            train_model(run, ckpt, Path(args.resume_dir) / name)
        except Interrupted as stop:
            print(
                f"\n{stop} after {(time.time() - started) / 60:.1f} min: round 2's checkpoint written to "
                f"{args.resume_dir}. Run `dvc repro pseudo` (or this command) again to continue from it.",
                file=sys.stderr,
            )
            sys.exit(130)
        test, oof = predict_model(checkpoint_run(settings, ckpt, device, args.prepared_dir, args.split_csv), ckpt)
        for kind, table in (("test", test), ("oof", oof)):
            write_table(out / "preds" / name, kind, table.ids, table.probs, table.classes)
    index = read_index(args.prepared_dir)
    sub, metrics, _ = build_ensemble(
        {name: model.weight for name, model in settings.models.items()},
        read_labels(args.prepared_dir),
        read_sample_submission(args.raw_dir, settings.competition),
        out / "preds",
        (
            index[index.split == "train"][["image_id", "label"]],
            pd.read_csv(args.truth_csv, dtype=str, keep_default_na=False),
        ),
        settings,
        read_splits(args.split_csv)[0],
    )
    write_submission(sub, out / "submission.csv")
    write_json(out / "ensemble.json", metrics)
    return metrics


def _log(name, epochs):
    def on_epoch(split, epoch, metrics):
        shown = ", ".join(f"{k} {v:.4g}" for k, v in metrics.items() if k not in ("epoch_time_s", "micro_batch"))
        print(f"{name} round 2 split {split} epoch {epoch + 1}/{epochs}: {shown}", flush=True)

    return on_epoch
