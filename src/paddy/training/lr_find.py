"""fastai's lr_find on the real training step: an exponential sweep of the learning rate over optimizer steps, the
smoothed loss at each, and fastai's four suggestions (valley, slide, minimum / 10, steepest).

fastai 2.8 (`fastai/callback/schedule.py`, LRFinder and the suggestion functions; `fastai/learner.py`,
AvgSmoothLoss): the rate goes from start_lr to end_lr as start * (end / start) ** (i / num_it), the same for every
parameter group; the loss is smoothed with beta 0.98 and debiased; the sweep stops when the smoothed loss passes
4x its best (or is NaN); the suggestions read the sweep without its first tenth and last five points.
"""

import math

import numpy as np
import torch

from paddy.training.loop import fine_tune
from paddy.training.models import set_frozen
from paddy.training.optim import create_optimizer
from paddy.training.precision import create_scaler
from paddy.training.schedule import recipe_phases
from paddy.training.step import Step, seed_step, train_step


def sweep(run, model, loader, start_lr=1e-7, end_lr=10, num_it=100, unfrozen=False):
    """Train from the model's current weights at exponentially growing rates; returns (lrs, smoothed losses).

    The step is the run's (paddy.training.run.TrainingRun: augmentation, accumulation, precision, the summed loss of
    a multi-target model), on the body frozen like fine_tune's first phase when train.frozen_epochs > 0 (unless
    `unfrozen`: the whole model, as after train_frozen), with the optimizer its settings make. The model's weights
    are restored afterwards.
    """
    num_it = max(num_it, 6)
    saved = {k: v.detach().clone() for k, v in model.state_dict().items()}
    train = run.train
    set_frozen(model, train.frozen_epochs > 0 and not unfrozen)
    optimizer = create_optimizer(model, train.weight_decay, train.lr_mult, train.lr_groups)
    device = next(model.parameters()).device
    scaler = create_scaler(run.precision, device)
    step = Step.of(train, run.data.augment, run.precision, run.micro_batch, scaler, run.heads)
    generator = torch.Generator(device)
    model.train()
    lrs, losses, best, smooth, i, epoch = [], [], math.inf, 0.0, 0, 0
    while i < num_it:
        loader.batch_sampler.set_epoch(epoch)
        for items, targets in loader:
            lr = start_lr * (end_lr / start_lr) ** (i / num_it)
            for group in optimizer.param_groups:
                group["lr"] = lr
            seed_step(generator, run.settings.seed, epoch, i)
            loss = train_step(model, optimizer, items, targets, generator, step)
            smooth = 0.98 * smooth + 0.02 * loss.item()
            value = smooth / (1 - 0.98 ** (i + 1))
            lrs.append(lr)
            losses.append(value)
            i += 1
            best = min(best, value)
            if math.isnan(value) or value > 4 * best or i >= num_it:
                i = num_it
                break
        epoch += 1
    model.load_state_dict(saved)
    set_frozen(model, False)
    return np.array(lrs), np.array(losses)


def train_frozen(run, model, loaders):
    """2018 lesson 2's step before the finder: train the recipe's frozen phase (train.frozen_epochs, the training's
    own loop, paddy.training.loop.fine_tune, on split 0 with its seed) on loaders = (training, validation); returns
    its epochs' metrics ([] without frozen epochs: the model is left as it is)."""
    frozen = [phase for phase in recipe_phases(run.train) if phase.name == "frozen"]
    if not frozen:
        return []
    return fine_tune(run, model, loaders, 0, phases=frozen).history


def suggestions(lrs, losses, num_it=100):
    """fastai's suggestions: {name: (suggested lr, (lr, loss) of its point on the curve)}, read without the sweep's
    first tenth and last five points and from the first NaN on."""
    lrs, losses = np.asarray(lrs)[num_it // 10 : -5], np.asarray(losses)[num_it // 10 : -5]
    nan = np.flatnonzero(np.isnan(losses))
    if len(nan):
        lrs, losses = lrs[: nan[0]], losses[: nan[0]]
    if len(lrs) < 3:
        return {}
    return {"valley": valley(lrs, losses), "slide": slide(lrs, losses), "minimum": minimum(lrs, losses),
            "steep": steep(lrs, losses)}  # fmt: skip


def valley(lrs, losses):
    """The longest valley of the curve (its longest run of falling losses) and fastai's point in it, about half way."""
    n, lds, max_start, max_end = len(losses), [1] * len(losses), 0, 0
    for i in range(1, n):
        for j in range(i):
            if losses[i] < losses[j] and lds[i] < lds[j] + 1:
                lds[i] = lds[j] + 1
            if lds[max_end] < lds[i]:
                max_end, max_start = i, i - lds[i]
    sections = (max_end - max_start) / 3
    idx = max_start + int(sections) + int(sections / 2)
    return float(lrs[idx]), (float(lrs[idx]), float(losses[idx]))


def slide(lrs, losses, lr_diff=15, thresh=0.005, adjust_value=1.0):
    """fastai's interval slide rule: from the end, the rate where the loss's slope stops changing by > thresh."""
    grad = np.gradient(losses)
    r_idx, l_idx = -1, -1 - lr_diff
    local_min = lrs[l_idx] if -l_idx <= len(lrs) else lrs[0]
    while l_idx >= -len(losses) and abs(grad[r_idx] - grad[l_idx]) > thresh:
        local_min = lrs[l_idx]
        r_idx, l_idx = r_idx - 1, l_idx - 1
    suggestion = float(local_min) * adjust_value
    return suggestion, (suggestion, float(np.interp(np.log10(suggestion), np.log10(lrs), losses)))


def minimum(lrs, losses):
    lr_min = float(lrs[np.argmin(losses)])
    return lr_min / 10, (lr_min, float(losses[np.argmin(np.abs(lrs - lr_min))]))


def steep(lrs, losses):
    grads = (losses[1:] - losses[:-1]) / (np.log(lrs[1:]) - np.log(lrs[:-1]))
    lr = float(lrs[np.argmin(grads)])
    return lr, (lr, float(losses[np.argmin(np.abs(lrs - lr))]))


def plot(lrs, losses, found, path, skip_end=5):
    """fastai's plot_lr_find: loss against the rate on a log axis, each suggestion marked where fastai marks it (the
    minimum at the curve's lowest point, a tenth of which it suggests: "minimum/10" in the legend). The legend gives
    the suggested rate, as the console and the JSON do; returns the legend's lines."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot(lrs[:-skip_end] if skip_end else lrs, losses[:-skip_end] if skip_end else losses)
    for name, (suggested, (lr, loss)) in found.items():
        ax.plot(lr, loss, "o", label=f"{'minimum/10' if name == 'minimum' else name}: {suggested:.2e}")
    ax.set(xscale="log", xlabel="learning rate", ylabel="smoothed loss")
    legend = [t.get_text() for t in ax.legend(loc="best").get_texts()] if found else []
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return legend
