"""A diverging run stops: a NaN or infinite training loss ends the split at the step, in one paragraph, instead of
training for hours on NaN weights and handing TTA and the ensemble NaN probabilities (fastai's TerminateOnNaNCallback).

The losses stay on the device (the training loop waits for the GPU once an epoch): each step adds a few tensor ops,
and the device is asked whether a step went bad every CHECK_EVERY steps on CUDA, every step on the CPU (where asking
costs nothing), and always before a checkpoint is written and at the end of an epoch, so a checkpoint never holds
the weights a bad step made and a NaN run stops within CHECK_EVERY steps of its first NaN, at most one epoch.

fp16's grad scaler is the exception it has to be: an overflowing step (an infinite loss or gradient) is its signal
to halve the scale and skip the step, weights untouched. A non-finite loss on a step it skipped is its search,
and stops the run only after FP16_SKIPS of them in a row, when halving the scale no longer helps: the activations
themselves overflow fp16's range.
"""

import math
from collections import deque

import torch

from paddy.errors import PaddyError

CHECK_EVERY = 16  # steps between the watch's waits for the device, on CUDA
FP16_SKIPS = 24  # steps in a row fp16's grad scaler may skip on a non-finite loss: from 2**16, a scale under 2**-8
SHOWN = 5  # losses the message shows, up to the bad step


class Diverged(PaddyError):
    """The training (or validation) loss went NaN or infinite. The train stage fills in the model, split, precision
    and what stays."""

    def __init__(self, epoch, step, steps, losses, lr, skipped=0, what="training loss"):
        super().__init__()
        self.epoch, self.step, self.steps, self.losses, self.lr = epoch, step, steps, losses, lr
        self.skipped, self.what = skipped, what
        self.model, self.split, self.precision, self.base_lr, self.kept = None, None, None, None, ""

    def __str__(self):
        who = f"{self.model}, split {self.split}," if self.model else "The run"
        shown = ", ".join(f"{v:.4g}" for v in self.losses)
        if self.what == "training loss":
            where = f"at epoch {self.epoch + 1}, step {self.step + 1} of {self.steps} (learning rate {self.lr:.4g})"
            text = f"{who} diverged: the training loss is {self.losses[-1]:.4g} {where}; the losses up to it: {shown}. "
        else:
            text = (
                f"{who} diverged: the validation loss after epoch {self.epoch + 1} is {self.losses[-1]:.4g} (the "
                f"epoch's training loss {self.losses[0]:.4g}): the model predicts nothing usable. "
            )
        if self.skipped:
            text += (
                f"fp16's grad scaler had skipped the last {self.skipped} steps in a row, each with a non-finite loss: "
                "the activations overflow fp16's range whatever the scale. "
            )
        text += f"The run stopped there.{' ' + self.kept if self.kept else ''} Try a lower `train.lr`"
        if self.base_lr is not None:
            text += f" (now {self.base_lr:g})"
        if self.precision == "fp16":
            text += " or `train.precision: bf16` (fp32 on GPUs without bf16)"
        elif self.precision == "bf16":
            text += " or `train.precision: fp32`"
        return text + ", e.g. `dvc exp run -S train.lr=...` with a tenth of it (`paddy lr-find` suggests one)."


class LossWatch:
    """Watches every step's loss for a NaN or infinity; check() raises Diverged for the first bad step."""

    def __init__(self, device, fp16=False, every=None):
        self.every = every or (1 if device.type == "cpu" else CHECK_EVERY)  # steps between waits for the device
        self.fp16 = fp16
        self.first_bad = torch.full((), -1, dtype=torch.long, device=device)  # the first bad step's number, or -1
        self.streak = torch.zeros((), dtype=torch.long, device=device)  # fp16: non-finite skipped steps in a row
        self.bad_streak = torch.zeros((), dtype=torch.long, device=device)  # the streak at the first bad step
        self.recent = deque(maxlen=SHOWN + self.every)  # (number, epoch, step, steps, lr, loss on the device)
        self.count = 0

    def step(self, loss, epoch, step, steps, lr, skipped=None):
        """After each optimizer step: its mean loss (a device tensor), where it is, its rate, and (fp16) whether the
        grad scaler skipped it (a device bool). Queues device ops only."""
        loss = loss.detach().float()
        finite = torch.isfinite(loss)
        if self.fp16 and skipped is not None:
            self.streak = torch.where(finite, 0, self.streak + skipped.long())
            bad = (~finite & ~skipped) | (self.streak >= FP16_SKIPS)
        else:
            bad = ~finite
        first = bad & (self.first_bad < 0)
        self.first_bad = torch.where(first, self.count, self.first_bad)
        self.bad_streak = torch.where(first, self.streak, self.bad_streak)
        self.recent.append((self.count, epoch, step, steps, lr, loss))
        self.count += 1

    def check(self, force=False):
        """Raise Diverged if a step went bad (waits for the device): every step on the CPU, every CHECK_EVERY steps
        on CUDA, and whenever forced (before a checkpoint, at the end of an epoch)."""
        if not force and self.count % self.every:
            return
        bad = int(self.first_bad.item())
        if bad < 0:
            return
        upto = [r for r in self.recent if r[0] <= bad]
        _, epoch, step, steps, lr, _ = upto[-1]
        losses = [float(r[5].item()) for r in upto[-SHOWN:]]
        streak = int(self.bad_streak.item())
        raise Diverged(epoch, step, steps, losses, lr, streak if streak >= FP16_SKIPS else 0)


def check_valid_loss(metrics, epoch, steps):
    """After an epoch's validation: a NaN or infinite validation loss with a finite training loss (BatchNorm
    statistics gone bad) is a model that predicts nothing usable either."""
    loss = metrics.get("valid_loss", 0.0)
    if not math.isfinite(loss):
        train = metrics.get("train_loss", math.nan)
        raise Diverged(epoch, steps - 1, steps, [train, loss], math.nan, what="validation loss")
