"""The one training step, its accumulation and its seeds: training, the memory profile and every benchmark call it.

An optimizer step takes a whole effective batch of uint8 items, moves it to the device once, then for each
micro-batch: augments it on the device, runs forward under autocast and backward with the loss scaled by the
micro-batch's share of the step's samples (so the gradient is the full batch's whatever the accumulation), and
finally steps the optimizer. The losses are summed on the device: nothing waits for the GPU until an epoch ends.
"""

import contextlib
import gc
import math
import os
import random
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from paddy.errors import PaddyError
from paddy.training.augment import BatchAugment, slice_draws
from paddy.training.precision import autocast, backward_mode


def accumulation(effective_batch, micro_batch):
    """Micro-batches per optimizer step. Accumulation counts samples, so a remainder makes a short last group."""
    return math.ceil(effective_batch / micro_batch)


def seed_everything(seed):
    """Same params, same numbers on the CPU: the DVC run-cache may restore outputs, so runs must repeat."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")


def stream_seeds(seed, epoch, step):
    """The seeds of a step's two random streams, (augmentation, dropout), derived from (seed, epoch, step).

    Every step draws from its own seeds, so a run resumed at any step repeats the uninterrupted one exactly, with no
    random-number state to save; and the two streams get different seeds (numpy's SeedSequence spreads them apart),
    so the crop an image gets says nothing about the dropout mask it meets.
    """
    augment, dropout = np.random.SeedSequence([seed, epoch, step]).generate_state(2)
    return int(augment), int(dropout)


def seed_step(generator, seed, epoch, step):
    """Seed the augmentation's generator and torch's global RNG (dropout, drop-path) for one training step."""
    augment, dropout = stream_seeds(seed, epoch, step)
    generator.manual_seed(augment)
    torch.manual_seed(dropout)


@dataclass(frozen=True)
class Heads:
    """What a model's outputs mean: the classes of each target, the label's first (sizes), and whether the label is a
    set of tags (multi_label: one sigmoid per tag, as fastai's MultiCategoryBlock) rather than one class (softmax)."""

    sizes: tuple
    multi_label: bool = False


def target_loss(logits, targets, heads=None):
    """Cross-entropy of the label; with several targets (targets (B, T), outputs split by heads.sizes), the seed's
    multi-target loss: the sum of each target's cross-entropy over its slice of the outputs. Multi-label (targets
    (B, C) of 0/1): binary cross-entropy of each tag's logit, averaged over images and tags, fastai's
    BCEWithLogitsLossFlat (tests/training/test_fastai_multi_label_parity.py)."""
    if heads is not None and heads.multi_label:
        return F.binary_cross_entropy_with_logits(logits.float(), targets.float())
    if targets.dim() == 1:
        return F.cross_entropy(logits, targets)
    return sum(F.cross_entropy(part, targets[:, t]) for t, part in enumerate(logits.split(list(heads.sizes), dim=1)))


def output_probs(logits, heads=None):
    """Probabilities of float32 logits: softmax over the label's classes (each target's slice on its own for
    several targets, the label first), or each tag's sigmoid for a multi-label model."""
    if heads is not None and heads.multi_label:
        return logits.sigmoid()
    if heads is None or len(heads.sizes) == 1:
        return logits.softmax(dim=1)
    return torch.cat([part.softmax(dim=1) for part in logits.split(list(heads.sizes), dim=1)], dim=1)


@dataclass(frozen=True)
class Step:
    """How each optimizer step of a run goes: fixed for the run but the micro-batch, which out-of-memory halves."""

    augment: BatchAugment
    precision: str
    micro_batch: int
    scaler: torch.amp.GradScaler | None = None  # fp16's
    heads: Heads | None = None  # a multi-target or multi-label model's outputs (None: one softmax target)
    shard: tuple | None = None  # (rank, world) under DDP


def train_step(model, optimizer, items, targets, generator, step, no_sync=None):
    """One optimizer step over a whole effective batch; returns its mean loss as a device tensor (no sync).

    items: (B, H, W, 3) uint8 at the item size; targets: (B,) class indices, (B, T) for T targets whose outputs
    have `step.heads.sizes`, or (B, C) 0/1 tags of a multi-label model. The step counts samples: each micro-batch's
    loss is weighted by its size / B, so 1 x 64, 2 x 32 and 4 x 16 give one 64-sample gradient, and a short last
    group is averaged over its real size (exact for models without BatchNorm).

    Under DDP (paddy.training.distributed), step.shard=(rank, world): every rank gets the whole batch and draws its
    augmentation (the same generator seed, so the same images as one process), then trains on its share only;
    weights of size x world / B make DDP's average of the ranks' gradients the whole batch's. no_sync: the DDP
    model's no_sync, entered for all but the last micro-batch, so gradients cross between ranks once per step.
    Returns this rank's share of the mean loss: the sum over ranks is the batch's.
    """
    augment, precision, micro_batch, scaler, heads, shard = (
        step.augment, step.precision, step.micro_batch, step.scaler, step.heads, step.shard,
    )  # fmt: skip
    device = next(model.parameters()).device
    n = len(items)
    draws = augment.draw(_like(items, device), generator)  # for the whole batch: the same images whatever the split
    if shard is None:
        world, parts = 1, [(start, min(start + micro_batch, n)) for start in range(0, n, micro_batch)]
    else:
        world, parts = shard[1], shard_parts(n, micro_batch, *shard)
    lo, hi = parts[0][0], parts[-1][1]
    items = items[lo:hi].to(device, non_blocking=True)  # only this rank's share crosses to the device
    targets = targets[lo:hi].to(device, non_blocking=True)
    total = torch.zeros((), device=device)
    for j, (start, stop) in enumerate(parts):
        local = no_sync() if no_sync is not None and j < len(parts) - 1 else contextlib.nullcontext()
        with local:
            x = augment.apply(items[start - lo : stop - lo], slice_draws(draws, start, stop))
            y = targets[start - lo : stop - lo]
            with autocast(device, precision):
                loss = target_loss(model(x), y, heads)
            scaled = loss * (len(x) * world / n)
            # The earlier micro-batches' gradients stay in .grad while the later ones run: that is the accumulation.
            with backward_mode(device, precision):
                (scaler.scale(scaled) if scaler is not None else scaled).backward()
        total += loss.detach() * len(x)
    if scaler is not None:  # fp16: unscale, skip the step if a gradient overflowed, adapt the scale
        scaler.step(optimizer)
        scaler.update()
    else:
        optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return total / n


def shard_parts(n, micro_batch, rank, world):
    """A rank's micro-batches of a batch of n samples, as [(start, stop)] in the batch's indices.

    Ranks take contiguous shares differing by at most one sample, each cut into the same number of micro-batches
    (of at most micro_batch samples): DDP reduces gradients once per backward and broadcasts BatchNorm buffers once
    per forward, so every rank must run as many of both or they wait on each other forever.
    """
    lo, hi = rank * n // world, (rank + 1) * n // world
    parts = math.ceil(math.ceil(n / world) / micro_batch)
    if n // world < parts:
        raise PaddyError(
            f"A batch of {n} samples cannot be split over {world} processes in {parts} micro-batches each: raise the "
            "micro-batch (models.<name>.micro_batch), lower train.devices, or set train.drop_last: true so that no "
            "short last batch is left."
        )
    size = hi - lo
    return [(lo + j * size // parts, lo + (j + 1) * size // parts) for j in range(parts)]


def _like(items, device):
    """A stand-in with the batch's shape on the device, holding no memory: what the draws need of the items."""
    return torch.empty((), dtype=items.dtype, device=device).expand(items.shape)


@torch.no_grad()
def predict_step(model, items, augment, precision, draws=None, heads=None, logits=False):
    """Probabilities (float32, on the device; output_probs) for a batch of uint8 items: the plain transform, or the
    training augmentation's `draws` (a TTA pass). logits: the float32 logits instead, for a loss computed from them
    as training's is (a multi-label validation: paddy.training.loop.validate_tags)."""
    device = next(model.parameters()).device
    items = items.to(device, non_blocking=True)
    x = augment.plain(items) if draws is None else augment.apply(items, draws)
    with autocast(device, precision):
        out = model(x).float()
    return out if logits else output_probs(out, heads)


def predict_chunked(model, items, augment, precision, draws=None, heads=None, logits=False):
    """predict_step, halving the batch on an out-of-memory error (another process on the card, fragmentation)
    until it fits; the draws are made for the whole batch, so the result does not depend on the split."""
    try:
        return predict_step(model, items, augment, precision, draws, heads, logits)
    except torch.OutOfMemoryError:
        if len(items) == 1:
            raise
        free_cuda_cache()
        half = len(items) // 2
        parts = [(0, half), (half, len(items))]
        return torch.cat(
            [predict_chunked(model, items[a:b], augment, precision, draws and slice_draws(draws, a, b), heads, logits)
             for a, b in parts]
        )  # fmt: skip


def free_cuda_cache():
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
