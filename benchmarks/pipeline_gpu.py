"""The real pipeline on a CUDA GPU, through the library the stages call: mixed precision, channels_last, and
micro_batch: auto under a memory budget smaller than the card.

    PYTHONPATH=src python benchmarks/pipeline_gpu.py --out results/

1. the default models (params.yaml) on the synthetic competition, bf16 then fp16 (grad scaler): time, accuracy, peak;
2. seed-sized models (random init, no download) with micro_batch auto at a 16 GB budget enforced with
   torch.cuda.set_per_process_memory_fraction: a CPU estimate is refused on the GPU and re-measured, then a real
   epoch trains with the chosen micro-batch and accumulation without running out of memory.
"""

import argparse
import copy
import json
import time
from pathlib import Path

import pandas as pd
import torch

from paddy import memory
from paddy.device import device_name
from paddy.ensemble import build_ensemble
from paddy.fileio import write_csv, write_json
from paddy.fit import train_model
from paddy.params import load_params
from paddy.prepare import prepare_competition
from paddy.split import make_splits
from paddy.synthetic import make_competition
from paddy.tta import predict_model


def run_models(params, work, precision, device):
    index = pd.read_csv(work / "prepared" / "index.csv", dtype={"image_id": str, "label": str})
    rows = {}
    for name in params["models"]:
        start = time.time()
        res = train_model(
            name,
            params,
            work / "prepared",
            work / "split.csv",
            work / precision / name,
            params["models"][name]["micro_batch"],
            device,
            precision,
        )
        train_s = time.time() - start
        test, oof = predict_model(
            params, index, work / "prepared", work / "split.csv", work / precision / name, device, precision
        )
        out = work / precision / "preds" / name
        write_csv(test, out / "test_probs.csv")
        write_csv(oof, out / "oof_probs.csv")
        rows[name] = {
            "train_s": round(train_s, 1),
            "tta_s": round(time.time() - start - train_s, 1),
            "valid_acc": res[0]["valid_acc"],
            "peak_reserved_gb": round(res[0]["peak_memory_gb"], 3),
        }
    train = index[index.split == "train"]
    _, metrics, _ = build_ensemble(
        params["models"],
        sorted(train.label.unique()),
        pd.read_csv(work / "raw" / "sample_submission.csv", dtype=str),
        work / precision / "preds",
        train[["image_id", "label"]],
        pd.read_csv(work / "truth.csv", dtype=str),
        "normal",
    )
    return {"models": rows, "ensemble": metrics}


def auto_under_budget(params, work, archs, budget_gb, device):
    params = copy.deepcopy(params)
    params["train"].update(epochs=1, frozen_epochs=1, lr_mult=100)  # the seed's fine_tune shape, 1 + 1 epochs
    params["profile"]["budget_gb"] = budget_gb
    results = {}
    torch.cuda.empty_cache()
    free, total = torch.cuda.mem_get_info()
    context = total - free - torch.cuda.memory_reserved()
    torch.cuda.set_per_process_memory_fraction((budget_gb * 2**30 - context) / total)
    for name, arch, size in archs:
        params["models"] = {
            name: dict(
                arch=arch,
                pretrained=False,
                item_size=size,
                item_method="squish",
                size=size,
                micro_batch="auto",
                weight=1,
            )
        }
        path = work / "profile" / f"{name}.json"
        start = time.time()
        estimate = memory.profile_from_params(name, params, 10, torch.device("cpu"))  # what a laptop would have made
        write_json(path, estimate)
        estimate_s = time.time() - start
        micro = memory.resolve_micro_batch(name, params, path, device)  # refuses the estimate here, re-measures
        torch.cuda.reset_peak_memory_stats()
        start = time.time()
        res = train_model(
            name, params, work / "prepared", work / "split.csv", work / "auto" / name, micro, device, "bf16"
        )
        free, total = torch.cuda.mem_get_info()
        results[name] = {
            "arch": arch,
            "size": size,
            "budget_gb": budget_gb,
            "estimate_chose": estimate["micro_batch"],
            "estimate_s": round(estimate_s, 1),
            "measured_chose": micro,
            "accumulation": memory.accumulation(params["train"]["effective_batch"], micro),
            "train_s": round(time.time() - start, 1),
            "peak_reserved_gb": round(res[0]["peak_memory_gb"], 3),
            "process_total_gb": round((total - free) / 2**30, 3),
            "valid_acc": res[0]["valid_acc"],
        }
        print(name, results[name], flush=True)
        torch.cuda.empty_cache()
    torch.cuda.set_per_process_memory_fraction(1.0)
    return results


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    parser.add_argument("--work", type=Path, default=Path("/tmp/paddy_gpu"))
    args = parser.parse_args()
    device = torch.device("cuda")
    params = load_params()
    work = args.work
    report = {"device": device_name(device), "torch": torch.__version__}
    print(report, flush=True)
    make_competition(work / "raw", work / "truth.csv", **params["data"]["synthetic"])
    index, _ = prepare_competition(work / "raw", work / "prepared", params["prepare"]["max_size"], 8)
    write_csv(
        make_splits(
            index[index.split == "train"], **{k: params["cv"][k] for k in ("scheme", "n_splits", "valid_pct", "seed")}
        ),
        work / "split.csv",
    )
    params["train"]["workers"] = 4
    for precision in ("bf16", "fp16"):
        start = time.time()
        report[precision] = run_models(params, work, precision, device)
        report[precision]["wall_s"] = round(time.time() - start, 1)
        print(precision, json.dumps(report[precision]), flush=True)
    archs = [("vit_large", "vit_large_patch16_224", 224), ("convnext_large", "convnext_large_in22k", 224)]
    report["auto_16gb"] = auto_under_budget(params, work, archs, 16, device)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "pipeline_gpu.json").write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
