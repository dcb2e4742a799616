"""Stage train@MODEL: fine-tune one model on every fold/bag; checkpoints, dvclive metrics and learning curves.

dvclive's metrics.json (a column group of `dvc exp show`) holds the model's figures over its splits and nothing
else: valid accuracy and loss (means), train time (total). Each split's figures per epoch are in dvclive's plots
folder, its final ones (batch sizes, events, times, peak memory on CUDA) in <live_dir>/run.json (kept out of the
model folder, whose hash tta depends on: times differ on every run), the learning curves (PNG, for `dvc plots
show`) in <live_dir>/learning_curves.png.

Interrupted (a kill, Ctrl-C, SIGTERM, a lost machine), the same command or `dvc repro` continues from the last
checkpoint in --resume-dir: finished folds are restored, the interrupted one goes on from its last epoch or step.

With train.devices N > 1 the command starts itself again under torchrun as N DDP processes
(paddy.training.distributed)."""

import argparse
import contextlib
import shutil
import sys
import time
from pathlib import Path

from dvclive import Live
from paddy import charts
from paddy.data.prepare import read_targets
from paddy.data.split import read_splits
from paddy.errors import exit_on_error, say_on_interrupt
from paddy.files import replace_dir, write_json
from paddy.memory.profile import resolve_batches
from paddy.settings import load_settings
from paddy.training import distributed
from paddy.training.divergence import Diverged
from paddy.training.folds import run_record, summary, train_model
from paddy.training.gpus import claim_device
from paddy.training.loop import Interrupted, stop_at_next_step_on_signals
from paddy.training.model_checks import check_archs
from paddy.training.precision import resolve_precision
from paddy.training.step import accumulation


@exit_on_error
def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("model")
    parser.add_argument("prepared_dir")
    parser.add_argument("split_csv")
    parser.add_argument("out_dir")
    parser.add_argument("live_dir")
    parser.add_argument("--batches", type=Path, help="profile@MODEL's batch sizes, for auto")
    parser.add_argument("--resume-dir", type=Path, help="checkpoints to continue an interrupted run from")
    args = parser.parse_args()
    kept = f"{args.out_dir} and {args.live_dir} are still the last finished run's."
    say_on_interrupt(f"train@{args.model}", kept)
    settings = load_settings()
    devices = settings.train.devices
    if distributed.wanted(devices) and not distributed.launched():
        sys.exit(distributed.relaunch(devices, sys.argv))
    check_archs(settings.models)
    if distributed.launched():
        device = distributed.rank_device()
        with distributed.process_group(device):
            train(args, settings, device)
    else:
        device = claim_device()  # a GPU no other run holds (dvc queue -j N: one experiment per GPU), or the CPU
        train(args, settings, device)


def train(args, settings, device):
    rank0 = distributed.is_main()  # rank 0 under DDP: it alone prints, logs and writes
    precision = resolve_precision(settings.train.precision, device)
    vocab = read_targets(args.prepared_dir)
    micro, evals = resolve_batches(settings, args.model, args.batches, device, vocab)  # explicit values win
    effective = settings.train.effective_batch
    world = distributed.world_size()
    if rank0:
        shares = f" on each of {world} processes," if world > 1 else ""
        steps = accumulation(-(-effective // world), micro)  # micro-batches per step on each process
        print(
            f"{args.model}: {device.type}, {precision}, micro-batch {micro} x {steps}{shares} accumulated to "
            f"{effective} samples per step, eval batch {evals}",
            flush=True,
        )
    stop_at_next_step_on_signals()
    epochs = settings.train.frozen_epochs + settings.train.epochs
    splits = len(read_splits(args.split_csv)[1])
    started, done = time.time(), {"epochs": 0, "seconds": 0.0}
    history = {}  # split -> each epoch's metrics (a resume replays the epochs already done first)
    # DVC leaves the last good model and metrics in place while this runs (persist, dvc.yaml): the new ones are built
    # beside them and swapped in once every split is done, so Ctrl-C, a kill or an error leaves them as they were.
    out_dir, live_dir = Path(f"{args.out_dir}.partial"), Path(f"{args.live_dir}.partial")
    if rank0:
        shutil.rmtree(out_dir, ignore_errors=True)  # an interrupted run's splits: its checkpoints are in --resume-dir

    # dvcyaml=False: dvc.yaml declares these metrics and plots; letting dvclive rewrite dvc.yaml mid-run corrupts it
    logger = Live(live_dir, dvcyaml=False, save_dvc_exp=False, report=None) if rank0 else contextlib.nullcontext()
    with logger as live:

        def on_epoch(split, epoch, metrics):
            live.step = epoch
            for key, value in metrics.items():
                live.log_metric(f"split{split}/{key}", value)
            history.setdefault(split, [])[epoch:] = [metrics]
            done["epochs"] += 1
            done["seconds"] += metrics["epoch_time_s"]
            left = (splits * epochs - done["epochs"]) * done["seconds"] / done["epochs"]
            shown = ", ".join(f"{k} {v:.4g}" for k, v in metrics.items() if k not in ("epoch_time_s", "micro_batch"))
            print(
                f"{args.model} split {split} epoch {epoch + 1}/{epochs}: {shown}; {left / 60:.1f} min left", flush=True
            )

        try:
            results = train_model(
                settings, args.model, args.prepared_dir, args.split_csv, out_dir, (micro, evals), device,
                precision, on_epoch if rank0 else None, resume_dir=args.resume_dir,
            )  # fmt: skip
        except Diverged as e:
            if not rank0:  # every rank stops at the same step (the loss is all-reduced); rank 0 says so
                sys.exit(2)
            if Path(args.out_dir).exists():  # persist: DVC did not delete it; this run did not touch it
                e.kept = f"{args.out_dir} and {args.live_dir} are still the last finished run's."
            raise
        except Interrupted as stop:
            if not rank0:
                sys.exit(130)
            last = Path(args.out_dir).exists()  # persist: DVC did not delete it; this run did not touch it
            kept = f" {args.out_dir} and {args.live_dir} are still the last finished run's." if last else ""
            print(
                f"\n{stop} after {(time.time() - started) / 60:.1f} min: checkpoint written to {args.resume_dir}."
                f"{kept} Run `dvc repro train@{args.model}` (or this command) again to continue from the checkpoint.",
                file=sys.stderr,
            )
            sys.exit(130)
        if not rank0:
            return
    # dvclive's own summary repeats each split's last epoch, and its step: the model's figures replace it
    write_json(live_dir / "metrics.json", summary(results))
    write_json(live_dir / "run.json", run_record(results, effective, evals, world))
    title = f"{args.model} ({settings.model(args.model).arch})"
    charts.learning_curves(history, live_dir / "learning_curves.png", title)
    replace_dir(out_dir, args.out_dir)
    replace_dir(live_dir, args.live_dir)
    if args.resume_dir is not None:
        shutil.rmtree(args.resume_dir, ignore_errors=True)  # every split is in out_dir now; DVC keeps it


if __name__ == "__main__":
    main()
