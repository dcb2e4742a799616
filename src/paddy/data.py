"""Datasets and transforms: a per-item resize (squish, crop or pad) on the CPU, then timm's train or eval transform."""

from pathlib import Path

import torch
from PIL import Image, ImageOps
from timm.data import create_transform, resolve_model_data_config
from torch.utils.data import DataLoader, Dataset

from paddy.params import as_hw


def resize_item(img, size, method):
    """fastai's Resize(size, method): squish ignores the aspect ratio, crop keeps it and cuts, pad letterboxes."""
    h, w = size
    if method == "squish":
        return img.resize((w, h), Image.Resampling.BICUBIC)
    if method == "crop":
        return ImageOps.fit(img, (w, h), Image.Resampling.BICUBIC)
    return ImageOps.pad(img, (w, h), Image.Resampling.BICUBIC, color=(0, 0, 0))


def create_transforms(model, model_cfg, train_cfg):
    """(train, eval) transforms at the model's size, with the model's own mean/std/interpolation from timm."""
    h, w = as_hw(model_cfg["size"])
    data_cfg = resolve_model_data_config(model)
    common = dict(
        input_size=(3, h, w), interpolation=data_cfg["interpolation"], mean=data_cfg["mean"], std=data_cfg["std"]
    )
    train = create_transform(
        is_training=True,
        scale=(train_cfg["min_scale"], 1.0),
        ratio=(3 / 4, 4 / 3),
        hflip=train_cfg["hflip"],
        vflip=train_cfg["vflip"],
        color_jitter=train_cfg["color_jitter"],
        **common,
    )
    evaluate = create_transform(is_training=False, crop_pct=1.0, crop_mode="squash", **common)
    return train, evaluate


class ImageDataset(Dataset):
    """Images listed by path (relative to root) with integer targets (-1 where unknown, e.g. the test set)."""

    def __init__(self, root, paths, targets, item_size, item_method, transform):
        self.root, self.paths, self.targets = Path(root), list(paths), list(targets)
        self.item_size, self.item_method, self.transform = as_hw(item_size), item_method, transform

    def __len__(self):
        return len(self.paths)

    def __getitem__(self, i):
        with Image.open(self.root / self.paths[i]) as im:
            img = resize_item(im.convert("RGB"), self.item_size, self.item_method)
        return self.transform(img), self.targets[i]


def create_loader(dataset, batch_size, shuffle=False, drop_last=False, workers=0, seed=0):
    """A seeded loader: shuffling and augmentation repeat exactly for the same seed (workers seed from it too)."""
    return DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=shuffle,
        drop_last=drop_last,
        num_workers=workers,
        generator=torch.Generator().manual_seed(seed),
        pin_memory=torch.cuda.is_available(),
        persistent_workers=workers > 0,
    )
