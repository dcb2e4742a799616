"""Train one model over every fold/bag of the shared split table, one checkpoint each."""

import hashlib
import time
from pathlib import Path

import numpy as np
import torch

from paddy.data.loaders import ItemDataset, create_loader, open_items, resolve_workers
from paddy.data.prepare import read_index, read_targets
from paddy.data.split import read_splits
from paddy.settings.parse import as_hw
from paddy.training import distributed
from paddy.training.augment import model_augment
from paddy.training.checkpoints import save_checkpoint
from paddy.training.loop import fine_tune
from paddy.training.models import create_model, input_normalization
from paddy.training.precision import seed_everything
from paddy.training.resume import Checkpoint, run_dir, run_key
from paddy.training.step import maybe_compile

# What does not change a model: left out of the resume key (and of the train stage's params in dvc.yaml)
NOT_TRAINING = ("workers", "checkpoint_minutes")


def target_table(table, index, names, vocab):
    """(N,) class indices for one target, (N, T) for several, in split-table order."""
    rows = index[index.split == "train"].set_index("image_id").loc[table.image_id]
    columns = [rows[n].map({v: i for i, v in enumerate(vocab[n])}).to_numpy() for n in names]
    return columns[0] if len(columns) == 1 else np.stack(columns, 1)


def train_model(
    name,
    params,
    prepared_dir,
    split_csv,
    out_dir,
    batches,
    device,
    precision,
    on_epoch=None,
    on_step=None,
    resume_dir=None,
):
    """Fine-tune models.<name> on each split; on_epoch(split, epoch, metrics) after every epoch, on_step(split,
    epoch, step, model, optimizer) after every optimizer step. Returns each split's final metrics, train_time_s
    (the epochs' time, resumes included), micro_batch (after any out-of-memory fallback) and events.

    batches: (micro_batch, eval_batch), from params or the memory profile (paddy.memory.profile.resolve_batches).
    resume_dir: where checkpoints go (paddy.training.resume); a rerun after an interruption continues from them.
    Under DDP (paddy.training.distributed) every rank calls this alike; rank 0 alone writes, and returns full metrics.
    """
    cfg, train_cfg = params["models"][name], params["train"]
    micro_batch, eval_batch = batches
    index, vocab = read_index(prepared_dir), read_targets(prepared_dir)
    names = cfg["targets"]
    sizes = tuple(len(vocab[n]) for n in names)
    table, splits = read_splits(split_csv)
    targets = target_table(table, index, names, vocab)
    paths = [f"images/train/{i}" for i in table.image_id]
    workers = resolve_workers(train_cfg["workers"], device, distributed.local_world_size())
    items = open_items(prepared_dir, index, paths, as_hw(cfg["item_size"]), cfg["item_method"], workers)
    augment = model_augment(cfg, train_cfg["aug"])
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # fixed input sizes: let cuDNN time its kernels once and keep the best
    runs = None
    if resume_dir is not None:
        settings = {
            "seed": params["seed"],
            "train": {k: v for k, v in train_cfg.items() if k not in NOT_TRAINING},
            "model": {k: v for k, v in cfg.items() if k != "weight"},
            "batches": [micro_batch, eval_batch],
            "precision": precision,
            "device": device.type,
            "split": hashlib.sha256(table.to_csv(index=False).encode()).hexdigest(),
            "images": hashlib.sha256("".join(index.md5.fillna("")).encode()).hexdigest(),
        }
        # Rank 0 alone keeps the folder (and removes stale runs'); the others only name it
        runs = run_dir(resume_dir, settings) if distributed.is_main() else Path(resume_dir) / run_key(settings)
    results = []
    for s, col in enumerate(splits):
        seed = params["seed"] + s
        seed_everything(seed)
        model = create_model(cfg["arch"], sum(sizes), cfg["pretrained"], cfg["head"]).to(device)
        if device.type == "cuda":
            model = model.to(memory_format=torch.channels_last)
        clock = maybe_compile(model, train_cfg["compile"], device)
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
        progress = fine_tune(
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
            checkpoint=None if runs is None else Checkpoint(runs / f"{col}.pt", train_cfg["checkpoint_minutes"]),
            sizes=sizes,
            target_names=names,
            min_micro_batch=params["profile"]["min_micro_batch"],
            clock=clock,
        )
        result = {
            **progress.history[-1],
            "train_time_s": sum(m["epoch_time_s"] for m in progress.history),
            "wall_time_s": time.time() - start,  # this process's: less than train_time_s after a resume
            "micro_batch": progress.micro_batch,
            "events": progress.events,
        }
        if precision == "fp16":  # steps the grad scaler skipped on an overflow: a few at the start are its search
            result["skipped_steps"] = sum(m.get("skipped_steps", 0) for m in progress.history)
        if clock is not None and clock.compile_s is not None:
            result["compile_s"] = clock.compile_s
        if device.type == "cuda":
            result["peak_memory_gb"] = torch.cuda.max_memory_reserved(device) / 2**30
        meta = {
            "model": name,
            "arch": cfg["arch"],
            "head": cfg["head"],
            "labels": vocab["label"],
            "targets": {n: vocab[n] for n in names},
            "splits": splits,
            "size": cfg["size"],
            "item_size": cfg["item_size"],
            "item_method": cfg["item_method"],
            "micro_batch": progress.micro_batch,
            "eval_batch": eval_batch,
            "effective_batch": train_cfg["effective_batch"],
            "precision": precision,
            "normalization": input_normalization(cfg["arch"], cfg["pretrained"]),  # what TTA must feed it too
        }
        if distributed.is_main():
            save_checkpoint(model, meta, out_dir, col)
        results.append(result)
        del model, train_loader, valid_loader
        if device.type == "cuda":
            torch.cuda.empty_cache()  # free between folds so fragmentation never builds up (the seed's gc trick)
    return results
