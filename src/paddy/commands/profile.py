"""`paddy profile`: the memory profile of any timm architectures, or of params.yaml's models, as a table."""

import dataclasses
import time
from pathlib import Path

from paddy.errors import PaddyError
from paddy.settings.schema import HEADS, PRECISIONS

HELP = "peak memory per architecture and micro-batch: measured on CUDA, else estimated"


def arguments(parser):
    parser.add_argument(
        "--arch",
        nargs="+",
        metavar="ARCH[:SIZE]",
        help="timm architectures, each with an optional size: 224 or HxW (e.g. convnext_large_in22k:320x224); "
        "without a size, the one the architecture was built for",
    )
    parser.add_argument("--params", action="store_true", help="profile the models in params.yaml instead")
    parser.add_argument(
        "--batch",
        nargs="+",
        type=int,
        help="micro-batches (default: from --effective-batch down to profile.min_micro_batch)",
    )
    parser.add_argument(
        "--effective-batch",
        type=int,
        help="samples per optimizer step, accumulated from micro-batches (default: train.effective_batch)",
    )
    parser.add_argument("--eval-batch", nargs="+", type=int, help="prediction batches (default: 4x, 2x, 1x, ...)")
    parser.add_argument(
        "--item-size", metavar="HxW", help="the uint8 items the step augments from (default: the model's size)"
    )
    parser.add_argument("--head", choices=HEADS, help="default: fastai, or params.yaml's with --params")
    parser.add_argument("--precision", choices=PRECISIONS, help="default: train.precision")
    parser.add_argument("--estimate", action="store_true", help="estimate even where CUDA is available")
    parser.add_argument("--budget-gb", type=float, help="default: profile.budget_gb")
    parser.add_argument("--num-classes", type=int, help="default: data/prepared/targets.json's classes")
    parser.add_argument("--json", type=Path, help="also write the profiles to this file")


def parse_size(text, what):
    try:
        h, _, w = text.lower().partition("x")
        return int(h), int(w or h)
    except ValueError:
        raise PaddyError(f"{what}: the size must be 224 or HxW, e.g. 320x224.") from None


def parse_arch(text):
    """'vit_large_patch16_224' or 'convnext_large_in22k:320x224' -> (arch, (height, width)), checked against timm."""
    from paddy.training.archs import arch_config
    from paddy.training.model_checks import check_arch

    arch, _, size = text.partition(":")
    hw = parse_size(size, f"--arch {text}") if size else None
    check_arch(f"--arch {text}", arch, hw)
    return arch, hw or tuple(arch_config(arch)["input_size"][1:])


def run(args):
    import torch

    from paddy.data.prepare import read_targets
    from paddy.files import write_json
    from paddy.memory.display import format_table
    from paddy.memory.measure import Spec
    from paddy.memory.profile import (
        candidates,
        eval_candidates,
        model_spec,
        planned_precision,
        profile_model,
    )
    from paddy.settings import ModelSettings, load_settings
    from paddy.training.gpus import claim_device
    from paddy.training.precision import device_name

    if bool(args.arch) == bool(args.params):
        raise PaddyError("`paddy profile` needs either --arch ARCH[:SIZE] ... or --params (the models in params.yaml).")
    settings = load_settings()
    prof, train = settings.profile, settings.train
    limits = prof if args.budget_gb is None else dataclasses.replace(prof, budget_gb=args.budget_gb)
    device = torch.device("cpu") if args.estimate else claim_device()  # measured alone on its GPU
    effective = args.effective_batch or train.effective_batch
    batches = sorted(set(args.batch), reverse=True) if args.batch else candidates(effective, prof.min_micro_batch)
    evals = args.eval_batch or eval_candidates(effective, prof.min_micro_batch)
    if any(b < 1 for b in [effective, *batches, *evals]):
        raise PaddyError(f"batches must be >= 1 (effective {effective}, micro {batches}, eval {evals}).")
    targets = Path("data/prepared/targets.json")
    if not (targets.exists() or args.num_classes):
        raise PaddyError(
            f"{targets} does not exist, so the head's size is unknown: run `dvc repro prepare` first (it writes each "
            "target's classes), or give --num-classes N."
        )
    vocab = read_targets(targets.parent) if targets.exists() else {}
    if args.num_classes:
        vocab["label"] = list(range(args.num_classes))
    num_classes = len(vocab["label"])
    precision = planned_precision(args.precision or train.precision, device)
    train = dataclasses.replace(train, effective_batch=effective)
    if args.params:
        for name, model in settings.models.items():
            lacking = [t for t in model.targets if t not in vocab]
            if lacking:
                raise PaddyError(
                    f"models.{name} predicts {', '.join(lacking)} too, whose classes only {targets} knows: run `dvc "
                    "repro prepare` first, or profile it by --arch with --num-classes."
                )
        jobs = []
        for name, model in settings.models.items():
            model = dataclasses.replace(model, head=args.head or model.head)
            spec = model_spec(model, train, vocab, device, settings.competition.multi_label)
            jobs.append((name, dataclasses.replace(spec, precision=precision)))
    else:
        jobs = []
        for text in args.arch:
            arch, hw = parse_arch(text)
            item = parse_size(args.item_size, "--item-size") if args.item_size else hw
            model = ModelSettings(
                name=arch, arch=arch, pretrained=False, head=args.head or "fastai", targets=("label",),
                item_size=item, item_method="squish", size=hw, micro_batch="auto", weight=1,
            )  # fmt: skip
            jobs.append((arch, Spec(model, train, num_classes, precision)))
    print(f"profiling on {device_name(device) if device.type == 'cuda' else 'the CPU: estimates for a CUDA card'}")
    profiles = []
    for name, spec in jobs:
        start = time.perf_counter()
        profiles.append(profile_model(name, spec, (batches, evals), limits, device))
        print(f"  {name}: {time.perf_counter() - start:.1f} s")
    print(format_table(profiles))
    if args.json:
        write_json(args.json, profiles)
    return 0
