"""Test-time augmentation: n passes with the training augmentation blended with one plain pass (fastai's tta)."""

import numpy as np
import torch

from paddy.errors import PaddyError
from paddy.predict.tables import Table
from paddy.training.checkpoints import load_checkpoint, read_meta
from paddy.training.digests import members
from paddy.training.step import predict_chunked, stream_seeds


def blend(augmented, plain, beta):
    """beta x plain + (1 - beta) x mean of the augmented passes: fastai's torch.lerp(aug, plain, beta)."""
    return torch.lerp(augmented, plain, beta)


@torch.no_grad()
def tta_probs(model, loader, augment, tta, precision, seed=0, heads=None, every_target=False):
    """The blended label probabilities, one row per item, as a float32 CPU tensor; tta: the TTASettings (n
    augmented passes, beta the plain pass's weight).

    Each batch of items crosses to the device once and every pass runs on it there: the plain one, then n augmented
    ones, each batch and pass with its own seed (repeatable, whatever the number of workers). A multi-target model
    (heads.sizes: outputs per target) contributes its label outputs, the first; with every_target, every target's
    probabilities, side by side in its order (each blended alike: the label columns are the same either way).
    """
    n, beta = tta.n, tta.beta
    model.eval()
    device = next(model.parameters()).device
    generator = torch.Generator(device)
    classes = heads.sizes[0] if heads and not every_target else None
    out, start = None, 0  # filled batch by batch: 60,000 rows of 10,000 classes are held once, not twice
    for b, (items, _) in enumerate(loader):
        items = items.to(device, non_blocking=True)
        probs = predict_chunked(model, items, augment, precision, heads=heads)[:, :classes]
        if n:
            augmented = torch.zeros_like(probs)
            for i in range(n):
                generator.manual_seed(stream_seeds(seed, i, b)[0])
                draws = augment.draw(items, generator)
                augmented += predict_chunked(model, items, augment, precision, draws, heads)[:, :classes]
            probs = blend(augmented / n, probs, beta)
        if out is None:
            rows = len(loader.dataset) if hasattr(loader, "dataset") else sum(len(x) for x, _ in loader)  # or a list
            out = torch.empty((rows, probs.shape[1]), dtype=torch.float32)
        out[start : start + len(probs)] = probs.cpu()
        start += len(probs)
    return out if out is not None else torch.empty((0, 0))


def require_finite(tables, ckpt_dir, split, model):
    """Refuse NaN or infinite probabilities (weights that diverged) in any of `tables` before the ensemble averages
    them into NaN."""
    # a row holding a NaN or an infinity sums to one: no [row, class] mask of a 10,000-class table
    bad = sum(int((~torch.isfinite(t.sum(1))).sum()) for t in tables)
    if bad:
        raise PaddyError(
            f"{ckpt_dir}/{split}.safetensors gives NaN or infinite probabilities for {bad} of "
            f"{sum(len(t) for t in tables)} images: its weights hold NaN or infinity (a run that diverged, trained "
            f"before paddy stopped such runs). Retrain it, with a lower train.lr if it diverges again: `dvc repro -f "
            f"train@{model}`."
        )


def split_seed(seed, s):
    """The seed of split s's TTA passes over the test set (its validation rows take the next one): the tta stage's
    and `paddy predict`'s, so a photo gets the draws its test image got."""
    return seed + 1000 * s


def predict_model(run, ckpt_dir, each_split=False):
    """TTA probabilities of one model: the test set averaged over its folds/bags, and each split's validation rows.
    run: the model's checkpoint_run (paddy.training.run), with its data: the items, sizes and input normalisation
    are the checkpoint's (what the model was trained on), the augmentation settings.train.aug. Returns (test, oof)
    paddy.predict.tables.Table of one column per label. Out-of-fold rows that validate in several bags (bagging)
    are averaged over them, in the order they first validate; rows that never validate are absent. A split with
    snapshots (train.snapshots) averages its members first (paddy.training.digests.members: the snapshots and the
    final weights), each with the split's TTA seeds. each_split: also {split: Table} of each split's own test
    probabilities (pseudo-labels: a split's round-2 model learns only from labels its own round-1 model gave),
    returned third.
    """
    data, tta, labels = run.data, run.settings.tta, run.vocab["label"]
    meta = read_meta(ckpt_dir)
    test, test_loader = data.test_loader(run.eval_batch)
    test_sum, positions, oof_parts, per_split = None, [], [], {}
    for s, col in enumerate(data.splits):
        seed = split_seed(run.settings.seed, s)
        valid = data.rows(col)[1]
        valid_loader = data.loader(valid, run.eval_batch)
        p = oof = None
        for member in members(meta, col):
            model, _ = load_checkpoint(ckpt_dir, member, run.device)
            mp = tta_probs(model, test_loader, data.augment, tta, run.precision, seed, run.heads)
            mo = tta_probs(model, valid_loader, data.augment, tta, run.precision, seed + 1, run.heads)
            require_finite((mp, mo), ckpt_dir, member, run.name)
            p, oof = (mp, mo) if p is None else (p + mp, oof + mo)
        n = len(members(meta, col))
        p, oof = (p, oof) if n == 1 else (p / n, oof / n)
        if each_split:
            per_split[col] = Table(test.image_id.to_numpy(), p.numpy().copy(), labels)
        test_sum = p if test_sum is None else test_sum + p
        positions.append(valid)
        oof_parts.append(oof.numpy())
    rows, oof = average_rows(
        np.concatenate(positions), oof_parts[0] if len(oof_parts) == 1 else np.concatenate(oof_parts)
    )
    test_table = Table(test.image_id.to_numpy(), (test_sum / len(data.splits)).numpy(), labels)
    oof_table = Table(data.table.image_id.to_numpy()[rows], oof, labels)
    return (test_table, oof_table, per_split) if each_split else (test_table, oof_table)


def average_rows(positions, probs):
    """(each position once, in the order it first appears; the mean of its rows of probs)."""
    unique, first, inverse = np.unique(positions, return_index=True, return_inverse=True)
    if len(unique) == len(positions):  # kfold, or one bag: nothing to average
        return positions, probs
    sums = np.zeros((len(unique), probs.shape[1]), dtype=np.float64)
    np.add.at(sums, inverse, probs)
    means = (sums / np.bincount(inverse)[:, None]).astype(probs.dtype)
    order = np.argsort(first)
    return unique[order], means[order]
