"""The training loop: fastai's fine_tune, phase by phase, epoch by epoch, over the one training step (paddy.step)."""

import math
import sys
import time

import torch
import torch.nn.functional as F
from tqdm import tqdm

from paddy.errors import PaddyError
from paddy.models import set_frozen
from paddy.schedule import fine_tune_phases, position, set_hyperparameters
from paddy.step import create_optimizer, predict_step, step_seed, train_step


def train_one_epoch(
    model, loader, optimizer, phase, phase_epoch, epoch, micro_batch, augment, precision, scaler, seed, on_step=None
):
    """One pass over `loader` (whole optimizer steps of train.effective_batch samples); loss and images/s.

    on_step(epoch, step, model, optimizer) after every optimizer step."""
    model.train()
    steps = len(loader)
    accumulation = math.ceil(loader.batch_sampler.batch_size / micro_batch)
    device = next(model.parameters()).device
    generator = torch.Generator(device)
    loader.batch_sampler.set_epoch(epoch)
    total, seen, start = torch.zeros((), device=device), 0, time.perf_counter()
    bar = tqdm(loader, desc=f"epoch {epoch + 1} ({phase.name})", leave=False, disable=not sys.stderr.isatty())
    for i, (items, targets) in enumerate(bar):
        set_hyperparameters(optimizer, phase, position(phase_epoch * steps + i, phase.epochs * steps, accumulation))
        generator.manual_seed(step_seed(seed, epoch, i))
        torch.manual_seed(step_seed(seed, epoch, i))
        loss = train_step(model, optimizer, items, targets, micro_batch, augment, generator, precision, scaler)
        total += loss * len(items)
        seen += len(items)
        if on_step is not None:
            on_step(epoch, i, model, optimizer)
    loss = (total / max(seen, 1)).item()  # the epoch's only wait for the device
    return {"train_loss": loss, "images_per_s": seen / (time.perf_counter() - start)}


def predict(model, loader, augment, precision, generator=None):
    """Softmax probabilities for every item of `loader`, in order, as a float32 CPU tensor (one sync at the end)."""
    model.eval()
    out = [predict_step(model, items, augment, precision, generator) for items, _ in loader]
    return torch.cat(out).cpu()


def validate(model, loader, augment, precision):
    probs = predict(model, loader, augment, precision)
    targets = loader.dataset.targets
    loss = F.nll_loss(probs.clamp_min(1e-12).log(), targets).item()
    return {"valid_loss": loss, "valid_acc": (probs.argmax(1) == targets).float().mean().item()}


def fine_tune(
    model, train_loader, valid_loader, cfg, micro_batch, augment, precision, seed, on_epoch=None, on_step=None
):
    """fastai's fine_tune(cfg.epochs, cfg.lr, freeze_epochs=cfg.frozen_epochs, lr_mult=cfg.lr_mult) (paddy.schedule).

    One optimizer for both phases; freezing and unfreezing clear Adam's state, as fastai's Learner.freeze_to does.
    on_epoch(epoch, metrics) after each epoch (frozen ones included): train/valid loss, accuracy, time, images/s;
    on_step(epoch, step, model, optimizer) after every optimizer step.
    """
    steps = len(train_loader)
    if steps == 0:
        raise PaddyError(
            f"The training split has {len(train_loader.dataset)} images, fewer than one optimizer step "
            f"(train.effective_batch = {train_loader.batch_sampler.batch_size}) with train.drop_last on: lower "
            "train.effective_batch, set train.drop_last: false, or use more data."
        )
    device = next(model.parameters()).device
    optimizer = create_optimizer(model, cfg["weight_decay"], cfg["lr_mult"], cfg["lr_groups"])
    scaler = torch.amp.GradScaler(device.type) if precision == "fp16" else None
    phases = fine_tune_phases(cfg["epochs"], cfg["lr"], cfg["frozen_epochs"], cfg["lr_mult"])
    epoch, metrics = 0, {}
    for phase in phases:
        set_frozen(model, phase.name == "frozen")
        optimizer.state.clear()
        for phase_epoch in range(phase.epochs):
            start = time.perf_counter()
            metrics = train_one_epoch(
                model,
                train_loader,
                optimizer,
                phase,
                phase_epoch,
                epoch,
                micro_batch,
                augment,
                precision,
                scaler,
                seed,
                on_step,
            )
            metrics.update(validate(model, valid_loader, augment, precision))
            metrics["epoch_time_s"] = time.perf_counter() - start
            if on_epoch is not None:
                on_epoch(epoch, metrics)
            epoch += 1
    set_frozen(model, False)
    return metrics
