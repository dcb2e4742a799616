"""The pipeline and fastai's recipe side by side on the embedded competition: accuracy and wall time, over seeds.

    pip install -e ".[fastai]" && python benchmarks/fastai_side_by_side.py

For each of params.yaml's models and each seed, on this machine's CPU: the pipeline (`train_model`, then TTA with
`predict_model`) and the seed notebook's fastai code on the same prepared images, the same split, architecture,
item and model sizes, epochs, learning rate, effective batch (GradientAccumulation) and TTA. Reports validation
accuracy, test accuracy after TTA (against the generated truth) and seconds, and writes
benchmarks/results/fastai_side_by_side.json (docs/performance.md quotes it).
"""

import argparse
import copy
import json
import statistics
import tempfile
import time
from pathlib import Path

import pandas as pd
import torch

from paddy.data.prepare import prepare_competition, prepared_path, read_index
from paddy.data.split import make_splits
from paddy.data.synthetic import described, make_competition
from paddy.files import write_csv
from paddy.predict.tta import predict_model
from paddy.settings import parse_settings, read_params
from paddy.settings.parse import as_hw
from paddy.training.folds import train_model
from paddy.training.run import checkpoint_run, create_run

CPU = torch.device("cpu")


def accuracy(probs, truth):
    labels = list(probs.columns[1:])
    merged = probs.merge(truth, on="image_id")
    predicted = [labels[i] for i in merged[labels].to_numpy().argmax(1)]
    return float((pd.Series(predicted) == merged["label"].reset_index(drop=True)).mean())


def pipeline(params, name, work, seed, truth):
    p = copy.deepcopy(params)
    p["seed"] = seed
    micro = p["models"][name]["micro_batch"]
    start = time.perf_counter()
    settings, out = parse_settings(p), work / f"ours{seed}" / name
    run = create_run(settings, name, CPU, work / "prepared", work / "split.csv", (micro, 2 * micro))
    result = train_model(run, out)[0]
    trained = time.perf_counter() - start

    test, _ = predict_model(
        checkpoint_run(parse_settings(p), work / f"ours{seed}" / name, CPU, work / "prepared", work / "split.csv"),
        work / f"ours{seed}" / name,
    )
    return {"valid_acc": result["valid_acc"], "test_acc": accuracy(test, truth), "train_s": trained,
            "total_s": time.perf_counter() - start}  # fmt: skip


def fastai(params, name, work, seed, truth):
    """What the seed notebook does: ImageDataLoaders with item Resize and aug_transforms, vision_learner, fine_tune
    with GradientAccumulation, then tta(n, beta) on the test images."""
    from fastai.callback.training import GradientAccumulation
    from fastai.vision.all import ImageDataLoaders, Resize, aug_transforms, set_seed, vision_learner

    cfg, train, tta = params["models"][name], params["train"], params["tta"]
    split = pd.read_csv(work / "split.csv", dtype=str)
    df = split.assign(path=[prepared_path("train", i) for i in split.image_id], is_valid=split.v0 == "1")
    set_seed(seed, reproducible=True)
    start = time.perf_counter()
    dls = ImageDataLoaders.from_df(
        df, path=work / "prepared", fn_col="path", label_col="label", valid_col="is_valid",
        item_tfms=Resize(list(as_hw(cfg["item_size"])), method=cfg["item_method"]),
        batch_tfms=aug_transforms(size=list(as_hw(cfg["size"])), min_scale=train["aug"]["min_scale"]),
        bs=cfg["micro_batch"], device=CPU, seed=seed,
    )  # fmt: skip
    cbs = [GradientAccumulation(train["effective_batch"])] if cfg["micro_batch"] < train["effective_batch"] else []
    learn = vision_learner(dls, cfg["arch"], pretrained=cfg["pretrained"], cbs=cbs)
    with learn.no_bar(), learn.no_logging():
        learn.fine_tune(train["epochs"], train["lr"], freeze_epochs=train["frozen_epochs"], lr_mult=train["lr_mult"])
        trained = time.perf_counter() - start
        valid_acc = float((learn.get_preds()[0].argmax(1) == learn.get_preds()[1]).float().mean())
        index = read_index(work / "prepared")
        test = index[index.split == "test"]
        dl = learn.dls.test_dl([work / "prepared" / p for p in test.path])
        probs, _ = learn.tta(dl=dl, n=tta["n"], beta=tta["beta"])
    table = pd.DataFrame(probs.numpy(), columns=list(learn.dls.vocab)).assign(image_id=test.image_id.to_numpy())
    table = table[["image_id", *learn.dls.vocab]]
    return {"valid_acc": valid_acc, "test_acc": accuracy(table, truth), "train_s": trained,
            "total_s": time.perf_counter() - start}  # fmt: skip


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--models", nargs="+", help="default: every model of params.yaml")
    parser.add_argument("--epochs", type=int, help="default: train.epochs")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/fastai_side_by_side.json"))
    args = parser.parse_args()
    torch.set_num_threads(2)
    params = read_params()
    params["train"]["workers"] = 0
    if args.epochs:
        params["train"]["epochs"] = args.epochs
    names = args.models or list(params["models"])
    report = {"settings": {"train": params["train"], "tta": params["tta"], "models": params["models"],
                           "data": params["data"]["synthetic"], "threads": 2}, "runs": []}  # fmt: skip
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        make_competition(work / "raw", work / "truth.csv", **params["data"]["synthetic"])
        index, _ = prepare_competition(work / "raw", work / "prepared", described(), params["prepare"]["max_size"], 2)
        cv = params["cv"]
        table = make_splits(index[index.split == "train"], "bag", 1, cv["valid_pct"], cv["seed"])
        write_csv(table, work / "split.csv")
        truth = pd.read_csv(work / "truth.csv", dtype=str)
        for seed in args.seeds:
            for name in names:
                for tool, run in (("pipeline", pipeline), ("fastai", fastai)):
                    row = {"tool": tool, "model": name, "seed": seed, **run(params, name, work, seed, truth)}
                    report["runs"].append(row)
                    print(json.dumps(row), flush=True)
    runs = pd.DataFrame(report["runs"])
    print(f"\n{'model':<8} {'tool':<9} {'valid acc':>14} {'test acc (TTA)':>16} {'train s':>8} {'total s':>8}")
    for (name, tool), g in runs.groupby(["model", "tool"], sort=False):
        sd = lambda s: statistics.stdev(s) if len(s) > 1 else 0.0  # noqa: E731
        valid, test = (
            f"{g.valid_acc.mean():.4f}+-{sd(g.valid_acc):.4f}",
            f"{g.test_acc.mean():.4f}+-{sd(g.test_acc):.4f}",
        )
        print(f"{name:<8} {tool:<9} {valid:>14} {test:>16} {g.train_s.mean():>8.1f} {g.total_s.mean():>8.1f}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=1) + "\n")


if __name__ == "__main__":
    main()
