"""The training loop: fastai's fine_tune, phase by phase, epoch by epoch, over the one training step
(paddy.training.step).

A run can stop anywhere (a kill, Ctrl-C, a preempted machine) and continue where it was: after every epoch, and
every few minutes within one, a checkpoint (paddy.training.checkpoints) holds the weights, the optimizer and
grad-scaler state and the position (epoch, step). Every step draws its randomness from its own seed
(paddy.training.step.seed_step) and the loader's order depends only on (seed, epoch), so a resumed run repeats the
uninterrupted one exactly.
"""

import dataclasses
import signal
import time

import numpy as np
import torch
import torch.nn.functional as F

from paddy.console import progress as progress_bar
from paddy.errors import PaddyError
from paddy.metrics import LABEL_METRICS
from paddy.settings.schema import fbeta_of, tag_average
from paddy.tags import VALID_THRESHOLD, counts, fbeta_of_counts
from paddy.training import distributed
from paddy.training.archs import phase_sizes
from paddy.training.checkpoints import Checkpoint, Progress, Snapshots
from paddy.training.compile import CompileClock
from paddy.training.divergence import LossWatch, check_valid_loss
from paddy.training.models import set_frozen, set_input_size
from paddy.training.optim import create_optimizer
from paddy.training.precision import create_scaler
from paddy.training.schedule import position, recipe_phases, set_hyperparameters, size_stages
from paddy.training.step import (
    Step,
    accumulation,
    create_ema,
    free_cuda_cache,
    output_probs,
    predict_chunked,
    seed_step,
    shard_parts,
    train_step,
)
from paddy.training.swa import WeightAverage


class Interrupted(Exception):
    """SIGINT or SIGTERM arrived; the run stopped at a step boundary after writing a checkpoint."""


class StopSignals:
    """The SIGINT or SIGTERM received since install(), if any: the loop stops at the next step boundary, checkpoint
    written, instead of wherever the signal lands."""

    def __init__(self):
        self.received = None

    def install(self):
        def handler(signum, frame):
            self.received = signal.Signals(signum).name

        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, handler)


STOP = StopSignals()  # the process's one receiver: signal handlers are per process


def stop_at_next_step_on_signals():
    """SIGINT/SIGTERM end the run at the next step boundary, checkpoint written, instead of wherever they land."""
    STOP.install()


