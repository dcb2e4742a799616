"""The one factory of a model's data: create_model_data builds, for one model's settings, the item array of the
split table's images, their targets, the augmentation (the model's input normalisation included) and the loaders
and models a split asks for. Training, TTA, the learning-rate finder, the tests and the benchmarks all start here,
so the chain items -> dataset -> loader -> model -> augmentation is written once."""

import dataclasses
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from paddy.data.loaders import ItemDataset, create_loader, open_items, resolve_workers
from paddy.data.prepare import read_index, read_targets
from paddy.data.split import read_splits
from paddy.settings import ModelSettings
from paddy.tags import tag_matrix
from paddy.training.augment import BatchAugment, create_augment
from paddy.training.models import create_model, input_normalization

OWN = "own"  # create_model_data's normalization: the one the model's settings call for (input_normalization)


def target_table(table, index, names, vocab, multi_label=False):
    """(N,) class indices for one target, (N, T) for several, in split-table order; a multi-label label's (N, C)
    0/1 uint8 tags (its `label` column: each image's tags, space-separated)."""
    rows = index[index.split == "train"].set_index("image_id").loc[table.image_id]
    if multi_label:
        return tag_matrix(rows["label"].tolist(), vocab["label"])
    columns = [rows[n].map({v: i for i, v in enumerate(vocab[n])}).to_numpy() for n in names]
    return columns[0] if len(columns) == 1 else np.stack(columns, 1)


@dataclass
class ModelData:
    """One model's data over the split table (rows in its order), on `device`."""

    model: ModelSettings
    device: torch.device
    prepared_dir: Path
    index: pd.DataFrame  # the prepared index (paddy.data.prepare)
    vocab: dict  # target -> its classes (labels/targets.json)
    table: pd.DataFrame  # the split table: image_id, then one 0/1 column per split (1: validation)
    splits: list  # its split columns
    targets: np.ndarray  # target_table's class indices, in the table's order
    items: str  # the item array of the table's images, in its order
    workers: int  # loader processes
    augment: BatchAugment
    # pseudo-labels (with_pseudo): each split's extra training rows, numbered after the table's; None: none
    extra_rows: dict | None = None
    item_rows: np.ndarray | None = None  # a row's position in `items` (with extra rows); None: the row itself

    @property
    def sizes(self):
        """Outputs per target, in the model's target order."""
        return tuple(len(self.vocab[n]) for n in self.model.targets)

    def rows(self, split):
        """(training rows, validation rows) of split column `split`."""
        is_valid = self.table[split].to_numpy() == 1
        train = (~is_valid).nonzero()[0]
        if self.extra_rows is not None:  # pseudo-labelled test images train; they never validate
            train = np.concatenate([train, self.extra_rows[split]])
        return train, is_valid.nonzero()[0]

    def loader(self, rows, batch_size, shuffle=False, drop_last=False, seed=0):
        """Batches of the items at `rows` with their targets."""
        items = rows if self.item_rows is None else self.item_rows[rows]
        dataset = ItemDataset(self.items, items, self.targets[rows])
        return create_loader(dataset, batch_size, self.device, shuffle, drop_last, self.workers, seed)

    def test_loader(self, batch_size):
        """(the test rows of the index, batches of their items, targets unknown: -1)."""
        test = self.index[(self.index.split == "test") & self.index.ok]
        items = self._open(test.path.tolist())
        return test, create_loader(
            ItemDataset(items, range(len(test)), [-1] * len(test)), batch_size, self.device, workers=self.workers
        )

    def create_model(self):
        """A fresh model for these targets, on the device (channels_last on CUDA); seed first for repeatable weights."""
        model = create_model(self.model.arch, sum(self.sizes), self.model.pretrained, self.model.head, self.model.size)
        model = model.to(self.device)
        return model.to(memory_format=torch.channels_last) if self.device.type == "cuda" else model

    def _open(self, paths):
        return open_items(
            self.prepared_dir, self.index, paths, self.model.item_size, self.model.item_method, self.workers
        )


def with_pseudo(data, kept):
    """`data` whose each split also trains on its pseudo-labelled test images: kept, a DataFrame of image_id, split
    and label (paddy.predict.pseudo.pseudo_labels). The item array holds the table's images, then each kept test
    image once; each split's kept rows get rows of their own after the table's (an image kept by two splits may
    carry two labels), split after split. Validation rows are the table's only. Single-target models."""
    if list(data.model.targets) != ["label"]:
        raise ValueError(f"pseudo-labels train single-target models only, not {list(data.model.targets)}")
    test = data.index[(data.index.split == "test") & data.index.ok].set_index("image_id")
    images = list(dict.fromkeys(kept["image_id"]))  # each kept image once, in its first split's order
    n = len(data.table)
    position = {image: n + i for i, image in enumerate(images)}
    classes = {label: k for k, label in enumerate(data.vocab["label"])}
    train = data.index[data.index.split == "train"].set_index("image_id")
    paths = train.loc[data.table.image_id, "path"].tolist() + test.loc[images, "path"].tolist()
    extra, start = {}, n
    for split in data.splits:
        count = int((kept["split"] == split).sum())
        extra[split], start = np.arange(start, start + count), start + count
    order = pd.concat([kept[kept["split"] == split] for split in data.splits])  # the rows' numbering
    return dataclasses.replace(
        data,
        items=data._open(paths),
        targets=np.concatenate([data.targets, order["label"].map(classes).to_numpy(dtype=data.targets.dtype)]),
        extra_rows=extra,
        item_rows=np.concatenate([np.arange(n), order["image_id"].map(position).to_numpy(dtype=np.int64)]),
    )


def model_augment(model, aug):
    """The augmentation of one model (ModelSettings): at its size, with the input normalisation its weights want."""
    return create_augment(model.size, aug, input_normalization(model.arch, model.pretrained))


def create_model_data(model, train, prepared_dir, split_csv, device, processes=1, normalization=OWN, multi_label=False):
    """The data of `model` (ModelSettings) for the split table at `split_csv`: its items (built once, then cached),
    targets (multi_label: each image's tags, 0/1) and augmentation (train.aug) on `device`. train.workers (auto or a
    number) are shared among `processes` (DDP's ranks on one machine). normalization: OWN, or a checkpoint's record
    of what its model was trained with (paddy.training.checkpoints.checkpoint_normalization), so that a model is
    always predicted with the input it was trained on."""
    index, vocab = read_index(prepared_dir), read_targets(prepared_dir)
    table, splits = read_splits(split_csv)
    workers = resolve_workers(train.workers, device, processes)
    aug = train.aug
    data = ModelData(
        model=model,
        device=device,
        prepared_dir=Path(prepared_dir),
        index=index,
        vocab=vocab,
        table=table,
        splits=splits,
        targets=target_table(table, index, model.targets, vocab, multi_label),
        items="",
        workers=workers,
        augment=model_augment(model, aug) if normalization == OWN else create_augment(model.size, aug, normalization),
    )
    train = index[index.split == "train"].set_index("image_id")
    data.items = data._open(train.loc[table.image_id, "path"].tolist())
    return data
