"""fastai's fine_tune as data: its phases, and the one-cycle learning-rate and momentum at any point of a phase.

fastai 2.8 (`fastai/callback/schedule.py`):

    def fine_tune(self, epochs, base_lr=2e-3, freeze_epochs=1, lr_mult=100, pct_start=0.3, div=5.0):
        self.freeze()
        self.fit_one_cycle(freeze_epochs, slice(base_lr), pct_start=0.99)      # div=25
        base_lr /= 2
        self.unfreeze()
        self.fit_one_cycle(epochs, slice(base_lr/lr_mult, base_lr), pct_start=pct_start, div=div)

`slice(lr)` gives the body lr/10 and the head lr; `slice(lo, hi)` the body lo and the head hi (two parameter groups).
fit_one_cycle anneals (cosine) from lr/div up to lr over pct_start of the phase, then down to lr/div_final (1e5),
while Adam's beta1 goes 0.95 -> 0.85 -> 0.95. fastai sets them before every batch from the fraction of the phase's
batches already done; with gradient accumulation a batch is a micro-batch, so an optimizer step uses the values set
before its last micro-batch.
"""

import math
from dataclasses import dataclass

DIV_FINAL = 1e5
MOMS = (0.95, 0.85, 0.95)


@dataclass(frozen=True)
class Phase:
    name: str  # frozen | unfrozen
    epochs: int
    lr: float  # the head's peak rate
    body_scale: float  # the body's peak rate relative to the head's
    div: float
    pct_start: float
    discriminative: bool  # slice(lo, hi): with train.lr_groups layers, the body's layers spread from lo up to hi


def fine_tune_phases(epochs, lr, frozen_epochs, lr_mult):
    """The phases of fastai's fine_tune(epochs, lr, freeze_epochs=frozen_epochs, lr_mult=lr_mult)."""
    phases = []
    if frozen_epochs:
        phases.append(Phase("frozen", frozen_epochs, lr, 0.1, div=25.0, pct_start=0.99, discriminative=False))
    phases.append(Phase("unfrozen", epochs, lr / 2, 1 / lr_mult, div=5.0, pct_start=0.3, discriminative=True))
    return phases


@dataclass(frozen=True)
class Stage:
    """Progressive resizing's unit (train.progressive): the recipe's phases, whole, at one input size."""

    size: tuple  # (height, width)
    phases: list  # of Phase

    @property
    def epochs(self):
        return sum(phase.epochs for phase in self.phases)


def size_stages(sizes, epochs, recipe_phases):
    """One Stage per size (paddy.training.archs.phase_sizes: the scaled ones, then the full one), each the recipe's
    phases over its epochs (progressive.epochs for the scaled sizes, then train.epochs): recipe_phases(epochs) gives
    them, e.g. fine_tune_phases with the other settings bound, so the one-cycle schedule restarts at every size as
    fastai's does when fine_tune is called again."""
    if len(sizes) != len(epochs):
        raise ValueError(f"{len(sizes)} sizes but {len(epochs)} epoch counts")
    return [Stage(tuple(size), recipe_phases(n)) for size, n in zip(sizes, epochs)]


def _cos(start, end, pos):
    return start + (1 + math.cos(math.pi * (1 - pos))) * (end - start) / 2


def _combined_cos(pct, start, middle, end, pos):
    if pos < pct:
        return _cos(start, middle, pos / pct)
    return _cos(middle, end, (pos - pct) / (1 - pct))


def lr_at(phase, pos):
    """The head's learning rate `pos` (0 <= pos < 1) of the way through `phase`."""
    return _combined_cos(phase.pct_start, phase.lr / phase.div, phase.lr, phase.lr / DIV_FINAL, pos)


def momentum_at(phase, pos):
    return _combined_cos(phase.pct_start, *MOMS, pos)


def set_hyperparameters(optimizer, phase, pos):
    """Every group's rate (the head's, or the body's: scaled, and spread over layers if asked) and Adam's beta1."""
    lr, mom = lr_at(phase, pos), momentum_at(phase, pos)
    for group in optimizer.param_groups:
        scale = 1.0
        if group["part"] == "body":
            scale = phase.body_scale * (group["layer_scale"] if phase.discriminative else 1.0)
        group["lr"] = lr * scale
        group["betas"] = (mom, group["betas"][1])


def position(step, steps, accumulation):
    """fastai's pct_train at an optimizer step's last micro-batch: micro-batches done before it / all of them."""
    return (step * accumulation + accumulation - 1) / (steps * accumulation)