def train_one_epoch(model, loader, optimizer, phase, phase_epoch, progress, fit):
    """Run `progress.epoch` from `progress.step` to its end; returns its training loss and images/s.

    fit: the split's fixed parts (Fit: the run, seed, scaler, checkpoint, compile clock, loss watch).
    model: under DDP, the wrapped model (paddy.training.distributed.wrap); every rank gets the same batches and trains
    on its share of each (paddy.training.step.train_step), and the ranks stop together.
    """
    model.train()
    world, plain = distributed.world_size(), distributed.unwrap(model)
    shard = (distributed.rank(), world) if world > 1 else None
    steps, epoch = len(loader), progress.epoch
    device = next(model.parameters()).device
    generator = torch.Generator(device)
    loader.batch_sampler.set_epoch(epoch, start=progress.step)
    total = torch.tensor(progress.loss_sum, device=device)
    skipped = torch.tensor(progress.skipped, device=device)
    start, seconds = time.perf_counter(), progress.seconds
    steps_left = progress_bar(loader, f"epoch {epoch + 1} ({phase.name})", total=steps - progress.step, unit="step")
    for i, (items, targets) in enumerate(steps_left, start=progress.step):
        if fit.clock is not None:  # a compiled model: time its first steps (paddy.training.step.CompileClock)
            fit.clock.tick()
        while True:
            steps_of = accumulation(loader.batch_sampler.batch_size, progress.micro_batch)
            pos = position(phase_epoch * steps + i, phase.epochs * steps, steps_of)
            set_hyperparameters(optimizer, phase, pos)
            seed_step(generator, fit.seed, epoch, i)
            scale = _scale(fit.scaler)
            step = fit.step(progress.micro_batch, shard)
            try:
                loss = train_step(model, optimizer, items, targets, generator, step, distributed.no_sync(model))
                break
            except torch.OutOfMemoryError as e:
                if world > 1:  # the other ranks are inside the step's collectives: they cannot retry with this one
                    raise PaddyError(
                        f"Out of memory at epoch {epoch + 1}, step {i + 1} on rank {distributed.rank()} "
                        f"with micro-batch {progress.micro_batch}; with train.devices > 1 the micro-batch is not "
                        "halved on the fly. Lower models.<name>.micro_batch (or profile.budget_gb with auto) and run "
                        f"again: it resumes from the last checkpoint. ({str(e).splitlines()[0][:160]})"
                    ) from e
                _fall_back(optimizer, progress, fit.run.settings.profile.min_micro_batch, e, epoch, i)
        if fit.ema is not None:  # its warmup counts the run's optimizer steps, so a resumed run counts the same
            fit.ema.update(plain, step=epoch * steps + i + 1)
        loss = distributed.all_reduce_sum(loss)  # each rank's loss is its share of the batch's
        total += loss * len(items)
        skip = None
        if scale is not None:  # the scaler lowers its scale exactly when it skips a step; compared on the device
            skip = _scale(fit.scaler) < scale
            skipped += skip
        lr = max(group["lr"] for group in optimizer.param_groups)
        fit.watch.step(loss, epoch, i, steps, lr, skip)  # a NaN or infinite loss stops the run (Diverged)
        progress.step, progress.seen = i + 1, progress.seen + len(items)
        if fit.on_step is not None:
            fit.on_step(epoch, i, plain, optimizer)
        stop = STOP.received
        if world > 1 and distributed.any_rank(stop):  # torchrun signals every rank, but they may be steps apart
            stop = stop or "SIGTERM"
        save = fit.checkpoint is not None and (stop or fit.checkpoint.due())
        fit.watch.check(force=save)  # never a checkpoint of the weights a bad step made
        if save:
            progress.loss_sum, progress.seconds = total.item(), seconds + time.perf_counter() - start
            progress.skipped = int(skipped.item())
            fit.checkpoint.save(progress, plain, optimizer, fit.scaler, fit.ema, fit.average)
        if stop:
            raise Interrupted(stop)
    seconds += time.perf_counter() - start
    fit.watch.check(force=True)
    loss = (total / max(progress.seen, 1)).item()  # the epoch's only wait for the device
    metrics = {"train_loss": loss, "images_per_s": progress.seen / max(seconds, 1e-9)}
    if fit.scaler is not None:
        metrics["skipped_steps"] = int(skipped.item())
    return metrics


def _scale(scaler):
    """The grad scaler's current scale as a device tensor (no wait for the device), or None without a scaler."""
    if scaler is None:
        return None
    if scaler._scale is None:  # before its first step the scaler has not made its tensor yet
        return torch.tensor(scaler._init_scale)
    return scaler._scale.clone()


def _fall_back(optimizer, progress, floor, error, epoch, step):
    """Out of memory in a step: drop its partial gradients, halve the micro-batch (the effective batch, so the
    optimization, stays the same) and let the step run again from its start, same seed, same draws."""
    optimizer.zero_grad(set_to_none=True)
    free_cuda_cache()
    half = progress.micro_batch // 2
    if half < floor:
        raise PaddyError(
            f"Out of memory at epoch {epoch + 1}, step {step + 1} with micro-batch {progress.micro_batch}, and "
            f"halving it would go below profile.min_micro_batch ({floor}). Free the GPU of other processes, lower "
            f"the model's size, or lower profile.min_micro_batch. ({str(error).splitlines()[0][:160]})"
        ) from error
    note = f"out of memory at epoch {epoch + 1} step {step + 1}: micro-batch {progress.micro_batch} -> {half}"
    print(note, flush=True)
    progress.events.append(note)
    progress.micro_batch = half


