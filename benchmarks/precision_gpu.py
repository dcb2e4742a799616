"""fp16 against bf16: the default models' test accuracy on the embedded competition, over seeds.

    python benchmarks/precision_gpu.py              # on a CUDA machine, from the repository root
    python benchmarks/precision_gpu.py --smoke      # the same code on the CPU (CPU autocast), tiny and short

Kaggle's free GPUs (T4, P100) have no bf16, so fp16 with a gradient scaler is what most competitors train with.
For each seed and precision: the default params.yaml's models trained (paddy.fit.train_model), TTA
(paddy.tta.predict_model), test accuracy against the generated truth. Target: fp16 within 1 point of bf16 for
both models. Writes benchmarks/results/precision_gpu.json.
"""

import argparse
import copy
import json
import statistics
import time
from pathlib import Path

import pandas as pd
import torch

from paddy.device import device_name
from paddy.fileio import write_csv
from paddy.fit import train_model
from paddy.params import load_params
from paddy.prepare import prepare_competition, read_index
from paddy.split import make_splits
from paddy.synthetic import make_competition
from paddy.tta import predict_model


def test_accuracy(probs, truth):
    merged = probs.merge(truth, on="image_id")
    labels = list(probs.columns[1:])
    predicted = [labels[i] for i in merged[labels].to_numpy().argmax(1)]
    return float((pd.Series(predicted) == merged["label"].reset_index(drop=True)).mean())


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/precision_gpu.json"))
    parser.add_argument("--work", type=Path, default=Path("/tmp/paddy_precision"))
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--smoke", action="store_true")
    args = parser.parse_args()
    device = torch.device("cpu" if args.smoke else "cuda")
    params = load_params()
    if args.smoke:
        params["data"]["synthetic"].update(n_train=120, n_test=24)
        params["train"].update(epochs=1)
        params["tta"]["n"] = 1
        args.seeds = args.seeds[:1]
    params["train"]["workers"] = 0 if args.smoke else 8
    work = args.work
    make_competition(work / "raw", work / "truth.csv", **params["data"]["synthetic"])
    prepare_competition(work / "raw", work / "prepared", params["prepare"]["max_size"], 8)
    index = read_index(work / "prepared")
    cv = params["cv"]
    write_csv(make_splits(index[index.split == "train"], cv["scheme"], cv["n_splits"], cv["valid_pct"], cv["seed"]),
              work / "split.csv")  # fmt: skip
    truth = pd.read_csv(work / "truth.csv", dtype=str)
    report = {"device": device_name(device), "torch": torch.__version__, "runs": []}
    for seed in args.seeds:
        for precision in ("bf16", "fp16"):
            p = copy.deepcopy(params)
            p["seed"] = seed
            for name, cfg in p["models"].items():
                start = time.perf_counter()
                micro = cfg["micro_batch"] if cfg["micro_batch"] != "auto" else 32
                result = train_model(name, p, work / "prepared", work / "split.csv", work / precision / name,
                                     (micro, 128), device, precision)[0]  # fmt: skip
                test, _ = predict_model(p, index, work / "prepared", work / "split.csv", work / precision / name,
                                        device, precision)  # fmt: skip
                run = {"seed": seed, "precision": precision, "model": name, "test_acc": test_accuracy(test, truth),
                       "valid_acc": result["valid_acc"], "train_loss": result["train_loss"],
                       "seconds": round(time.perf_counter() - start, 1)}  # fmt: skip
                report["runs"].append(run)
                print(json.dumps(run), flush=True)
    runs = pd.DataFrame(report["runs"])
    summary = {}
    for name, group in runs.groupby("model"):
        acc = {p: group[group.precision == p].test_acc.tolist() for p in ("bf16", "fp16")}
        gap = statistics.mean(acc["bf16"]) - statistics.mean(acc["fp16"])
        summary[name] = {"bf16": acc["bf16"], "fp16": acc["fp16"], "gap_points": round(100 * gap, 2),
                         "within_1_point": abs(gap) <= 0.01}  # fmt: skip
        print(f"{name:<8} bf16 {statistics.mean(acc['bf16']):.4f}  fp16 {statistics.mean(acc['fp16']):.4f}  "
              f"gap {100 * gap:+.2f} points")  # fmt: skip
    report["summary"] = summary
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=1) + "\n")


if __name__ == "__main__":
    main()
