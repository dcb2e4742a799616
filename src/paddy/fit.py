"""Train one model over every fold/bag of the shared split table, one checkpoint each."""

import time

import torch

from paddy.augment import create_augment
from paddy.checkpoint import save_checkpoint
from paddy.data import ItemDataset, create_loader, open_items, resolve_workers
from paddy.device import seed_everything
from paddy.models import create_model
from paddy.params import as_hw
from paddy.prepare import read_index, read_labels
from paddy.split import read_splits
from paddy.train import fine_tune


def train_model(
    name, params, prepared_dir, split_csv, out_dir, batches, device, precision, on_epoch=None, on_step=None
):
    """Fine-tune models.<name> on each split; on_epoch(split, epoch, metrics) after every epoch, on_step(split,
    epoch, step, model, optimizer) after every optimizer step. Returns the per-split final metrics.

    batches: (micro_batch, eval_batch), from params or the memory profile (paddy.profile.resolve_batches).
    """
    cfg, train_cfg = params["models"][name], params["train"]
    micro_batch, eval_batch = batches
    labels = read_labels(prepared_dir)
    table, splits = read_splits(split_csv)
    targets = table["label"].map({lab: i for i, lab in enumerate(labels)}).to_numpy()
    paths = [f"images/train/{i}" for i in table.image_id]
    workers = resolve_workers(train_cfg["workers"], device)
    items = open_items(
        prepared_dir, read_index(prepared_dir), paths, as_hw(cfg["item_size"]), cfg["item_method"], workers
    )
    augment = create_augment(cfg["arch"], as_hw(cfg["size"]), train_cfg["aug"])
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # fixed input sizes: let cuDNN time its kernels once and keep the best
    results = []
    for s, col in enumerate(splits):
        seed = params["seed"] + s
        seed_everything(seed)
        model = create_model(cfg["arch"], len(labels), cfg["pretrained"], cfg["head"]).to(device)
        if device.type == "cuda":
            model = model.to(memory_format=torch.channels_last)
        is_valid = table[col].to_numpy() == 1
        train_rows, valid_rows = (~is_valid).nonzero()[0], is_valid.nonzero()[0]
        train_loader = create_loader(
            ItemDataset(items, train_rows, targets[train_rows]),
            train_cfg["effective_batch"],
            device,
            shuffle=True,
            drop_last=train_cfg["drop_last"],
            workers=workers,
            seed=seed,
        )
        valid_loader = create_loader(ItemDataset(items, valid_rows, targets[valid_rows]), eval_batch, device)
        start = time.time()
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        metrics = fine_tune(
            model,
            train_loader,
            valid_loader,
            train_cfg,
            micro_batch,
            augment,
            precision,
            seed,
            on_epoch=None if on_epoch is None else (lambda e, m, s=s: on_epoch(s, e, m)),
            on_step=None if on_step is None else (lambda e, i, m, o, s=s: on_step(s, e, i, m, o)),
        )
        metrics["train_time_s"] = time.time() - start
        if device.type == "cuda":
            metrics["peak_memory_gb"] = torch.cuda.max_memory_reserved(device) / 2**30
        meta = {
            "model": name,
            "arch": cfg["arch"],
            "head": cfg["head"],
            "labels": labels,
            "splits": splits,
            "size": cfg["size"],
            "item_size": cfg["item_size"],
            "item_method": cfg["item_method"],
            "micro_batch": micro_batch,
            "eval_batch": eval_batch,
            "effective_batch": train_cfg["effective_batch"],
            "precision": precision,
        }
        save_checkpoint(model, meta, out_dir, col)
        results.append(metrics)
        del model, train_loader, valid_loader
        if device.type == "cuda":
            torch.cuda.empty_cache()  # free between folds so fragmentation never builds up (the seed's gc trick)
    return results
