"""The train@MODEL stage's work (stages/train.py parses its paths and calls train_stage): the DDP relaunch, the run,
the dvclive log with its ETA, the interruptions, and the swap of the finished outputs into place.

dvclive's metrics.json (a column group of `dvc exp show`) holds the model's figures over its splits and nothing
else: valid accuracy and loss (means), train time (total). Each split's figures per epoch are in dvclive's plots
folder, its final ones (batch sizes, events, times, peak memory on CUDA) in <live_dir>/run.json (kept out of the
model folder, whose hash tta depends on: times differ on every run), the learning curves (PNG, for `dvc plots
show`) in <live_dir>/learning_curves.png.

Interrupted (a kill, Ctrl-C, SIGTERM, a lost machine), the same command or `dvc repro` continues from the last
checkpoint in resume_dir: finished folds are restored, the interrupted one goes on from its last epoch or step."""

import contextlib
import shutil
import sys
import time
from pathlib import Path

from dvclive import Live
from paddy import charts
from paddy.errors import say_on_interrupt
from paddy.files import replace_dir, write_json
from paddy.memory.profile import resolve_batches
from paddy.settings import load_settings
from paddy.training import distributed
from paddy.training.divergence import Diverged
from paddy.training.folds import run_record, summary, train_model
from paddy.training.gpus import claim_device
from paddy.training.loop import Interrupted, stop_at_next_step_on_signals, training_stages
from paddy.training.model_checks import check_archs
from paddy.training.run import create_run
from paddy.training.step import accumulation


def train_stage(args):
    """Train args.model on every split of args.split_csv into args.out_dir, its log into args.live_dir.

    args: model, prepared_dir, split_csv, out_dir, live_dir, batches (profile@MODEL's batches.json) and resume_dir
    (the checkpoints an interrupted run continues from). With train.devices N > 1 the command starts itself again
    under torchrun as N DDP processes (paddy.training.distributed), which come back here."""
    kept = f"{args.out_dir} and {args.live_dir} are still the last finished run's."
    say_on_interrupt(f"train@{args.model}", kept)
    settings = load_settings()
    devices = settings.train.devices
    if distributed.wanted(devices) and not distributed.launched():
        sys.exit(distributed.relaunch(devices, sys.argv))
    check_archs(settings.models, scales=settings.train.progressive.scales)
    if not distributed.launched():
        device = claim_device()  # a GPU no other run holds (dvc queue -j N: one experiment per GPU), or the CPU
        return _train(args, settings, device)
    device = distributed.rank_device()
    with distributed.process_group(device):
        return _train(args, settings, device)


class EpochLog:
    """Each epoch's metrics into dvclive (rank 0) and the console, with the time left at the pace so far."""

    def __init__(self, live, name, epochs, splits):
        self.live, self.name, self.epochs, self.splits = live, name, epochs, splits  # epochs: of one split
        self.history = {}  # split -> each epoch's metrics (a resume replays the epochs already done first)
        self.done, self.seconds = 0, 0.0

    def __call__(self, split, epoch, metrics):
        self.live.step = epoch
        for key, value in metrics.items():
            self.live.log_metric(f"split{split}/{key}", value)
        self.history.setdefault(split, [])[epoch:] = [metrics]
        self.done += 1
        self.seconds += metrics["epoch_time_s"]
        left = (self.splits * self.epochs - self.done) * self.seconds / self.done
        shown = ", ".join(f"{k} {v:.4g}" for k, v in metrics.items() if k not in ("epoch_time_s", "micro_batch"))
        print(
            f"{self.name} split {split} epoch {epoch + 1}/{self.epochs}: {shown}; {left / 60:.1f} min left", flush=True
        )


def _train(args, settings, device):
    rank0 = distributed.is_main()  # rank 0 under DDP: it alone prints, logs and writes
    run = create_run(settings, args.model, device, args.prepared_dir, args.split_csv)
    run.micro_batch, run.eval_batch = resolve_batches(run, args.batches)  # params.yaml's, or the profile's for auto
    effective, world = settings.train.effective_batch, distributed.world_size()
    if rank0:
        shares = f" on each of {world} processes," if world > 1 else ""
        steps = accumulation(-(-effective // world), run.micro_batch)  # micro-batches per step on each process
        print(
            f"{args.model}: {device.type}, {run.precision}, micro-batch {run.micro_batch} x {steps}{shares} "
            f"accumulated to {effective} samples per step, eval batch {run.eval_batch}",
            flush=True,
        )
    stop_at_next_step_on_signals()
    started = time.time()
    # DVC leaves the last good model and metrics in place while this runs (persist, dvc.yaml): the new ones are built
    # beside them and swapped in once every split is done, so Ctrl-C, a kill or an error leaves them as they were.
    out_dir, live_dir = Path(f"{args.out_dir}.partial"), Path(f"{args.live_dir}.partial")
    if rank0:
        shutil.rmtree(out_dir, ignore_errors=True)  # an interrupted run's splits: its checkpoints are in resume_dir
    # dvcyaml=False: dvc.yaml declares these metrics and plots; letting dvclive rewrite dvc.yaml mid-run corrupts it
    logger = Live(live_dir, dvcyaml=False, save_dvc_exp=False, report=None) if rank0 else contextlib.nullcontext()
    with logger as live:
        epochs = sum(stage.epochs for stage in training_stages(run))  # every size's, with train.progressive
        log = EpochLog(live, args.model, epochs, len(run.data.splits))
        run.on_epoch = log if rank0 else None
        try:
            results = train_model(run, out_dir, args.resume_dir)
        except (Diverged, Interrupted) as stop:
            _stopped(stop, args, rank0, started)
        if not rank0:
            return
    # dvclive's own summary repeats each split's last epoch, and its step: the model's figures replace it
    write_json(live_dir / "metrics.json", summary(results))
    write_json(live_dir / "run.json", run_record(results, effective, run.eval_batch, world))
    charts.learning_curves(log.history, live_dir / "learning_curves.png", f"{args.model} ({run.model.arch})")
    replace_dir(out_dir, args.out_dir)
    replace_dir(live_dir, args.live_dir)
    if args.resume_dir is not None:
        shutil.rmtree(args.resume_dir, ignore_errors=True)  # every split is in out_dir now; DVC keeps it


def _stopped(stop, args, rank0, started):
    """A run that diverged (its error, rank 0's) or was interrupted (checkpoint written: exit 130)."""
    last = Path(args.out_dir).exists()  # persist: DVC did not delete it; this run did not touch it
    kept = f"{args.out_dir} and {args.live_dir} are still the last finished run's."
    if isinstance(stop, Diverged):
        if not rank0:  # every rank stops at the same step (the loss is all-reduced); rank 0 says so
            sys.exit(2)
        if last:
            stop.kept = kept
        raise stop
    if rank0:
        print(
            f"\n{stop} after {(time.time() - started) / 60:.1f} min: checkpoint written to {args.resume_dir}."
            f"{' ' + kept if last else ''} Run `dvc repro train@{args.model}` (or this command) again to continue "
            "from the checkpoint.",
            file=sys.stderr,
        )
    sys.exit(130)