def predict_batches(model, loader, augment, precision, heads=None, logits=False):
    """Probabilities (per target; per tag for a multi-label model) of each batch of `loader`, in order, on the
    device; or the logits."""
    model.eval()
    for items, _ in loader:
        yield predict_chunked(model, items, augment, precision, heads=heads, logits=logits)


def validate(model, loader, augment, precision, heads=None, names=("label",), metric=None):
    """valid_loss (summed over targets, like the training loss) and one accuracy per target: valid_acc for the
    label, valid_acc_<target> for the others; and valid_<metric> of the label, where `metric` (a paddy.metrics.Metric,
    the competition's) is not accuracy and the rows define it. A multi-label model (heads.multi_label) gets
    validate_tags' instead.

    Batch by batch: the loss and the right answers are summed on the device, and only what the metric reads is
    kept (the predicted classes, or the label's probabilities for a metric of probabilities), so validating 60,000
    images of 10,000 classes holds no [row, class] table unless the metric needs one."""
    if heads is not None and heads.multi_label:
        return validate_tags(model, loader, augment, precision, heads, metric)
    sizes = heads.sizes if heads is not None else None
    targets = loader.dataset.targets
    targets = targets[:, None] if targets.dim() == 1 else targets
    wanted = metric is not None and metric.name != "accuracy"
    loss_sums = right = None
    kept, seen = [], 0
    for probs in predict_batches(model, loader, augment, precision, heads):
        batch = targets[seen : seen + len(probs)].to(probs.device)
        seen += len(probs)
        parts = probs.split(list(sizes or [probs.shape[1]]), dim=1)
        losses = [F.nll_loss(p.clamp_min(1e-12).log(), batch[:, t], reduction="sum") for t, p in enumerate(parts)]
        hits = [(p.argmax(1) == batch[:, t]).sum() for t, p in enumerate(parts)]
        loss_sums = torch.stack(losses) if loss_sums is None else loss_sums + torch.stack(losses)
        right = torch.stack(hits) if right is None else right + torch.stack(hits)
        if wanted:
            kept.append((parts[0].argmax(1) if metric.name in LABEL_METRICS else parts[0]).cpu())
    loss_sums, right = (loss_sums / seen).tolist(), (right / seen).tolist()  # one wait for the device, at the end
    metrics = {("valid_acc" if t == 0 else f"valid_acc_{name}"): right[t] for t, name in enumerate(names)}
    if wanted:
        kept, y = torch.cat(kept).numpy(), targets[:, 0].numpy()
        score = metric.of_labels(y, kept) if metric.name in LABEL_METRICS else metric(y, kept.astype(np.float64))
        if score is not None:  # ROC AUC over a validation set of one class has none
            metrics[f"valid_{metric.name}"] = score
    return {"valid_loss": sum(loss_sums), **metrics}


