"""fp32, bf16 and fp16 side by side: the default models' valid and test accuracy on the embedded competition, over
seeds, on a CUDA card or on the CPU (torch's CPU autocast and grad scaler, paddy.training.precision).

    python benchmarks/precision.py --device cpu     # the CPU table of docs/performance.md (about 40 min, 2 cores)
    python benchmarks/precision.py                  # on a CUDA machine (benchmarks/gpu.sh precision)
    python benchmarks/precision.py --smoke          # the same code, tiny and short, on the CPU

Kaggle's free GPUs (T4, P100) have no bf16, so fp16 with a gradient scaler is what most competitors train with.
For each seed and precision: the default params.yaml's models trained (paddy.training.folds.train_model), TTA
(paddy.predict.tta.predict_model), accuracy against the split's validation rows and the generated test truth, and the
steps
fp16's scaler skipped. Target: bf16 and fp16 within 1 point of fp32 for both models. Writes
benchmarks/results/precision_<device>.json.
"""

import argparse
import copy
import json
import statistics
import time
from pathlib import Path

import pandas as pd
import torch

from paddy.data.prepare import prepare_competition, read_index
from paddy.data.split import make_splits
from paddy.data.synthetic import described, make_competition
from paddy.files import write_csv
from paddy.predict.tta import predict_model
from paddy.settings import parse_settings, read_params
from paddy.training.folds import train_model
from paddy.training.precision import device_name
from paddy.training.run import checkpoint_run, create_run

PRECISIONS = ("fp32", "bf16", "fp16")


def test_accuracy(probs, truth):
    merged = probs.merge(truth, on="image_id")
    labels = list(probs.columns[1:])
    predicted = [labels[i] for i in merged[labels].to_numpy().argmax(1)]
    return float((pd.Series(predicted) == merged["label"].reset_index(drop=True)).mean())


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--out", type=Path, help="default: benchmarks/results/precision_<device>.json")
    parser.add_argument("--work", type=Path, default=Path("/tmp/paddy_precision"))
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--precisions", nargs="+", choices=PRECISIONS, default=list(PRECISIONS))
    parser.add_argument("--smoke", action="store_true")
    args = parser.parse_args()
    device = torch.device("cpu" if args.smoke else args.device)
    out = args.out or Path(f"benchmarks/results/precision_{device.type}.json")
    if device.type == "cpu":
        torch.set_num_threads(2)  # the figures of a 2-core machine, and repeatable
    params = read_params()
    if args.smoke:
        params["data"]["synthetic"].update(n_train=120, n_test=24)
        params["train"].update(epochs=1)
        params["tta"]["n"] = 1
        args.seeds = args.seeds[:1]
    params["train"]["workers"] = 0 if device.type == "cpu" else 8
    work = args.work
    make_competition(work / "raw", work / "truth.csv", **params["data"]["synthetic"])
    prepare_competition(work / "raw", work / "prepared", described(), params["prepare"]["max_size"], 2)
    index = read_index(work / "prepared")
    cv = params["cv"]
    write_csv(make_splits(index[index.split == "train"], cv["scheme"], cv["n_splits"], cv["valid_pct"], cv["seed"]),
              work / "split.csv")  # fmt: skip
    truth = pd.read_csv(work / "truth.csv", dtype=str)
    report = {"device": device_name(device), "torch": torch.__version__, "settings": params, "runs": []}
    for seed in args.seeds:
        for precision in args.precisions:
            p = copy.deepcopy(params)
            p["seed"] = seed
            for name, cfg in p["models"].items():
                start = time.perf_counter()
                micro = cfg["micro_batch"] if cfg["micro_batch"] != "auto" else 32
                ckpt = work / f"{precision}{seed}" / name
                p["train"]["precision"] = precision
                run = create_run(parse_settings(p), name, device, work / "prepared", work / "split.csv", (micro, 128))
                result = train_model(run, ckpt)[0]
                test, _ = predict_model(
                    checkpoint_run(parse_settings(p), ckpt, device, work / "prepared", work / "split.csv"), ckpt
                )
                run = {"seed": seed, "precision": precision, "model": name, "valid_acc": result["valid_acc"],
                       "test_acc": test_accuracy(test, truth), "train_loss": result["train_loss"],
                       "skipped_steps": result.get("skipped_steps", 0),
                       "seconds": round(time.perf_counter() - start, 1)}  # fmt: skip
                report["runs"].append(run)
                print(json.dumps(run), flush=True)
    runs = pd.DataFrame(report["runs"])
    summary = {}
    print(f"\n{'model':<8} {'precision':<9} {'valid acc':>15} {'test acc (TTA)':>15} {'vs fp32 (points)':>17} "
          f"{'skipped':>7} {'s/run':>6}")  # fmt: skip
    for (name, precision), group in runs.groupby(["model", "precision"], sort=False):
        base = runs[(runs.model == name) & (runs.precision == "fp32")]
        row = {k: [round(v, 4) for v in group[k]] for k in ("valid_acc", "test_acc")}
        row.update({f"{k}_mean": round(statistics.mean(group[k]), 4) for k in ("valid_acc", "test_acc")})
        if len(base):
            row["gap_points"] = {k: round(100 * (statistics.mean(group[k]) - statistics.mean(base[k])), 2)
                                 for k in ("valid_acc", "test_acc")}  # fmt: skip
            row["within_1_point"] = all(g >= -1.0 for g in row["gap_points"].values())
        row["skipped_steps"] = [int(v) for v in group.skipped_steps]
        summary.setdefault(name, {})[precision] = row
        gap = row.get("gap_points", {})
        sd = lambda s: statistics.stdev(s) if len(s) > 1 else 0.0  # noqa: E731
        print(f"{name:<8} {precision:<9} {row['valid_acc_mean']:>8.4f}+-{sd(group.valid_acc):.3f} "
              f"{row['test_acc_mean']:>8.4f}+-{sd(group.test_acc):.3f} "
              f"{gap.get('valid_acc', 0):>+8.2f}/{gap.get('test_acc', 0):+.2f} "
              f"{statistics.mean(group.skipped_steps):>7.1f} "
              f"{group.seconds.mean():>6.1f}")  # fmt: skip
    report["summary"] = summary
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=1) + "\n")


if __name__ == "__main__":
    main()
