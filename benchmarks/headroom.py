"""How much the default competition leaves to win: each model of params.yaml and their ensemble, with and without
TTA, over training seeds, on the generated test set's true labels (issue 16's targets, table in docs/ensemble.md).

    python benchmarks/headroom.py                       # seeds 42 1 2 3 4 at the default settings (about 3 min a
                                                        # seed on 2 free cores, 3x that when shared)
    python benchmarks/headroom.py --seeds 42 --epochs 2 # quicker, not the table's figures
    python benchmarks/headroom.py --smoke               # the same code, tiny and short

The competition (`data.synthetic`) and the split are made once and kept in --work; each seed (`seed`, which seeds
training and TTA, not the data) trains every model with paddy.training.folds.train_model and predicts with
paddy.predict.tta.predict_model, as `dvc repro` does, twice: with `tta` as params.yaml sets it and with TTA off
(`tta.n: 0`, `tta.beta: 1`, the plain pass alone). The ensemble is the params weights' mean (`models.<name>.weight`).
Targets: each model 0.75-0.92, the ensemble above its best member, TTA above no TTA, all stable to +-0.02 over seeds.
Writes benchmarks/results/headroom.json.
"""

import argparse
import copy
import json
import statistics
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from paddy.data.prepare import prepare_competition
from paddy.data.split import make_splits
from paddy.data.synthetic import described, make_competition
from paddy.files import write_csv, write_json
from paddy.predict.tta import predict_model
from paddy.settings import parse_settings, read_params
from paddy.training.folds import train_model
from paddy.training.run import checkpoint_run, create_run

CPU = torch.device("cpu")


def make_data(params, work):
    """The competition, prepared, and the split, once per data settings (the seeds share them)."""
    tag = "_".join(f"{k}{v}" for k, v in params["data"]["synthetic"].items())
    data = work / tag
    if not (data / "split.csv").exists():
        make_competition(data / "raw", data / "truth.csv", **params["data"]["synthetic"])
        index, _ = prepare_competition(data / "raw", data / "prepared", described(), params["prepare"]["max_size"], 1)
        cv = params["cv"]
        split = make_splits(index[index.split == "train"], cv["scheme"], cv["n_splits"], cv["valid_pct"], cv["seed"])
        write_csv(split, data / "split.csv")
    return data


def test_probs(params, data, ckpt_dir, truth):
    """The test probabilities in the truth's row order."""
    test, _ = predict_model(
        checkpoint_run(parse_settings(params), ckpt_dir, CPU, data / "prepared", data / "split.csv"), ckpt_dir
    )
    return test.set_index("image_id").loc[truth.image_id]


def accuracy(probs, truth):
    return float((probs.to_numpy().argmax(1) == truth.label.map(list(probs.columns).index).to_numpy()).mean())


def run_seed(params, data, truth, work, seed):
    params = copy.deepcopy(params)
    params["seed"] = seed
    plain = copy.deepcopy(params)
    plain["tta"].update(n=0, beta=1.0)
    rows, mixed = [], {"tta": 0, "plain": 0}
    weights = {name: m["weight"] for name, m in params["models"].items()}
    for name, model in params["models"].items():
        ckpt = work / f"seed{seed}" / name
        start = time.perf_counter()
        # The micro-batch of params.yaml and the eval batch the profile stage picks on a CPU (4 x effective_batch):
        # TTA draws its augmentations per batch, so the same eval batch gives the same probabilities as dvc repro
        batches = (model["micro_batch"], 4 * params["train"]["effective_batch"])
        settings = parse_settings(params)
        result = train_model(create_run(settings, name, CPU, data / "prepared", data / "split.csv", batches), ckpt)[0]
        train_s = time.perf_counter() - start
        probs = {"tta": test_probs(params, data, ckpt, truth), "plain": test_probs(plain, data, ckpt, truth)}
        for kind, p in probs.items():
            mixed[kind] = mixed[kind] + weights[name] / sum(weights.values()) * p
        rows.append({"seed": seed, "model": name, "valid_acc": result["valid_acc"], "train_s": round(train_s, 1),
                     **{f"test_acc_{kind}": accuracy(p, truth) for kind, p in probs.items()}})  # fmt: skip
        print(json.dumps(rows[-1]), flush=True)
    rows.append({"seed": seed, "model": "ensemble", **{f"test_acc_{k}": accuracy(p, truth) for k, p in mixed.items()}})
    print(json.dumps(rows[-1]), flush=True)
    return rows


def summary(rows):
    """Per model: mean, range and largest distance from the mean over seeds, with and without TTA."""
    out = {}
    for name in dict.fromkeys(r["model"] for r in rows):
        tta = [r["test_acc_tta"] for r in rows if r["model"] == name]
        plain = [r["test_acc_plain"] for r in rows if r["model"] == name]
        gain = [a - b for a, b in zip(tta, plain)]
        out[name] = {"tta_mean": statistics.mean(tta), "tta_min": min(tta), "tta_max": max(tta),
                     "tta_spread": max(abs(a - statistics.mean(tta)) for a in tta),
                     "plain_mean": statistics.mean(plain), "tta_gain_mean": statistics.mean(gain),
                     "tta_gain_min": min(gain)}  # fmt: skip
    return out


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="+", default=[42, 1, 2, 3, 4])
    parser.add_argument("--epochs", type=int, help="default: train.epochs of params.yaml")
    parser.add_argument("--threads", type=int, default=2, help="torch threads (2: what dvc repro uses on 2 cores)")
    parser.add_argument("--work", type=Path, default=Path("/tmp/paddy_headroom"))
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/headroom.json"))
    parser.add_argument("--smoke", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    params = read_params()
    params["train"]["workers"] = 0
    if args.epochs:
        params["train"]["epochs"] = args.epochs
    if args.smoke:
        params["data"]["synthetic"].update(n_train=60, n_test=20, width=48, height=64)
        params["train"].update(epochs=1, effective_batch=16)
        for model in params["models"].values():
            model["micro_batch"] = 16
        args.seeds = args.seeds[:1]
    data = make_data(params, args.work)
    truth = pd.read_csv(data / "truth.csv", dtype=str)
    rows = [row for seed in args.seeds for row in run_seed(params, data, truth, args.work, seed)]
    result = {"settings": {"data": params["data"]["synthetic"], "epochs": params["train"]["epochs"],
                           "tta": params["tta"], "threads": args.threads, "seeds": args.seeds},
              "runs": rows, "summary": summary(rows)}  # fmt: skip
    print(json.dumps(result["summary"], indent=1))
    if not args.smoke:
        write_json(args.out, result)


if __name__ == "__main__":
    np.set_printoptions(precision=4)
    main()