def validate_tags(model, loader, augment, precision, heads, metric):
    """A multi-label model's validation: valid_loss, the binary cross-entropy the model trains on (fastai's
    BCEWithLogitsLossFlat: the mean over images and tags), valid_acc, fastai's accuracy_multi (the share of
    (image, tag) pairs predicted right), and valid_<metric>, the mean F-beta over images (or of the pairs pooled, for
    micro_f<beta>): both at 0.5, accuracy_multi's threshold (the ensemble fits the thresholds later, from the
    out-of-fold probabilities: a threshold setting here would retrain every model for a logged number). Each
    batch's sums only are kept, so no [row, tag] table is held."""
    targets = loader.dataset.targets
    loss = right = 0.0
    fbeta = seen = 0
    pooled = np.zeros(3)  # true positives, false positives, false negatives over every (image, tag) pair
    beta = fbeta_of(metric.name) if metric is not None else None
    for logits in predict_batches(model, loader, augment, precision, logits=True):
        y = targets[seen : seen + len(logits)].to(logits.device).float()
        seen += len(logits)
        probs = output_probs(logits, heads)
        # From the logits, as training's loss and fastai's: a float32 probability within 6e-8 of 1 rounds to 1, which
        # would cap a confidently wrong tag's loss at 15.9 (tests/training/test_fastai_multi_label_parity.py)
        loss += F.binary_cross_entropy_with_logits(logits, y, reduction="sum") / logits.shape[1]
        predicted = probs > VALID_THRESHOLD
        right += (predicted == y.bool()).float().mean(1).sum()
        if beta is not None:
            tp, fp, fn = counts(y.bool().cpu().numpy(), predicted.cpu().numpy(), axis=1)
            fbeta += fbeta_of_counts(tp, fp, fn, beta, nothing=1.0).sum()
            pooled += [tp.sum(), fp.sum(), fn.sum()]  # the same counts pooled, not counted again
    metrics = {"valid_loss": float(loss / seen), "valid_acc": float(right / seen)}
    if beta is not None:
        micro = tag_average(metric.name) == "micro"
        metrics[f"valid_{metric.name}"] = (
            float(fbeta_of_counts(*pooled, beta, nothing=0.0)) if micro else float(fbeta / seen)
        )
    return metrics


def _check_shards(loader, micro_batch):
    """Under DDP, fail before training when a batch (the short last one) cannot be shared by the ranks."""
    world = distributed.world_size()
    if world == 1:
        return
    sampler = loader.batch_sampler
    sizes = {sampler.batch_size} if sampler.drop_last else {sampler.batch_size, sampler.n % sampler.batch_size}
    for n in sizes - {0}:
        shard_parts(n, micro_batch, distributed.rank(), world)


@dataclasses.dataclass
class Fit:
    """The fixed parts of one split's fine_tune, which every epoch and step reads."""

    run: "TrainingRun"  # noqa: F821 (paddy.training.run, which imports this module)
    split: int  # the split's number: its seed is the run's seed + split
    scaler: torch.amp.GradScaler | None
    watch: LossWatch
    checkpoint: Checkpoint | None = None
    clock: CompileClock | None = None
    ema: object = None  # the weights' moving average (timm.utils.ModelEmaV3: paddy.training.step.create_ema)
    augment: object = None  # the current size stage's (paddy.training.augment.BatchAugment); None: the run's own
    average: WeightAverage | None = None  # train.swa_epochs'
    snapshots: Snapshots | None = None  # train.snapshots': the weights at the end of each cycle that names one
    epochs: int = 0  # of every stage and phase: the last one's end

    @property
    def seed(self):
        return self.run.settings.seed + self.split

    def step(self, micro_batch, shard=None):
        """The training step's settings at this micro-batch (paddy.training.step.Step)."""
        run = self.run
        augment = self.augment or run.data.augment
        return Step.of(run.train, augment, run.precision, micro_batch, self.scaler, run.heads, shard)

    def on_step(self, epoch, step, model, optimizer):
        if self.run.on_step is not None:
            self.run.on_step(self.split, epoch, step, model, optimizer)


def scored_model(model, ema):
    """The weights a split is judged by: validated after every epoch and saved at its end (so TTA'd and predicted
    with): the exponential moving average's with train.ema on (paddy.training.step.create_ema), else the model's."""
    return model if ema is None else ema.module


