"""Test-time augmentation: n passes with the training augmentation blended with one plain pass (fastai's tta)."""

import pandas as pd
import torch

from paddy.data.loaders import ItemDataset, create_loader, open_items, resolve_workers
from paddy.data.split import read_splits
from paddy.settings.parse import as_hw
from paddy.training.augment import create_augment
from paddy.training.checkpoints import checkpoint_normalization, load_checkpoint, read_meta
from paddy.training.step import predict_chunked, stream_seeds


def blend(augmented, plain, beta):
    """beta x plain + (1 - beta) x mean of the augmented passes: fastai's torch.lerp(aug, plain, beta)."""
    return torch.lerp(augmented, plain, beta)


@torch.no_grad()
def tta_probs(model, loader, augment, n, beta, precision, seed=0, sizes=None):
    """The blended disease probabilities, one row per item, as a float32 CPU tensor.

    Each batch of items crosses to the device once and every pass runs on it there: the plain one, then n augmented
    ones, each batch and pass with its own seed (repeatable, whatever the number of workers). A multi-target model
    (sizes: outputs per target) contributes its disease outputs, the first.
    """
    model.eval()
    device = next(model.parameters()).device
    generator = torch.Generator(device)
    classes = sizes[0] if sizes else None
    out = []
    for b, (items, _) in enumerate(loader):
        items = items.to(device, non_blocking=True)
        probs = predict_chunked(model, items, augment, precision, sizes=sizes)[:, :classes]
        if n:
            augmented = torch.zeros_like(probs)
            for i in range(n):
                generator.manual_seed(stream_seeds(seed, i, b)[0])
                draws = augment.draw(items, generator)
                augmented += predict_chunked(model, items, augment, precision, draws, sizes)[:, :classes]
            probs = blend(augmented / n, probs, beta)
        out.append(probs)
    return torch.cat(out).cpu()


def predict_model(params, index, prepared_dir, split_csv, ckpt_dir, device, precision):
    """TTA probabilities of one model: the test set averaged over its folds/bags, and each split's validation rows.

    Returns (test, oof) DataFrames with image_id then one column per label. Out-of-fold rows that validate in
    several bags (bagging) are averaged over them; rows that never validate are absent.
    """
    meta = read_meta(ckpt_dir)
    labels, tta = meta["labels"], params["tta"]
    sizes = tuple(len(classes) for classes in meta["targets"].values())
    table, splits = read_splits(split_csv)
    test = index[(index.split == "test") & index.ok]
    workers = resolve_workers(params["train"]["workers"], device)
    item_size = as_hw(meta["item_size"])

    def loader(paths, rows=None):
        items = open_items(prepared_dir, index, paths, item_size, meta["item_method"], workers)
        rows = range(len(paths)) if rows is None else rows
        return create_loader(ItemDataset(items, rows, [-1] * len(rows)), meta["eval_batch"], device, workers=workers)

    test_loader = loader(test.path.tolist())
    train_paths = [f"images/train/{i}" for i in table.image_id]  # the same item array training used
    augment = create_augment(as_hw(meta["size"]), params["train"]["aug"], checkpoint_normalization(meta))
    test_sum, oof_parts = None, []
    for s, col in enumerate(splits):
        model, _ = load_checkpoint(ckpt_dir, col, device)
        seed = params["seed"] + 1000 * s
        p = tta_probs(model, test_loader, augment, tta["n"], tta["beta"], precision, seed, sizes)
        test_sum = p if test_sum is None else test_sum + p
        valid = (table[col] == 1).to_numpy().nonzero()[0]
        oof = tta_probs(model, loader(train_paths, valid), augment, tta["n"], tta["beta"], precision, seed + 1, sizes)
        oof_parts.append(pd.DataFrame(oof.numpy(), columns=labels).assign(image_id=table.image_id.to_numpy()[valid]))
    test_probs = pd.DataFrame((test_sum / len(splits)).numpy(), columns=labels)
    test_probs.insert(0, "image_id", test.image_id.to_numpy())
    oof = pd.concat(oof_parts).groupby("image_id", sort=False)[labels].mean().reset_index()
    return test_probs, oof
