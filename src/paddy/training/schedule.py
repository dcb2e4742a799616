"""The training recipes as data (train.recipe, recipe_phases): their phases, and the learning rate and momentum at any
point of a phase. fastai: 2022's fine_tune, one-cycle; sgdr: 2018's SGDR, cosine annealing with restarts.

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

sgdr, fastai 0.7 (the 2018 course, `old/fastai/sgdr.py` CosAnneal, `learner.py` fit): lesson 1/2's

    learn.fit(lr, frozen_epochs, cycle_len=1)                 # the body frozen: one-epoch cycles for the head
    learn.unfreeze()
    learn.fit(lrs, n_cycle, cycle_len=cycle_len, cycle_mult=cycle_mult)

with lrs = [lr/9, lr/3, lr] (here the body at lr/lr_mult, spread over train.lr_groups layers as slice(lo, hi) is,
and the head at lr). Cycle i lasts cycle_len * cycle_mult**i epochs; within a cycle of nb batches the rate at its
t-th batch is

    lr / 2 * (cos(pi * t / nb) + 1)

from lr at the cycle's start down to ~0 at its end, then back to lr. Momentum stays at 0.9 (Adam's beta1; 0.7 had no
momentum schedule). CosAnneal's warm-up (lr/100 over the first twentieth of the first cycle) is left out. t / nb is
fastai's position here too (`position`: micro-batches done before a step's last over the cycle's). A fit is one
optimizer: its cycles keep Adam's state; each fit (the frozen one, the unfrozen one) starts it afresh.
"""

import math
from dataclasses import dataclass

DIV_FINAL = 1e5
MOMS = (0.95, 0.85, 0.95)
SGDR_MOM = 0.9


@dataclass(frozen=True)
class Phase:
    name: str  # frozen | unfrozen
    epochs: int
    lr: float  # the head's peak rate
    body_scale: float  # the body's peak rate relative to the head's
    div: float
    pct_start: float
    discriminative: bool  # slice(lo, hi): with train.lr_groups layers, the body's layers spread from lo up to hi
    cosine: bool = False  # sgdr: one cycle of cosine annealing from lr to 0 (div, pct_start unused), momentum fixed
    fresh: bool = True  # a new fit: Adam's state cleared at the phase's start; False: a later cycle of the same fit
    snapshot: str = ""  # train.snapshots: the name its end's weights are kept under, a member of TTA (or "")


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


def recipe_phases(train, epochs=None):
    """The phases of train.recipe (fastai's fine_tune, or sgdr's cycles) for the TrainSettings `train`, over
    `epochs` unfrozen epochs (progressive resizing's stage; None: train.epochs)."""
    epochs = train.epochs if epochs is None else epochs
    if train.recipe == "sgdr":
        cycles = sgdr_cycles(train.cycle_len, train.cycle_mult, epochs)
        return sgdr_phases(train.lr, train.frozen_epochs, train.lr_mult, cycles, train.snapshots)
    return fine_tune_phases(epochs, train.lr, train.frozen_epochs, train.lr_mult)


def sgdr_cycles(cycle_len, cycle_mult, epochs):
    """The unfrozen cycles' epochs, cycle_len * cycle_mult**i, as many as reach `epochs` (settings.parse refuses
    epochs the cycles do not add up to exactly)."""
    cycles = []
    while sum(cycles) < epochs:
        cycles.append(cycle_len * cycle_mult ** len(cycles))
    return cycles


def sgdr_phases(lr, frozen_epochs, lr_mult, cycles, snapshots=False):
    """fastai 0.7's fit(lr, frozen_epochs, cycle_len=1) with the body frozen, then unfreeze() and one cycle of
    cosine annealing per entry of `cycles` (epochs), each a phase; with snapshots, every unfrozen cycle but the last
    (whose end is the final weights) is kept as snapshot<i>."""
    frozen = [
        Phase("frozen", 1, lr, 0.1, div=1.0, pct_start=0.0, discriminative=False, cosine=True, fresh=i == 0)
        for i in range(frozen_epochs)
    ]  # the body's norm layers, which fastai's freeze leaves trainable (models.set_frozen), at lr/10 as fine_tune's
    unfrozen = [
        Phase("unfrozen", n, lr, 1 / lr_mult, div=1.0, pct_start=0.0, discriminative=True, cosine=True, fresh=i == 0,
              snapshot=f"snapshot{i + 1}" if snapshots and i < len(cycles) - 1 else "")
        for i, n in enumerate(cycles)
    ]  # fmt: skip
    return frozen + unfrozen


def _cos(start, end, pos):
    return start + (1 + math.cos(math.pi * (1 - pos))) * (end - start) / 2


def _combined_cos(pct, start, middle, end, pos):
    if pos < pct:
        return _cos(start, middle, pos / pct)
    return _cos(middle, end, (pos - pct) / (1 - pct))


def lr_at(phase, pos):
    """The head's learning rate `pos` (0 <= pos < 1) of the way through `phase`."""
    if phase.cosine:
        return phase.lr / 2 * (math.cos(math.pi * pos) + 1)
    return _combined_cos(phase.pct_start, phase.lr / phase.div, phase.lr, phase.lr / DIV_FINAL, pos)


def momentum_at(phase, pos):
    if phase.cosine:
        return SGDR_MOM
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