def training_stages(run, phases=None):
    """The run's size stages (paddy.training.schedule.Stage): with train.progressive, the recipe's phases
    (recipe_phases: fastai's fine_tune or sgdr's cycles) at each scaled size (paddy.training.archs.phase_sizes) over
    its progressive.epochs, then at the model's size over train.epochs; without, the one stage at the model's size.
    Snapshots are the last stage's cycles' only (an earlier one's weights are of another size). `phases`: one stage
    of these instead, at the model's size (lr-find's frozen phase)."""
    train, model = run.train, run.model
    if phases is not None:
        return size_stages([tuple(model.size)], [0], lambda n: phases)
    sizes = phase_sizes(model.arch, model.size, train.progressive.scales)
    epochs = [*train.progressive.epochs, train.epochs]
    stages = size_stages(sizes, epochs, lambda n: recipe_phases(train, n))
    for stage in stages[:-1]:
        stage.phases[:] = [dataclasses.replace(p, snapshot="") for p in stage.phases]
    return stages


def stage_at(stages, epoch):
    """The stage that runs `epoch` (counted over every stage; past the end: the last)."""
    end = 0
    for stage in stages:
        end += stage.epochs
        if epoch < end:
            return stage
    return stages[-1]


def fine_tune(run, model, loaders, split, checkpoint=None, clock=None, snapshots=None, phases=None):
    """fastai's fine_tune(train.epochs, train.lr, freeze_epochs=train.frozen_epochs, lr_mult=train.lr_mult), or the
    other train.recipe's phases (paddy.training.schedule.recipe_phases; `phases`: these instead, e.g. the frozen ones
    alone) of `model` on split number `split` of a run (paddy.training.run.TrainingRun), over loaders = (training
    loader, validation loader).

    One optimizer for every phase; each phase starts with Adam's state cleared, as fastai's Learner.freeze_to does
    (but a later cycle of recipe sgdr's fit: phase.fresh). snapshots: a paddy.training.checkpoints.Snapshots, which
    keeps the weights at the end of each phase that names a snapshot (train.snapshots). train.swa_epochs > 0: the
    weights at the ends of the last epochs are averaged (paddy.training.swa) into the final weights before the last
    epoch is validated, so its metrics are the average's.
    With train.progressive, the whole recipe runs once per size stage (training_stages), smallest first, on the
    same weights: a fixed-size model (ViT, Swin) is switched to each stage's size (set_input_size), and the batch
    augmentation's output with it; progress.epoch counts over every stage, so a resume lands in the stage it left.
    run.on_epoch(split, epoch, metrics) after each epoch (frozen ones included; on a resume, first for the epochs
    already done): train/valid loss, accuracies, time, images/s; run.on_step(split, epoch, step, model, optimizer)
    after every optimizer step. checkpoint: a paddy.training.checkpoints.Checkpoint to resume from and save to.
    clock: a compiled model's paddy.training.step.CompileClock, ticked at every step. Validation scores the
    competition's metric (run.metric) beside the loss and accuracy. Returns the Progress (history: the metrics).

    With train.ema, the average of the weights is what is validated (scored_model) and, at the end, what `model`
    holds: the split's final weights are the average's.

    Under DDP (paddy.training.distributed) every rank calls this with the same arguments; rank 0 alone validates (the
    other ranks wait at a barrier; their history holds the training metrics only) and writes checkpoints.
    """
    train, (train_loader, valid_loader) = run.train, loaders
    steps = len(train_loader)
    if steps == 0:
        raise PaddyError(
            f"The training split has {len(train_loader.dataset)} images, fewer than one optimizer step "
            f"(train.effective_batch = {train_loader.batch_sampler.batch_size}) with train.drop_last on: lower "
            "train.effective_batch, set train.drop_last: false, or use more data."
        )
    _check_shards(train_loader, run.micro_batch)
    device = next(model.parameters()).device
    optimizer = create_optimizer(model, train.weight_decay, train.lr_mult, train.lr_groups)
    scaler = create_scaler(run.precision, device)
    progress = Progress(run.micro_batch)
    stages = training_stages(run, phases)
    ema = create_ema(model, train)
    total, average = sum(stage.epochs for stage in stages), None
    if train.swa_epochs and stages[-1].phases[-1].name == "unfrozen":
        average = WeightAverage(model, total - train.swa_epochs)

    def to_saved_stage(saved):  # before its weights load: a ViT's position embeddings have that stage's shape
        # the stage of the epoch it was saved in: the next one's first, at step 0, is not begun (nor resized for)
        size = stage_at(stages, saved.epoch - (saved.step == 0)).size
        set_input_size(model, size, optimizer)
        if ema is not None:
            set_input_size(ema.module, size)

    if checkpoint is not None and (saved := checkpoint.load(model, optimizer, scaler, ema, average, to_saved_stage)):
        progress = saved
        for e, metrics in enumerate(progress.history):
            if run.on_epoch is not None:
                run.on_epoch(split, e, metrics)
    watch = LossWatch(device, fp16=scaler is not None)
    fit = Fit(run, split, scaler, watch, checkpoint, clock, ema, average=average, snapshots=snapshots, epochs=total)
    first = 0
    for stage in stages:
        if progress.epoch < first + stage.epochs:
            set_input_size(model, stage.size, optimizer)
            if ema is not None:  # the average's copy is resized alike (its position embeddings resampled)
                set_input_size(ema.module, stage.size)
            own = stage.size == tuple(run.model.size)  # the run's own augmentation at its own size, as without stages
            fit.augment = run.data.augment if own else run.data.augment.at(stage.size)
        first = _fine_tune_stage(run, model, (train_loader, valid_loader), stage, first, (progress, fit, optimizer))
    set_frozen(model, False)
    final = scored_model(model, ema)
    if final is not model:
        model.load_state_dict(final.state_dict())
    if checkpoint is not None:
        checkpoint.save(progress, model)  # done: the weights and the history, no optimizer state to keep
    return progress


