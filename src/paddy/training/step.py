"""The one training step, its accumulation and its seeds: training, the memory profile and every benchmark call it.

An optimizer step takes a whole effective batch of uint8 items, moves it to the device once, then for each
micro-batch: augments it on the device, runs forward under autocast and backward with the loss scaled by the
micro-batch's share of the step's samples (so the gradient is the full batch's whatever the accumulation), and
finally steps the optimizer. The losses are summed on the device: nothing waits for the GPU until an epoch ends.
With train.mixup or train.cutmix on, each augmented micro-batch is mixed (timm.data.Mixup) and trains on soft targets.
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
from timm.data.mixup import Mixup, mixup_target
from timm.loss import SoftTargetCrossEntropy
from timm.utils import ModelEmaV3

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


def mix_seed(seed, epoch, step):
    """The seed of a step's third stream, mixup's and CutMix's draws (stream_seeds' two come first)."""
    return int(np.random.SeedSequence([seed, epoch, step]).generate_state(3)[2])


def seed_step(generator, seed, epoch, step):
    """Seed the augmentation's generator, torch's global RNG (dropout, drop-path) and numpy's global RNG (timm's
    Mixup draws its lambda, its choice of CutMix and its box from it) for one training step."""
    augment, dropout = stream_seeds(seed, epoch, step)
    generator.manual_seed(augment)
    torch.manual_seed(dropout)
    np.random.seed(mix_seed(seed, epoch, step))


@dataclass(frozen=True)
class Heads:
    """What a model's outputs mean: the classes of each target, the label's first (sizes), and whether the label is a
    set of tags (multi_label: one sigmoid per tag, as fastai's MultiCategoryBlock) rather than one class (softmax)."""

    sizes: tuple
    multi_label: bool = False


def target_loss(logits, targets, heads=None, smoothing=0.0):
    """Cross-entropy of the label; with several targets (targets (B, T), outputs split by heads.sizes), the seed's
    multi-target loss: the sum of each target's cross-entropy over its slice of the outputs. Multi-label (targets
    (B, C) of 0/1): binary cross-entropy of each tag's logit, averaged over images and tags, fastai's
    BCEWithLogitsLossFlat (tests/training/test_fastai_multi_label_parity.py). Float targets (B, sum of the sizes)
    are a mixed batch's soft targets (mix_batch): timm's SoftTargetCrossEntropy of each target's slice, summed.
    smoothing: label smoothing of class-index targets (F.cross_entropy's; a mixed batch's soft targets hold theirs)."""
    if heads is not None and heads.multi_label:
        return F.binary_cross_entropy_with_logits(logits.float(), targets.float())
    if targets.is_floating_point():
        sizes = list(heads.sizes) if heads is not None else [logits.shape[1]]
        soft = zip(logits.split(sizes, dim=1), targets.split(sizes, dim=1))
        return sum(SoftTargetCrossEntropy()(part, target) for part, target in soft)
    if targets.dim() == 1:
        return F.cross_entropy(logits, targets, label_smoothing=smoothing)
    parts = enumerate(logits.split(list(heads.sizes), dim=1))
    return sum(F.cross_entropy(part, targets[:, t], label_smoothing=smoothing) for t, part in parts)


def output_probs(logits, heads=None):
    """Probabilities of float32 logits: softmax over the label's classes (each target's slice on its own for
    several targets, the label first), or each tag's sigmoid for a multi-label model."""
    if heads is not None and heads.multi_label:
        return logits.sigmoid()
    if heads is None or len(heads.sizes) == 1:
        return logits.softmax(dim=1)
    return torch.cat([part.softmax(dim=1) for part in logits.split(list(heads.sizes), dim=1)], dim=1)


@dataclass(frozen=True)
class Mixing:
    """Mixup, CutMix and label smoothing of the training step (train.mixup, cutmix, mix_prob, label_smoothing).

    timm.data.Mixup in batch mode: at each optimizer step, with probability `prob`, one lambda ~ Beta(alpha, alpha)
    (mixup or CutMix, half and half when both are on) mixes every image with its mirror in the micro-batch
    (x.flip(0)), and each target's one-hot (smoothed) likewise. The draws come from numpy's global RNG, which
    seed_step seeds for each step, and every micro-batch of the step makes the same ones: the same lambda and box
    whatever the split. The pairs are within a micro-batch, though, so accumulation (1 x 32 or 2 x 16) changes which
    images are mixed together."""

    mixup: float = 0.0  # alpha of mixup's beta distribution; 0: off
    cutmix: float = 0.0  # alpha of CutMix's; 0: off
    prob: float = 1.0  # share of steps mixed
    smoothing: float = 0.0

    @classmethod
    def of(cls, train):
        """The mixing of TrainSettings `train`; None when it mixes and smooths nothing (the step as it always was)."""
        mixing = cls(train.mixup, train.cutmix, train.mix_prob, train.label_smoothing)
        return mixing if mixing.mixes or mixing.smoothing > 0 else None

    @property
    def mixes(self):
        return self.mixup > 0 or self.cutmix > 0

    def mixer(self):
        return Mixup(
            mixup_alpha=self.mixup, cutmix_alpha=self.cutmix, prob=self.prob, switch_prob=0.5, mode="batch",
            label_smoothing=self.smoothing,
        )  # fmt: skip


def mix_batch(mixer, x, targets, sizes, draws):
    """Mix a micro-batch in place with timm's Mixup (batch mode: x with x.flip(0)) and return its soft targets,
    (B, sum of sizes): each target's smoothed one-hot mixed with the same lambda and pairing (timm's mixup_target).

    targets: (B,) class indices, or (B, T) for T targets of `sizes` classes. draws: numpy's global RNG state at the
    step's start (np.random.get_state()), restored first, so that every micro-batch of a step draws the same lambda,
    the same choice of CutMix and the same box."""
    np.random.set_state(draws)
    lam = mixer._mix_batch(x)  # batch mode's mixing of the images, without __call__'s even-batch assertion
    columns = targets[:, None] if targets.dim() == 1 else targets
    parts = [mixup_target(columns[:, t], n, lam, mixer.label_smoothing) for t, n in enumerate(sizes)]
    return torch.cat(parts, dim=1)


@dataclass(frozen=True)
class Step:
    """How each optimizer step of a run goes: fixed for the run but the micro-batch, which out-of-memory halves."""

    augment: BatchAugment
    precision: str
    micro_batch: int
    scaler: torch.amp.GradScaler | None = None  # fp16's
    heads: Heads | None = None  # a multi-target or multi-label model's outputs (None: one softmax target)
    shard: tuple | None = None  # (rank, world) under DDP
    mixing: Mixing | None = None  # mixup, CutMix, label smoothing (None: none)

    @classmethod
    def of(cls, train, augment, precision, micro_batch, scaler=None, heads=None, shard=None):
        """The step of a run trained with TrainSettings `train`: what training, lr_find and the memory profile run."""
        return cls(augment, precision, micro_batch, scaler, heads, shard, Mixing.of(train))


def create_ema(model, train):
    """The exponential moving average of the model's weights (train.ema: timm's ModelEmaV3 with its warmup, updated
    after every optimizer step by the loop), or None when train.ema is off. Its copy of the weights is as large as
    the model's: the memory profile counts it (paddy.memory.measure.exercise)."""
    return ModelEmaV3(model, decay=train.ema_decay, use_warmup=True) if train.ema else None


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

    step.mixing (Mixing): each micro-batch, once augmented, is mixed (mix_batch) and trains on its soft targets, or
    on label-smoothed class indices; the loss returned is then the mixed batch's.
    """
    augment, precision, micro_batch, scaler, heads, shard = (
        step.augment, step.precision, step.micro_batch, step.scaler, step.heads, step.shard,
    )  # fmt: skip
    mixing = step.mixing
    mixer = mixing.mixer() if mixing is not None and mixing.mixes else None
    smoothing = mixing.smoothing if mixing is not None else 0.0
    mix_draws = np.random.get_state() if mixer is not None else None  # seed_step's: each micro-batch starts from it
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
            if mixer is not None:  # Step.of gives the heads: their sizes are the classes of each target's one-hot
                y = mix_batch(mixer, x, y, heads.sizes, mix_draws)
            with autocast(device, precision):
                loss = target_loss(model(x), y, heads, smoothing)
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
