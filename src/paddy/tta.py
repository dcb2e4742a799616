"""Test-time augmentation: n passes with the training augmentation blended with one plain pass (fastai's tta)."""

import pandas as pd
import torch

from paddy.checkpoint import load_checkpoint, read_meta
from paddy.data import ImageDataset, create_loader, create_transforms
from paddy.device import seed_everything
from paddy.split import read_splits
from paddy.train import predict


def blend(augmented, plain, beta):
    """beta x plain + (1 - beta) x mean of the augmented passes: fastai's torch.lerp(aug, plain, beta)."""
    if augmented is None:
        return plain
    return torch.lerp(augmented, plain, beta)


def tta_probs(model, make_dataset, train_tf, eval_tf, n, beta, batch_size, device, precision, workers=0, seed=0):
    """make_dataset(transform) -> Dataset. Returns the blended probabilities, one row per item."""
    plain = predict(
        model, create_loader(make_dataset(eval_tf), batch_size, workers=workers, seed=seed), device, precision
    )
    if n == 0:
        return plain
    passes = []
    for i in range(n):
        seed_everything(seed + i)  # each augmented pass draws its own crops, repeatably
        loader = create_loader(make_dataset(train_tf), batch_size, workers=workers, seed=seed + i)
        passes.append(predict(model, loader, device, precision))
    return blend(torch.stack(passes).mean(0), plain, beta)


def predict_model(params, index, prepared_dir, split_csv, ckpt_dir, device, precision):
    """TTA probabilities of one model: the test set averaged over its folds/bags, and each split's validation rows.

    Returns (test, oof) DataFrames with image_id then one column per label. Out-of-fold rows that validate in
    several bags (bagging) are averaged over them; rows that never validate are absent.
    """
    meta = read_meta(ckpt_dir)
    labels, tta, train_cfg = meta["labels"], params["tta"], params["train"]
    table, splits = read_splits(split_csv)
    test = index[(index.split == "test") & index.ok]
    batch = 2 * meta["micro_batch"]
    test_sum, oof_parts = None, []
    for s, col in enumerate(splits):
        model, _ = load_checkpoint(ckpt_dir, col, device)
        train_tf, eval_tf = create_transforms(model, meta, train_cfg)

        def probs_for(paths, model=model, train_tf=train_tf, eval_tf=eval_tf, s=s):
            def make(tf):
                return ImageDataset(prepared_dir, paths, [-1] * len(paths), meta["item_size"], meta["item_method"], tf)

            return tta_probs(
                model,
                make,
                train_tf,
                eval_tf,
                tta["n"],
                tta["beta"],
                batch,
                device,
                precision,
                train_cfg["workers"],
                params["seed"] + 1000 * s,
            )

        p = probs_for(test.path.tolist())
        test_sum = p if test_sum is None else test_sum + p
        valid = table[table[col] == 1]
        oof = probs_for([f"images/train/{i}" for i in valid.image_id])
        oof_parts.append(pd.DataFrame(oof.numpy(), columns=labels).assign(image_id=valid.image_id.to_numpy()))
    test_probs = pd.DataFrame((test_sum / len(splits)).numpy(), columns=labels)
    test_probs.insert(0, "image_id", test.image_id.to_numpy())
    oof = pd.concat(oof_parts).groupby("image_id", sort=False)[labels].mean().reset_index()
    return test_probs, oof
