"""Train one model over every fold/bag of the shared split table, one checkpoint each."""

import time

import torch

from paddy.checkpoint import save_checkpoint
from paddy.data import ImageDataset, create_loader, create_transforms
from paddy.device import seed_everything
from paddy.models import create_model
from paddy.prepare import read_labels
from paddy.split import read_splits
from paddy.train import fine_tune


def train_model(name, params, prepared_dir, split_csv, out_dir, micro_batch, device, precision, on_epoch=None):
    """Fine-tune models.<name> on each split; on_epoch(split, epoch, metrics). Returns per-split final metrics."""
    cfg, train_cfg = params["models"][name], params["train"]
    labels = read_labels(prepared_dir)
    table, splits = read_splits(split_csv)
    targets = table["label"].map({lab: i for i, lab in enumerate(labels)}).tolist()
    paths = [f"images/train/{i}" for i in table.image_id]
    results = []
    for s, col in enumerate(splits):
        seed = params["seed"] + s
        seed_everything(seed)
        model = create_model(cfg["arch"], len(labels), cfg["pretrained"]).to(device)
        if device.type == "cuda":
            model = model.to(memory_format=torch.channels_last)
        train_tf, eval_tf = create_transforms(model, cfg, train_cfg)
        is_valid = table[col].to_numpy() == 1

        def subset(mask, transform, paths=paths, targets=targets):
            keep = [i for i, m in enumerate(mask) if m]
            return ImageDataset(
                prepared_dir,
                [paths[i] for i in keep],
                [targets[i] for i in keep],
                cfg["item_size"],
                cfg["item_method"],
                transform,
            )

        workers = train_cfg["workers"]
        train_loader = create_loader(
            subset(~is_valid, train_tf),
            train_cfg["effective_batch"],
            shuffle=True,
            drop_last=train_cfg["drop_last"],
            workers=workers,
            seed=seed,
        )
        valid_loader = create_loader(subset(is_valid, eval_tf), micro_batch * 2, workers=workers, seed=seed)
        start = time.time()
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        metrics = fine_tune(
            model,
            train_loader,
            valid_loader,
            train_cfg,
            micro_batch,
            device,
            precision,
            on_epoch=None if on_epoch is None else (lambda e, m, s=s: on_epoch(s, e, m)),
        )
        metrics["train_time_s"] = time.time() - start
        if device.type == "cuda":
            metrics["peak_memory_gb"] = torch.cuda.max_memory_reserved(device) / 2**30
        meta = {
            "model": name,
            "arch": cfg["arch"],
            "labels": labels,
            "splits": splits,
            "size": cfg["size"],
            "item_size": cfg["item_size"],
            "item_method": cfg["item_method"],
            "micro_batch": micro_batch,
            "effective_batch": train_cfg["effective_batch"],
            "precision": precision,
        }
        save_checkpoint(model, meta, out_dir, col)
        results.append(metrics)
        del model
        if device.type == "cuda":
            torch.cuda.empty_cache()  # free between folds so fragmentation never builds up (the seed's gc trick)
    return results
