"""Measured vs estimated GPU memory for the seed's large models, and a short training run under a 16 GB budget.

Run on a CUDA machine from the repository root:  python benchmarks/profile_gpu.py --out results/
It prints the tables docs/memory.md quotes and writes them as JSON, the raw material for calibrating
paddy.memory.RESERVED_FACTOR and CONTEXT_GB.
"""

import argparse
import json
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from paddy import memory
from paddy.device import autocast, device_name
from paddy.models import create_model, discriminative_param_groups

MODELS = [
    ("convnext_large_in22k", (224, 224)),
    ("convnext_large_in22k", (320, 224)),
    ("vit_large_patch16_224", (224, 224)),
    ("swinv2_large_window12_192", (192, 192)),
    ("swin_large_patch4_window7_224", (224, 224)),
]


def compare(models, batches, precision, num_classes):
    device = torch.device("cuda")
    rows, nan = [], float("nan")
    for arch, size in models:
        spec = memory.Spec(arch, size, num_classes, precision)
        measured = memory.run_candidates(batches, lambda mb, spec=spec: memory.measure(spec, mb, device))
        start = time.perf_counter()
        estimated = memory.estimate(spec, batches)
        seconds = time.perf_counter() - start
        for m, e in zip(measured, estimated):
            row = {"arch": arch, "size": list(size), "micro_batch": m["micro_batch"], "estimate_seconds": seconds}
            row.update({f"measured_{k}": v for k, v in m.items() if k != "micro_batch"})
            row.update({f"estimate_{k}": v for k, v in e.items() if k != "micro_batch"})
            if not m.get("oom"):
                row["error_reserved"] = e["reserved_gb"] / m["reserved_gb"] - 1
                row["error_total"] = e["total_gb"] / m["total_gb"] - 1
                row["context_gb"] = m["total_gb"] - m["reserved_gb"]
            rows.append(row)
            print(
                f"{arch:<30} {size[0]}x{size[1]:<4} mb {m['micro_batch']:>3}  measured alloc/res/total "
                f"{m.get('allocated_gb', 0):6.2f} {m.get('reserved_gb', 0):6.2f} {m.get('total_gb', 0):6.2f}  "
                f"estimate {e['allocated_gb']:6.2f} {e['reserved_gb']:6.2f} {e['total_gb']:6.2f}  "
                f"err reserved {row.get('error_reserved', nan):+.1%} total {row.get('error_total', nan):+.1%}",
                flush=True,
            )
    return rows


def train_under_budget(arch, size, budget_gb, precision, num_classes, effective_batch, steps):
    """Emulate a `budget_gb` card on this bigger one, pick the micro-batch from a measured profile, train with it."""
    device = torch.device("cuda")
    spec = memory.Spec(arch, size, num_classes, precision)
    batches = memory.candidates(effective_batch, 8)
    profile = memory.profile_model(arch, spec, batches, budget_gb, 0.1, device, effective_batch)
    print(memory.format_table([profile]))
    memory.require_fit(profile)
    micro, accum = profile["micro_batch"], profile["accumulation"]

    # The allocator may hold no more than the card's size less the context the process already has.
    torch.cuda.empty_cache()
    free, total = torch.cuda.mem_get_info()
    context = total - free - torch.cuda.memory_reserved()
    fraction = (budget_gb * 2**30 - context) / total
    torch.cuda.set_per_process_memory_fraction(fraction)
    print(
        f"budget {budget_gb} GB: allocator capped at {fraction * total / 2**30:.2f} GiB (context {context / 2**30:.2f})"
    )

    # Proof that the cap bites: the full batch, which the profile says does not fit, runs out of memory.
    over = memory.run_candidates([effective_batch], lambda mb: memory.measure(spec, mb, device))[0]
    print(f"micro-batch {effective_batch} under the cap: {'out of memory' if over.get('oom') else over}")

    torch.cuda.reset_peak_memory_stats()
    model = create_model(arch, num_classes).to(device, memory_format=torch.channels_last).train()
    optimizer = torch.optim.AdamW(discriminative_param_groups(model, 0.01, 100), lr=1e-4)
    start = time.perf_counter()
    for _ in range(steps):
        for _micro in range(accum):  # samples, not batches: each micro-batch's loss weighted by its share of the step
            x = torch.randn(micro, 3, *size, device=device).to(memory_format=torch.channels_last)
            y = torch.randint(0, num_classes, (micro,), device=device)
            with autocast(device, precision):
                loss = F.cross_entropy(model(x), y) * micro / effective_batch
            loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    torch.cuda.synchronize()
    free, total = torch.cuda.mem_get_info()
    result = {
        "arch": arch,
        "budget_gb": budget_gb,
        "micro_batch": micro,
        "accumulation": accum,
        "optimizer_steps": steps,
        "seconds": round(time.perf_counter() - start, 1),
        "max_reserved_gb": round(torch.cuda.max_memory_reserved() / 2**30, 3),
        "process_total_gb": round((total - free) / 2**30, 3),
        "over_budget_full_batch": over,
    }
    print("trained without running out of memory:", result)
    torch.cuda.set_per_process_memory_fraction(1.0)
    return result


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    parser.add_argument("--batch", nargs="+", type=int, default=[64, 32, 16])
    parser.add_argument("--budget-gb", type=float, default=16)
    parser.add_argument("--train-arch", default="vit_large_patch16_224")
    parser.add_argument("--train-steps", type=int, default=8, help="0: no training run")
    parser.add_argument("--arch", nargs="+", help="ARCH[:SIZE] to compare instead of the seed's large models")
    args = parser.parse_args()
    models = [memory.parse_arch(a) for a in args.arch] if args.arch else MODELS
    torch.backends.cudnn.benchmark = False
    print(device_name(torch.device("cuda")), "torch", torch.__version__)
    rows = compare(models, args.batch, "bf16", 10)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "compare.json").write_text(json.dumps(rows, indent=2))
    if not args.train_steps:
        return
    size = dict(MODELS)[args.train_arch]
    result = train_under_budget(args.train_arch, size, args.budget_gb, "bf16", 10, 64, args.train_steps)
    (args.out / "train_under_budget.json").write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
