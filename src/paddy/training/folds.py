"""Train one model over every fold/bag of the shared split table, one checkpoint each, and add up its figures."""

import dataclasses
import hashlib
import time
from pathlib import Path

import torch

from paddy.settings.schema import TrainSettings, read_by
from paddy.training import distributed
from paddy.training.checkpoints import Checkpoint, Snapshots, run_dir, run_key, save_checkpoint
from paddy.training.compile import maybe_compile
from paddy.training.divergence import Diverged
from paddy.training.loop import fine_tune
from paddy.training.models import input_normalization
from paddy.training.step import accumulation, seed_everything

# What changes a model: the train stage's settings (paddy.settings.schema), the resume key's too
TRAINING = read_by(TrainSettings, "train")


def train_model(run, out_dir, resume_dir=None):
    """Fine-tune a run's model (paddy.training.run.TrainingRun, with its data) on each split; returns each split's
    final metrics, train_time_s (the epochs' time, resumes included), micro_batch (after any out-of-memory fallback)
    and events. run.on_epoch and run.on_step, where set, are called as the splits train (paddy.training.loop).

    resume_dir: where checkpoints go (paddy.training.checkpoints); a rerun after an interruption continues from them.
    Under DDP (paddy.training.distributed) every rank calls this alike; rank 0 alone writes, and returns full metrics.
    """
    settings, model_cfg, train, data, device = run.settings, run.model, run.train, run.data, run.device
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # fixed input sizes: let cuDNN time its kernels once and keep the best
    runs = None
    if resume_dir is not None:
        key = {
            "seed": settings.seed,
            "train": {k: v for k, v in dataclasses.asdict(train).items() if k in TRAINING},
            "model": {k: v for k, v in dataclasses.asdict(model_cfg).items() if k not in ("name", "weight")},
            "batches": [run.micro_batch, run.eval_batch],
            "precision": run.precision,
            "multi_label": run.heads.multi_label,  # sigmoid and BCE, or softmax: the same weights mean other things
            "device": device.type,
            "split": hashlib.sha256(data.table.to_csv(index=False).encode()).hexdigest(),
            "images": hashlib.sha256("".join(data.index.md5.fillna("")).encode()).hexdigest(),
        }
        if data.extra_rows is not None:  # pseudo-labels: other labels, or other images, are another run
            key["pseudo"] = hashlib.sha256(data.targets.tobytes() + data.item_rows.tobytes()).hexdigest()
        # Rank 0 alone keeps the folder (and removes stale runs'); the others only name it
        runs = run_dir(resume_dir, key) if distributed.is_main() else Path(resume_dir) / run_key(key)
    results = []
    for s, col in enumerate(data.splits):
        seed = settings.seed + s
        seed_everything(seed)
        model = data.create_model()
        clock = maybe_compile(model, train.compile, device)
        train_rows, valid_rows = data.rows(col)
        train_loader = data.loader(
            train_rows, train.effective_batch, shuffle=True, drop_last=train.drop_last, seed=seed
        )
        valid_loader = data.loader(valid_rows, run.eval_batch)
        start = time.time()
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        checkpoint = None if runs is None else Checkpoint(runs / f"{col}.pt", train.checkpoint_minutes)
        # train.snapshots: beside the resumable checkpoint until the split is done, or straight into out_dir
        snapshots = Snapshots(out_dir if runs is None else runs, col) if train.snapshots else None
        try:
            progress = fine_tune(run, model, (train_loader, valid_loader), s, checkpoint, clock, snapshots)
        except Diverged as e:  # the message names the model and split
            e.model, e.split, e.precision, e.base_lr = run.name, col, run.precision, train.lr
            raise
        result = {
            **progress.history[-1],
            "train_time_s": sum(m["epoch_time_s"] for m in progress.history),
            "wall_time_s": time.time() - start,  # this process's: less than train_time_s after a resume
            "micro_batch": progress.micro_batch,
            "events": progress.events,
        }
        if run.precision == "fp16":  # steps the grad scaler skipped on an overflow: a few at the start are its search
            result["skipped_steps"] = sum(m.get("skipped_steps", 0) for m in progress.history)
        if clock is not None and clock.compile_s is not None:
            result["compile_s"] = clock.compile_s
        if device.type == "cuda":
            result["peak_memory_gb"] = torch.cuda.max_memory_reserved(device) / 2**30
        meta = {
            "model": run.name,
            "arch": model_cfg.arch,
            "head": model_cfg.head,
            "labels": data.vocab["label"],
            "targets": {n: data.vocab[n] for n in model_cfg.targets},
            "multi_label": run.heads.multi_label,  # its outputs are each tag's sigmoid (form tags), not a softmax
            "splits": data.splits,
            "size": list(model_cfg.size),
            "item_size": list(model_cfg.item_size),
            "item_method": model_cfg.item_method,
            "micro_batch": progress.micro_batch,
            "eval_batch": run.eval_batch,
            "effective_batch": train.effective_batch,
            "precision": run.precision,
            "normalization": input_normalization(model_cfg.arch, model_cfg.pretrained),  # what TTA must feed it too
        }
        if distributed.is_main():
            save_checkpoint(model, meta, out_dir, col, snapshots and snapshots.files(progress))
        results.append(result)
        del model, train_loader, valid_loader
        if device.type == "cuda":
            torch.cuda.empty_cache()  # free between folds so fragmentation never builds up (the seed's gc trick)
    return results


def summary(results):
    """The model's figures over its splits, for `dvc exp show`: mean valid accuracy (each target's), the
    competition's metric (valid_<metric>, over the splits that define it) and loss, total train time; compile time,
    fp16's skipped steps and out-of-memory fallbacks only where there are some."""
    keys = [k for k in results[0] if k.startswith("valid_acc")]
    keys += sorted({k for m in results for k in m if k.startswith("valid_") and k not in keys and k != "valid_loss"})
    out = {}
    for k in keys + ["valid_loss"]:
        values = [m[k] for m in results if k in m]
        out[k] = sum(values) / len(values)
    out["train_time_s"] = sum(m["train_time_s"] for m in results)
    if any("compile_s" in m for m in results):
        out["compile_s"] = sum(m.get("compile_s", 0.0) for m in results)
    if any("skipped_steps" in m for m in results):  # fp16: steps the grad scaler skipped on an overflow
        out["skipped_steps"] = sum(m["skipped_steps"] for m in results)
    fallbacks = sum(len([e for e in m["events"] if "out of memory" in e]) for m in results)
    if fallbacks:
        out["out_of_memory_fallbacks"] = fallbacks
    return out


def run_record(results, effective_batch, eval_batch, world=1):
    """What run.json keeps of a model's run: the micro-batches per step on each of `world` processes (after any
    out-of-memory fallback), the eval batch, and each split's final figures."""
    per_step = accumulation(-(-effective_batch // world), min(m["micro_batch"] for m in results))
    return {"accumulation": per_step, "eval_batch": eval_batch, "splits": results}
