"""GPU memory: the profile's figure against a real training run, at the seed's settings, under a 16 GB cap.

    python benchmarks/memory_gpu.py            # on a CUDA machine, from the repository root

For the seed's four large architectures at their seed sizes (items 480x480 squished from 480x640 photos, bf16,
effective batch 64, random init), on an 80 GB card capped to a 16 GB one (the allocator limited to the budget less
the CUDA context):
  1. the profile, measured (paddy.memory.profile on CUDA) and estimated without a GPU (fake tensors), and its choice;
  2. a real `train_model` run at that choice: one frozen and one unfrozen epoch, validation included;
  3. the error of each figure against the run's peak. Targets: measured within +-10 %, estimate within +-15 %,
     the run never above the limit.
Also the calibration table (measured vs estimated, every candidate) that docs/memory.md quotes. Writes
benchmarks/results/memory_gpu.json. `--smoke` runs the same code on the CPU with tiny models (no memory figures for
the training run there): a check that the script works before spending GPU time on it.
"""

import argparse
import copy
import json
import time
from pathlib import Path

import torch

from paddy.data.prepare import prepare_competition, read_targets
from paddy.data.split import make_splits
from paddy.data.synthetic import described, make_competition
from paddy.files import write_csv
from paddy.memory import display
from paddy.memory.profile import model_spec, profile_model, profile_settings, require_fit
from paddy.settings import ProfileSettings, parse_settings, read_params
from paddy.training.folds import train_model
from paddy.training.precision import device_name
from paddy.training.run import create_run
from paddy.training.step import accumulation

SEED_MODELS = [  # (name, timm arch, size): presets/seed.yaml's architectures at their sizes
    ("convnext_large", "convnext_large_in22k", [224, 224]),
    ("vit_large", "vit_large_patch16_224", [224, 224]),
    ("swinv2_large", "swinv2_large_window12_192", [192, 192]),
    ("swin_large", "swin_large_patch4_window7_224", [224, 224]),
]
GiB = 2**30


def cap_memory(budget_gb, device):
    """Make this card behave like a `budget_gb` one: the allocator may hold the budget less the context."""
    if device.type != "cuda":
        return 0.0
    torch.cuda.empty_cache()
    free, total = torch.cuda.mem_get_info()
    context = total - free - torch.cuda.memory_reserved()
    torch.cuda.set_per_process_memory_fraction((budget_gb * GiB - context) / total)
    return context / GiB


def seed_params(params, name, arch, size, budget_gb):
    p = copy.deepcopy(params)
    p["train"].update(epochs=1, frozen_epochs=1, lr_mult=100, precision="bf16", eval_batch="auto", workers=8)
    p["profile"]["budget_gb"] = budget_gb
    p["models"] = {name: dict(arch=arch, pretrained=False, head="fastai", targets=["label"], item_size=[480, 480],
                              item_method="squish", size=size, micro_batch="auto", weight=1)}  # fmt: skip
    return p


def profile_vs_training(params, work, budget_gb, models, device):
    context = cap_memory(budget_gb, device)
    rows = []
    for name, arch, size in models:
        p = seed_params(params, name, arch, size, budget_gb)
        start = time.perf_counter()
        estimate = profile_settings(create_run(parse_settings(p), name, torch.device("cpu"), work / "prepared"))
        estimate_s = time.perf_counter() - start
        measured = profile_settings(create_run(parse_settings(p), name, device, work / "prepared"))
        print(display.format_table([measured, estimate]), flush=True)
        require_fit(measured)
        micro, evals = measured["micro_batch"], measured["eval_batch"]
        start = time.perf_counter()
        p["train"]["precision"] = "bf16" if device.type == "cuda" else "fp32"
        settings, out = parse_settings(p), work / "models" / name
        run = create_run(settings, name, device, work / "prepared", work / "split.csv", (micro, evals))
        result = train_model(run, out)[0]
        trained = {"reserved_gb": result.get("peak_memory_gb", float("nan")), "total_gb": float("nan")}
        if device.type == "cuda":
            free, total = torch.cuda.mem_get_info()
            trained["total_gb"] = (total - free) / GiB
        chosen = next(r for r in measured["table"] if r["micro_batch"] == micro)
        guess = next(r for r in estimate["table"] if r["micro_batch"] == micro)
        peak_eval = next(r for r in measured["eval_table"] if r["eval_batch"] == evals)
        guess_eval = next(r for r in estimate["eval_table"] if r["eval_batch"] == evals)
        # training peaks in the step or in validation, whichever is higher: the profile measures both
        profile_peak = max(chosen["total_gb"], peak_eval["total_gb"])
        estimate_peak = max(guess["total_gb"], guess_eval["total_gb"])
        row = {
            "model": name, "arch": arch, "size": size, "micro_batch": micro,
            "accumulation": accumulation(64, micro), "eval_batch": evals,
            "limit_gb": measured["limit_gb"], "context_gb": round(context, 3),
            "profile_total_gb": profile_peak, "estimate_total_gb": estimate_peak,
            "trained_total_gb": round(trained["total_gb"], 3), "trained_reserved_gb": round(trained["reserved_gb"], 3),
            "error_profile": round(profile_peak / trained["total_gb"] - 1, 4),
            "error_estimate": round(estimate_peak / trained["total_gb"] - 1, 4),
            "within_limit": trained["total_gb"] <= measured["limit_gb"],
            "estimate_s": round(estimate_s, 1), "train_s": round(time.perf_counter() - start, 1),
            "valid_acc": result["valid_acc"],
        }  # fmt: skip
        rows.append(row)
        print(json.dumps(row), flush=True)
    if device.type == "cuda":
        torch.cuda.set_per_process_memory_fraction(1.0)
    return rows