def _fine_tune_stage(run, model, loaders, stage, first, state):
    """The phases of one size stage from epoch `first` on (those already done skipped); returns its end epoch."""
    (train_loader, valid_loader), (progress, fit, optimizer) = loaders, state
    steps, augment, names, scaler, checkpoint = (
        len(train_loader),
        fit.augment,
        run.model.targets,
        fit.scaler,
        fit.checkpoint,
    )
    for phase in stage.phases:
        end = first + phase.epochs
        if progress.epoch < end:
            set_frozen(model, phase.name == "frozen")
            net = distributed.wrap(model)  # after set_frozen: DDP reduces the parameters that require gradients
            if (progress.epoch, progress.step) == (first, 0) and phase.fresh:
                optimizer.state.clear()
        while progress.epoch < end:
            start, carried = time.perf_counter(), progress.seconds  # a resumed epoch's time before the stop
            metrics = train_one_epoch(net, train_loader, optimizer, phase, progress.epoch - first, progress, fit)
            if fit.average is not None:
                fit.average.epoch_end(progress.epoch)
                if progress.epoch == fit.epochs - 1:
                    fit.average.apply(train_loader, augment, fit, progress)
            if distributed.is_main():
                scored = scored_model(model, fit.ema)
                metrics.update(validate(scored, valid_loader, augment, run.precision, run.heads, names, run.metric))
                check_valid_loss(metrics, progress.epoch, steps)
            distributed.barrier()
            metrics["epoch_time_s"] = carried + time.perf_counter() - start
            metrics["micro_batch"] = progress.micro_batch
            progress.history.append(metrics)
            progress.epoch, progress.step, progress.loss_sum, progress.seen, progress.seconds, progress.skipped = (
                progress.epoch + 1, 0, 0.0, 0, 0.0, 0,
            )  # fmt: skip
            if phase.snapshot and progress.epoch == end and fit.snapshots is not None:
                fit.snapshots.take(phase.snapshot, scored_model(model, fit.ema), progress)
            if checkpoint is not None:
                checkpoint.save(progress, model, optimizer, scaler, fit.ema, fit.average)
            if run.on_epoch is not None:
                run.on_epoch(fit.split, progress.epoch - 1, metrics)
        first = end
    return first
