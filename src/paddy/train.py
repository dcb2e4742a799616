"""The training loop: fastai's fine_tune schedule, gradient accumulation by sample count, mixed precision on CUDA."""

import time

import torch
import torch.nn.functional as F
from tqdm import tqdm

from paddy.device import autocast
from paddy.errors import PaddyError
from paddy.models import discriminative_param_groups, head_parameters, set_body_frozen


def to_device(x, device):
    # channels_last lets cuDNN use its fastest convolution kernels under mixed precision
    memory_format = torch.channels_last if device.type == "cuda" and x.dim() == 4 else torch.contiguous_format
    return x.to(device, non_blocking=True, memory_format=memory_format)


def accumulate_gradients(model, images, targets, micro_batch, device, precision="fp32", scaler=None):
    """Forward and backward one optimizer step's samples, `micro_batch` at a time; return their mean loss.

    Each micro-batch's mean loss is scaled by its share of the step's samples, so the summed gradient equals the
    gradient of the mean loss over all of them: one 64-sample step, whether it runs as 1 x 64, 2 x 32 or 4 x 16,
    and a short last group (fewer samples) is averaged over its real size. Exact for models without BatchNorm.
    """
    n = len(images)
    total = 0.0
    for x, y in zip(images.split(micro_batch), targets.split(micro_batch)):
        x, y = to_device(x, device), y.to(device, non_blocking=True)
        with autocast(device, precision):
            loss = F.cross_entropy(model(x), y)
        scaled = loss * (len(x) / n)
        (scaler.scale(scaled) if scaler is not None else scaled).backward()
        total += loss.item() * len(x)
    return total / n


def train_one_epoch(model, loader, optimizer, scheduler, micro_batch, device, precision="fp32", scaler=None, desc=""):
    """One pass over `loader`, whose batches are whole optimizer steps (train.effective_batch samples)."""
    model.train()
    total, seen = 0.0, 0
    for images, targets in tqdm(loader, desc=desc, leave=False, unit="step"):
        loss = accumulate_gradients(model, images, targets, micro_batch, device, precision, scaler)
        if scaler is not None:
            scaler.step(optimizer)
            scaler.update()
        else:
            optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        scheduler.step()
        total, seen = total + loss * len(images), seen + len(images)
    return total / max(seen, 1)


@torch.no_grad()
def predict(model, loader, device, precision="fp32"):
    """Softmax probabilities for every item of `loader`, in order, as a float32 CPU tensor."""
    model.eval()
    out = []
    for images, _ in loader:
        with autocast(device, precision):
            logits = model(to_device(images, device))
        out.append(logits.float().softmax(dim=1).cpu())
    return torch.cat(out)


def validate(model, loader, device, precision="fp32"):
    probs = predict(model, loader, device, precision)
    targets = torch.as_tensor(loader.dataset.targets)
    loss = F.nll_loss(probs.clamp_min(1e-12).log(), targets).item()
    return {"valid_loss": loss, "valid_acc": (probs.argmax(1) == targets).float().mean().item()}


def one_cycle(optimizer, max_lr, total_steps, pct_start):
    # fastai's fit_one_cycle: warm up from max_lr/25, anneal to max_lr/1e5, momentum (Adam's beta1) 0.95-0.85-0.95
    return torch.optim.lr_scheduler.OneCycleLR(
        optimizer,
        max_lr=max_lr,
        total_steps=total_steps,
        pct_start=pct_start,
        div_factor=25.0,
        final_div_factor=1e5,
        base_momentum=0.85,
        max_momentum=0.95,
    )


def fine_tune(model, train_loader, valid_loader, cfg, micro_batch, device, precision="fp32", on_epoch=None):
    """fastai's fine_tune(epochs, lr): `frozen_epochs` training only the head at lr (one-cycle, pct_start 0.99),
    then everything for `epochs` with discriminative rates lr/2/lr_mult (earliest layers) .. lr/2 (head).

    on_epoch(epoch, metrics) is called after each epoch (frozen ones included) with train/valid loss and accuracy.
    """
    steps = len(train_loader)
    if steps == 0:
        raise PaddyError(
            f"The training split has {len(train_loader.dataset)} images, fewer than one optimizer step "
            f"(train.effective_batch = {train_loader.batch_size}) with train.drop_last on: lower "
            "train.effective_batch, set train.drop_last: false, or use more data."
        )
    scaler = torch.amp.GradScaler("cuda") if precision == "fp16" else None
    phases = []
    if cfg["frozen_epochs"]:
        phases.append(("frozen", cfg["frozen_epochs"]))
    phases.append(("unfrozen", cfg["epochs"]))
    epoch = 0
    for phase, n_epochs in phases:
        set_body_frozen(model, phase == "frozen")
        if phase == "frozen":
            groups = [{"params": head_parameters(model), "lr_scale": 1.0}]
            lr, pct_start = cfg["lr"], 0.99
        else:
            groups = discriminative_param_groups(model, cfg["weight_decay"], cfg["lr_mult"])
            lr, pct_start = cfg["lr"] / 2, 0.3
        optimizer = torch.optim.AdamW(groups, lr=lr, weight_decay=cfg["weight_decay"], betas=(0.9, 0.99))
        scheduler = one_cycle(optimizer, [lr * g["lr_scale"] for g in groups], n_epochs * steps, pct_start)
        for _ in range(n_epochs):
            start = time.time()
            desc = f"epoch {epoch + 1}/{sum(n for _, n in phases)} ({phase})"
            train_loss = train_one_epoch(
                model, train_loader, optimizer, scheduler, micro_batch, device, precision, scaler, desc
            )
            metrics = {"train_loss": train_loss, **validate(model, valid_loader, device, precision)}
            metrics["epoch_time_s"] = time.time() - start
            if on_epoch is not None:
                on_epoch(epoch, metrics)
            epoch += 1
    set_body_frozen(model, False)
    return metrics
