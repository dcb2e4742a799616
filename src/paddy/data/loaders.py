"""Loaders of uint8 items: whole batches read from the item array, shuffled by a permutation that depends only on
(seed, epoch), so a run can restart at any step of any epoch and see the same batches."""

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from paddy.data.items import load_items
from paddy.settings.preflight import usable_cores


def resolve_workers(workers, device, processes=1):
    """auto: every usable core feeds a GPU (shared among `processes` on one machine: DDP's ranks); on the CPU the
    model's own compute uses them, and reading items is a memory copy, so the main process loads."""
    if workers != "auto":
        return workers
    return max(1, min(usable_cores() // processes, 16)) if device.type == "cuda" else 0


class ItemDataset(Dataset):
    """Rows of an item array (opened lazily, so worker processes map the file instead of receiving a copy) with
    integer targets (-1 where unknown). Fetches whole batches: one fancy index per batch."""

    def __init__(self, items_path, rows, targets):
        self.items_path, self.rows = items_path, np.asarray(rows)
        targets = np.asarray(targets)
        # a multi-label model's 0/1 tags stay bytes: 140,000 images of 3,474 tags are 0.5 GB, not 4 GB of int64
        self.targets = (
            torch.as_tensor(targets) if targets.dtype == np.uint8 else torch.as_tensor(targets, dtype=torch.long)
        )
        self._items = None

    def __len__(self):
        return len(self.rows)

    def __getitems__(self, idx):
        if self._items is None:
            self._items = np.load(self.items_path, mmap_mode="r")
        idx = np.asarray(idx)
        return torch.from_numpy(self._items[self.rows[idx]]), self.targets[idx]


class EpochBatches(Sampler):
    """Batches of indices for one epoch: a permutation seeded by (seed, epoch) when shuffling, starting at batch
    `start` (resuming mid-epoch); drop_last leaves out the short last batch, as fastai's training loader does."""

    def __init__(self, n, batch_size, shuffle=False, drop_last=False, seed=0):
        self.n, self.batch_size, self.shuffle, self.drop_last, self.seed = n, batch_size, shuffle, drop_last, seed
        self.epoch, self.start = 0, 0

    def set_epoch(self, epoch, start=0):
        self.epoch, self.start = epoch, start

    def __len__(self):
        return self.n // self.batch_size if self.drop_last else -(-self.n // self.batch_size)

    def __iter__(self):
        if self.shuffle:
            order = torch.randperm(self.n, generator=torch.Generator().manual_seed(self.seed * 1000 + self.epoch))
        else:
            order = torch.arange(self.n)
        for b in range(self.start, len(self)):
            yield order[b * self.batch_size : (b + 1) * self.batch_size].tolist()


def _whole_batch(batch):
    return batch  # __getitems__ already returns the batch


def create_loader(dataset, batch_size, device, shuffle=False, drop_last=False, workers=0, seed=0):
    """A loader of (uint8 items (B, H, W, 3), targets) batches; pinned on CUDA so the copy to the GPU overlaps."""
    return DataLoader(
        dataset,
        batch_sampler=EpochBatches(len(dataset), batch_size, shuffle, drop_last, seed),
        collate_fn=_whole_batch,
        num_workers=workers,
        pin_memory=device.type == "cuda",
        persistent_workers=workers > 0,
        prefetch_factor=4 if workers > 0 else None,
    )


def item_files(index, paths):
    """[(path, md5)] for `paths`, the item cache's key material, from the prepared index."""
    md5 = dict(zip(index.path, index.md5))
    return [(p, md5[p]) for p in paths]


def open_items(prepared_dir, index, paths, item_size, item_method, workers):
    """The item array for `paths` (built once, then cached), as a path the datasets open."""
    items = load_items(prepared_dir, item_files(index, paths), item_size, item_method, max(workers, 1))
    return items.filename