def calibration(params, vocab, models, device, batches=(64, 32, 16)):
    """Measured against estimated peaks for every candidate of the seed's architectures (docs/memory.md)."""
    rows = []
    for name, arch, size in models:
        p = seed_params(params, name, arch, size, 80)
        spec = model_spec(
            parse_settings(p).model(name), parse_settings(p).train, vocab, device
        )  # effective batch 64: accumulation 64 / micro-batch
        for mb in batches:
            limits = ProfileSettings(budget_gb=80, headroom=0.1)
            measured = profile_model(name, spec, ([mb], [128]), limits, device, micro_batch=mb)
            estimated = profile_model(name, spec, ([mb], [128]), limits, torch.device("cpu"), micro_batch=mb)
            m, e = measured["table"][0], estimated["table"][0]
            row = {"arch": arch, "micro_batch": mb, "measured": m, "estimated": e}
            if not m.get("oom"):
                row["error_reserved"] = round(e["reserved_gb"] / m["reserved_gb"] - 1, 4)
                row["error_total"] = round(e["total_gb"] / m["total_gb"] - 1, 4)
            rows.append(row)
            print(json.dumps(row), flush=True)
    return rows


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/memory_gpu.json"))
    parser.add_argument("--work", type=Path, default=Path("/tmp/paddy_memory_gpu"))
    parser.add_argument("--budget-gb", type=float, default=16)
    parser.add_argument("--images", type=int, default=320)
    parser.add_argument("--smoke", action="store_true", help="the same code on the CPU with tiny models")
    args = parser.parse_args()
    params = read_params()
    device = torch.device("cpu" if args.smoke else "cuda")
    models = [("convnext", "test_convnext", [64, 64]), ("vit", "test_vit", [160, 160])] if args.smoke else SEED_MODELS
    report = {"device": device_name(device), "torch": torch.__version__, "budget_gb": args.budget_gb}
    print(report, flush=True)
    work = args.work
    images = 80 if args.smoke else args.images
    make_competition(work / "raw", work / "truth.csv", n_train=images, n_test=16, width=480, height=640)
    index, _ = prepare_competition(work / "raw", work / "prepared", described(), 640, 8)
    write_csv(make_splits(index[index.split == "train"], "bag", 1, 0.2, 42), work / "split.csv")
    batches = (32, 16) if args.smoke else (64, 32, 16)
    report["calibration"] = calibration(params, read_targets(work / "prepared"), models, device, batches)
    report["profile_vs_training"] = rows = profile_vs_training(params, work, args.budget_gb, models, device)
    print(
        f"\n{'model':<16} {'micro':>5} {'eval':>5} {'profile':>8} {'estimate':>8} {'trained':>8} {'limit':>6}  errors"
    )
    for r in rows:
        print(f"{r['model']:<16} {r['micro_batch']:>5} {r['eval_batch']:>5} {r['profile_total_gb']:>8.2f} "
              f"{r['estimate_total_gb']:>8.2f} {r['trained_total_gb']:>8.2f} {r['limit_gb']:>6.1f}  "
              f"profile {r['error_profile']:+.1%} estimate {r['error_estimate']:+.1%}"
              f"{'' if r['within_limit'] else '  OVER THE LIMIT'}")  # fmt: skip
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=1) + "\n")


if __name__ == "__main__":
    main()
