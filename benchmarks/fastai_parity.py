"""Parity with fastai's fine_tune, step by step: the pipeline's training and fastai's on the same model and images.

    pip install -e ".[fastai]" && python benchmarks/fastai_parity.py

Builds the same tiny timm model both ways (the pipeline's `train_model`; fastai's `vision_learner` + `fine_tune`
with `GradientAccumulation`, as the seed notebook trains) on the same prepared images, one frozen and two unfrozen
epochs with accumulation 2, and records at every optimizer step, for every parameter: its group's learning rate and
momentum, whether it is trainable, and its weight decay. Fails (exit 1) on the first difference: rates and momenta
must agree to 1e-6 (of the phase's peak rate), trainability and weight decay exactly. Writes
benchmarks/results/fastai_parity.json.
"""

import argparse
import json
import sys
import tempfile
from pathlib import Path

import pandas as pd
import torch

from paddy.data.prepare import prepare_competition, prepared_path
from paddy.data.split import make_splits
from paddy.data.synthetic import described, make_competition
from paddy.files import write_csv
from paddy.settings import parse_settings, read_params
from paddy.training.folds import train_model
from paddy.training.run import create_run

EPOCHS, FROZEN, LR, LR_MULT, EFFECTIVE, MICRO = 2, 1, 0.01, 100, 32, 16
MODELS = {  # a BatchNorm convnet (train_bn matters) and a LayerNorm transformer, at sizes that train in seconds
    "resnet": dict(arch="test_resnet", item_size=[64, 48], size=[48, 32]),
    "vit": dict(arch="test_vit", item_size=[160, 160], size=[160, 160]),
}


def pipeline_steps(params, name, work):
    """Every optimizer step of the pipeline's training: {param name: (lr, momentum, trainable, weight decay)}."""
    steps = []

    def on_step(split, epoch, step, model, optimizer):
        names = {id(p): n for n, p in model.named_parameters()}
        steps.append(
            {names[id(p)]: (g["lr"], g["betas"][0], p.requires_grad, g["weight_decay"])
             for g in optimizer.param_groups for p in g["params"]}
        )  # fmt: skip

    run = create_run(
        parse_settings(params), name, torch.device("cpu"), work / "prepared", work / "split.csv", (MICRO, 64)
    )
    run.on_step = on_step
    train_model(run, work / "models" / name)
    return steps


def fastai_steps(cfg, work, seed):
    """The seed notebook's training with fastai, recording the same at every optimizer step."""
    from fastai.callback.training import GradientAccumulation
    from fastai.vision.all import Callback, ImageDataLoaders, Resize, aug_transforms, set_seed, vision_learner

    index = pd.read_csv(work / "prepared" / "index.csv", dtype=str)
    split = pd.read_csv(work / "split.csv", dtype=str)
    df = split.assign(path=[prepared_path("train", i) for i in split.image_id], is_valid=split.v0 == "1")
    set_seed(seed, reproducible=True)
    dls = ImageDataLoaders.from_df(
        df, path=work / "prepared", fn_col="path", label_col="label", valid_col="is_valid",
        item_tfms=Resize(cfg["item_size"], method="squish"),
        batch_tfms=aug_transforms(size=cfg["size"], min_scale=0.75), bs=MICRO, device=torch.device("cpu"),
    )  # fmt: skip
    assert len(index) > 0
    steps = []

    class Record(Callback):
        order = 50  # after GradientAccumulation (order 6), which cancels the micro-batches that do not step

        def before_step(self):
            names = {id(p): n for n, p in self.learn.model.named_parameters()}
            row = {}
            for params, hyper in zip(self.opt.param_lists, self.opt.hypers):
                for p in params:
                    do_wd = self.opt.state[p].get("do_wd", True)
                    row[names[id(p)]] = (hyper["lr"], hyper["mom"], p.requires_grad, hyper["wd"] if do_wd else 0.0)
            steps.append(row)

    learn = vision_learner(dls, cfg["arch"], pretrained=False, cbs=[GradientAccumulation(EFFECTIVE), Record()])
    with learn.no_bar(), learn.no_logging():
        learn.fine_tune(EPOCHS, LR, freeze_epochs=FROZEN, lr_mult=LR_MULT)
    return steps


def compare(ours, theirs):
    """The first difference, or None: the same steps, the same parameters, the same hyper-parameters."""
    if len(ours) != len(theirs):
        return f"{len(ours)} optimizer steps in the pipeline, {len(theirs)} in fastai"
    for i, (a, b) in enumerate(zip(ours, theirs)):
        if set(a) != set(b):
            return f"step {i}: parameters differ: {sorted(set(a) ^ set(b))[:5]}"
        peak = max(v[0] for v in b.values())
        for name in a:
            (lr, mom, trainable, wd), (lr2, mom2, trainable2, wd2) = a[name], b[name]
            if abs(lr - lr2) > 1e-6 * max(peak, 1e-12) or abs(mom - mom2) > 1e-6:
                return f"step {i}, {name}: lr {lr} vs {lr2}, momentum {mom} vs {mom2}"
            if trainable != trainable2 or wd != wd2:
                return f"step {i}, {name}: trainable {trainable} vs {trainable2}, weight decay {wd} vs {wd2}"
    return None


def summary(steps):
    """Per step: the distinct (lr, momentum) pairs, and counts of trainable and decayed parameters."""
    out = []
    for row in steps:
        values = sorted({(round(v[0], 12), round(v[1], 9)) for v in row.values()})
        out.append(
            {
                "rates_and_momenta": values,
                "trainable": sum(v[2] for v in row.values()),
                "decayed": sum(v[3] > 0 for v in row.values()),
                "parameters": len(row),
            }
        )
    return out


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/fastai_parity.json"))
    parser.add_argument("--seed", type=int, default=42)
    args = parser.parse_args()
    torch.set_num_threads(2)
    params = read_params()
    report, failed = {"settings": dict(epochs=EPOCHS, frozen_epochs=FROZEN, lr=LR, lr_mult=LR_MULT,
                                       effective_batch=EFFECTIVE, micro_batch=MICRO)}, False  # fmt: skip
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        make_competition(work / "raw", work / "truth.csv", n_train=200, n_test=10, width=48, height=64, seed=0)
        index, _ = prepare_competition(work / "raw", work / "prepared", described(), 64, 2)
        # 160 training images: 10 micro-batches of 16 and 5 steps of 32 per epoch, in both
        write_csv(make_splits(index[index.split == "train"], "bag", 1, 0.2, args.seed), work / "split.csv")
        params["train"].update(
            epochs=EPOCHS, frozen_epochs=FROZEN, lr=LR, lr_mult=LR_MULT, effective_batch=EFFECTIVE, workers=0
        )
        base = params["models"]["vit"]
        for name, cfg in MODELS.items():
            params["models"] = {name: {**base, **cfg, "head": "fastai", "pretrained": False}}
            ours, theirs = pipeline_steps(params, name, work), fastai_steps(cfg, work, args.seed)
            problem = compare(ours, theirs)
            failed |= problem is not None
            report[name] = {
                "arch": cfg["arch"],
                "steps": len(ours),
                "parameters": len(ours[0]),
                "match": problem is None,
                "first_difference": problem,
                "pipeline": summary(ours),
                "fastai": summary(theirs),
            }
            print(f"{name} ({cfg['arch']}): {len(ours)} optimizer steps x {len(ours[0])} parameters: "
                  f"{'identical to 1e-6' if problem is None else 'DIFFERENT: ' + problem}")  # fmt: skip
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=1) + "\n")
    print(f"wrote {args.out}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
