"""Training throughput, everything in one run: the ceiling, the pipeline (eager and compiled), fastai, TTA, loader.

    python benchmarks/throughput.py            # on a CUDA machine, from the repository root (bash benchmarks/gpu.sh)
    python benchmarks/throughput.py --smoke    # the same code on the CPU, tiny models, a few steps (a test runs it)
    python benchmarks/throughput.py --loader   # the loader alone, images/s per CPU core (any machine, no GPU)

A realistic competition: the synthetic one at 480x640 portrait JPEGs (--images, prepared with the seed's
prepare.max_size 640). For convnext_small_in22k at 224 (part 2's model) and the seed's four large architectures at
their seed sizes and item settings (random init), micro-batch 32 x accumulation 2 (effective batch 64), bf16:
  1. ceiling: the same paddy.training.step.train_step on device-resident random uint8 items, eager (timm's
     `benchmark.py --bench train` on the real step: augmentation, accumulation, fused AdamW included);
  2. pipeline: paddy.training.folds.train_model's real training epochs from the prepared JPEGs, eager and compiled
     (train.compile true); steady state: the last epoch without its first steps, synced at both ends;
  3. fastai: the seed's recipe on the same prepared images (vision_learner, fine_tune, GradientAccumulation, mixed
     precision), when fastai is installed (an optional extra); the section says so when it is not;
  4. TTA (paddy.predict.tta.predict_model, the tta stage's code, second run: items cached) and the loader per CPU core.
Each section: steady images/s, seconds per epoch, MFU (a training image costs 3 x the forward FLOPs counted by
torch.utils.flop_counter, i.e. 6 x GMACs; against the GPU's dense bf16 peak, and against a measured matmul peak),
peak memory; and the GPU and versions. Writes benchmarks/results/throughput.json (--smoke: --out, default under
/tmp, so GPU results are never overwritten by a smoke run).

The loader (--loader, and section 4): one process, one thread, on N generated 480x640 portrait JPEGs at the seed's
item settings (640x480 crop, 480 squish), then fastai's training augmentation at 224 (paddy.training.augment on the
CPU).
Also, as the baseline the issue quotes: timm's ImageDataset with create_transform(224, is_training=True), and JPEG
decode alone. Per core = images per second of this process's CPU time (a shared machine's other load does not count
against it; wall-clock figures are written too). Its last line: loader_images_per_s_per_core=<number>.
"""

import argparse
import copy
import functools
import json
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from paddy.data.items import load_items
from paddy.data.loaders import ItemDataset, create_loader
from paddy.data.prepare import prepare_competition, prepared_path, read_index
from paddy.data.split import make_splits
from paddy.data.synthetic import described, make_competition
from paddy.files import write_csv, write_json
from paddy.predict.tta import predict_model
from paddy.settings import AugmentSettings, parse_settings, read_params
from paddy.settings.parse import as_hw
from paddy.training.augment import create_augment
from paddy.training.folds import train_model
from paddy.training.model_data import create_model_data, model_augment
from paddy.training.models import create_model
from paddy.training.optim import create_optimizer
from paddy.training.precision import device_name
from paddy.training.run import checkpoint_run, create_run
from paddy.training.step import Step, seed_everything, train_step

ROOT = Path(__file__).resolve().parents[1]
# (name, timm arch, item_size, item_method, size): part 2's model, then presets/seed.yaml's four architectures
ARCHS = [
    ("convnext_small", "convnext_small_in22k", 480, "squish", 224),
    ("convnext_large", "convnext_large_in22k", [640, 480], "crop", 224),
    ("vit_large", "vit_large_patch16_224", 480, "squish", 224),
    ("swinv2_large", "swinv2_large_window12_192", [640, 480], "crop", 192),
    ("swin_large", "swin_large_patch4_window7_224", 480, "squish", 224),
]
SMOKE_ARCHS = [
    ("convnext", "test_convnext", [64, 48], "crop", 48),
    ("vit", "test_vit", 160, "squish", 160),
    ("resnet", "test_resnet", 64, "squish", 48),
]
# Dense bf16 tensor-core peaks (TFLOPS, no sparsity) from the vendors' data sheets, matched against the device name
PEAK_TFLOPS = [("H200", 989), ("GH200", 989), ("H100 PCIe", 756), ("H100 NVL", 835), ("H100", 989), ("B200", 2250),
               ("A100", 312), ("L40S", 362), ("L4", 121), ("A10G", 70), ("RTX 4090", 165)]  # fmt: skip
GiB = 2**30


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def peak_memory_gb(device):
    """CUDA: the caching allocator's peak reserved bytes since the last reset. CPU: the process's peak resident
    set (it only grows, so later sections include earlier ones)."""
    if device.type == "cuda":
        return torch.cuda.max_memory_reserved(device) / GiB
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / GiB


def reset_peak(device):
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)


# ---------------------------------------------------------------------------------------------------------------------
# FLOPs and peaks


def forward_flops(arch, size, device):
    """FLOPs of one image's forward pass (fastai's head included), counted op by op: a multiply-add counts 2."""
    from torch.utils.flop_counter import FlopCounterMode

    model = create_model(arch, 10, pretrained=False, head="fastai").to(device).eval()
    x = torch.zeros(2, 3, *size, device=device)  # 2: fastai's head has BatchNorm, in eval mode any batch works
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(x)
    del model
    return counter.get_total_flops() / 2


def matmul_tflops(device, precision):
    """Achieved TFLOPS of a large square matmul at the training precision: a measured ceiling for MFU."""
    n, dtype = (8192, torch.bfloat16) if device.type == "cuda" else (1024, torch.float32)
    if precision == "fp16":
        dtype = torch.float16
    a, b = torch.randn(n, n, device=device, dtype=dtype), torch.randn(n, n, device=device, dtype=dtype)
    for _ in range(3):
        a @ b
    sync(device)
    reps, start = 10, time.perf_counter()
    for _ in range(reps):
        a @ b
    sync(device)
    return 2 * n**3 * reps / (time.perf_counter() - start) / 1e12


def spec_tflops(device):
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    return next((tf for key, tf in PEAK_TFLOPS if key in name), None)


def with_mfu(row, flops, peaks):
    """MFU: achieved training FLOPs (3 x forward per image) over the spec peak, and over the measured matmul."""
    achieved = row["images_per_s"] * 3 * flops / 1e12
    row["train_tflops"] = achieved
    row["mfu"] = achieved / peaks["spec_tflops"] if peaks["spec_tflops"] else None
    row["mfu_of_matmul"] = achieved / peaks["matmul_tflops"]
    return row


# ---------------------------------------------------------------------------------------------------------------------
# The competition and the per-model params


def competition(work, images, n_test, size, max_size):
    """The synthetic competition at `size` (height, width), prepared; kept in `work` across runs of the script."""
    marker = work / "competition.json"
    wanted = {"images": images, "n_test": n_test, "size": list(size), "max_size": max_size}
    if not (marker.exists() and json.loads(marker.read_text()) == wanted):
        start = time.perf_counter()
        make_competition(work / "raw", work / "truth.csv", n_train=images, n_test=n_test, width=size[1], height=size[0])
        workers = max(os.cpu_count() or 1, 1)
        index, _ = prepare_competition(work / "raw", work / "prepared", described(), max_size, workers)
        write_csv(make_splits(index[index.split == "train"], "bag", 1, 0.2, 42), work / "split.csv")
        write_json(marker, wanted)
        print(f"competition: {images} train + {n_test} test images in {time.perf_counter() - start:.0f} s", flush=True)
    return read_index(work / "prepared")


def model_params(base, name, arch, item_size, item_method, size, smoke, compile_):
    p = copy.deepcopy(base)
    p["train"].update(
        epochs=2, frozen_epochs=0, effective_batch=16 if smoke else 64, eval_batch=32 if smoke else 256,
        precision="fp32" if smoke else "bf16", workers="auto", compile=compile_, lr_mult=1,
    )  # fmt: skip
    p["tta"].update(n=4, beta=0.25)
    model = dict(arch=arch, pretrained=False, head="fastai", targets=["label"], item_size=item_size,
                 item_method=item_method, size=size, micro_batch=8 if smoke else 32, weight=1)  # fmt: skip
    p["models"] = {name: model}
    return p


# ---------------------------------------------------------------------------------------------------------------------
# 1. The ceiling


def _model_and_optimizer(cfg, train, device):
    """The benchmarked model (random init, seeded, channels_last on CUDA) and the step's optimizer at a fixed rate."""
    seed_everything(0)
    model = create_model(cfg["arch"], 10, pretrained=False, head=cfg["head"]).to(device).train()
    if device.type == "cuda":
        model = model.to(memory_format=torch.channels_last)
    optimizer = create_optimizer(model, train["weight_decay"])
    for group in optimizer.param_groups:
        group["lr"] = 1e-4
    return model, optimizer


def ceiling(p, name, device, precision, steps, warmup):
    """train_step on items already on the device: no loader, no host work but the step's own launches."""
    cfg, train = p["models"][name], p["train"]
    reset_peak(device)
    model, optimizer = _model_and_optimizer(cfg, train, device)
    settings = parse_settings(p)
    augment = model_augment(settings.model(name), settings.train.aug)
    h, w = as_hw(cfg["item_size"])
    batch = train["effective_batch"]
    items = torch.randint(0, 256, (batch, h, w, 3), dtype=torch.uint8, device=device)
    targets = torch.randint(0, 10, (batch,), device=device)
    generator = torch.Generator(device).manual_seed(0)
    step = Step(augment, precision, cfg["micro_batch"])
    for _ in range(warmup):  # cuDNN's autotuning, the allocator's first segments, the optimizer state
        train_step(model, optimizer, items, targets, generator, step)
    sync(device)
    start = time.perf_counter()
    for _ in range(steps):
        loss = train_step(model, optimizer, items, targets, generator, step)
    sync(device)
    seconds = time.perf_counter() - start
    row = {"images_per_s": steps * batch / seconds, "step_s": seconds / steps, "steps": steps,
           "loss": float(loss), "peak_memory_gb": peak_memory_gb(device)}  # fmt: skip
    del model, optimizer, items
    return row


# ---------------------------------------------------------------------------------------------------------------------
# 2. The pipeline


class SteadyClock:
    """on_step for train_model: synced times at the end of step `skip - 1` and of the last step of the last epoch,
    so the figure is the steady state (no first-step compile, cuDNN tuning or worker start-up) of the real loop."""

    def __init__(self, device, epoch, steps, skip):
        self.device, self.epoch, self.steps, self.skip = device, epoch, steps, min(skip, steps - 1)
        self.marks = {}

    def __call__(self, split, epoch, step, model, optimizer):
        if epoch == self.epoch and step in (self.skip - 1, self.steps - 1):
            sync(self.device)
            self.marks[step] = time.perf_counter()

    def seconds(self):
        return self.marks[self.steps - 1] - self.marks[self.skip - 1]


def pipeline(p, name, work, device, precision, compiled):
    train = p["train"]
    n_train = int((np.loadtxt(work / "split.csv", delimiter=",", skiprows=1, usecols=2, dtype=str) == "0").sum())
    steps = n_train // train["effective_batch"]
    epochs = train["frozen_epochs"] + train["epochs"]
    clock = SteadyClock(device, epochs - 1, steps, skip=max(1, steps // 4))
    micro, evals = p["models"][name]["micro_batch"], train["eval_batch"]
    out = work / "runs" / f"{name}_{'compiled' if compiled else 'eager'}"
    reset_peak(device)
    start = time.perf_counter()
    settings = parse_settings(dict(p, train=dict(train, precision=precision)))
    run = create_run(settings, name, device, work / "prepared", work / "split.csv", (micro, evals))
    run.on_step = clock
    result = train_model(run, out)[0]
    wall = time.perf_counter() - start
    timed = (steps - clock.skip) * train["effective_batch"]
    images_per_s = timed / clock.seconds()
    row = {
        "images_per_s": images_per_s,
        "epoch_s": steps * train["effective_batch"] / images_per_s,  # the training part of a steady epoch
        "epoch_with_validation_s": result["epoch_time_s"],
        "run_s": wall,
        "epochs": epochs,
        "steps_per_epoch": steps,
        "steps_timed": steps - clock.skip,
        "loop_images_per_s": result["images_per_s"],  # train_one_epoch's own figure (host clock, no final sync)
        "peak_memory_gb": result.get("peak_memory_gb", peak_memory_gb(device)),
        "train_loss": result["train_loss"],
    }
    if compiled:
        row["compile_s"] = result.get("compile_s")
        row["compile_backend"] = os.environ.get("PADDY_COMPILE_BACKEND", "inductor")
    return row, out


class _Forward(torch.nn.Module):
    """The model under a profiler label: train_step calls it as it calls the model."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, x):
        with torch.profiler.record_function("forward"):
            return self.model(x)


class _Augment:
    """The batch augmentation under a profiler label."""

    def __init__(self, augment):
        self.augment = augment

    def draw(self, items, generator):
        with torch.profiler.record_function("augment"):
            return self.augment.draw(items, generator)

    def apply(self, items, draws):
        with torch.profiler.record_function("augment"):
            return self.augment.apply(items, draws)


def breakdown(p, name, work, device, precision, steps):
    """Where a step's time goes: a profiler trace of `steps` steps of the real loader and train_step (eager), as
    milliseconds per step of host (CPU) and device time: data wait (the loader), augmentation, forward, backward
    (autograd's engine), optimizer (AdamW's step and zero_grad), and the sync that ends the run (the host waiting
    for the device: how far the device lags behind the host's launches)."""
    from torch.profiler import ProfilerActivity, profile, record_function

    cfg, train = p["models"][name], p["train"]
    settings = parse_settings(p)
    data = create_model_data(settings.model(name), settings.train, work / "prepared", work / "split.csv", device)
    loader = data.loader(data.rows("v0")[0], train["effective_batch"], shuffle=True, drop_last=True)
    inner, optimizer = _model_and_optimizer(cfg, train, device)
    model, augment = _Forward(inner), _Augment(data.augment)
    generator = torch.Generator(device).manual_seed(0)
    step = Step(augment, precision, cfg["micro_batch"])

    def batches():
        while True:
            yield from loader

    it = batches()
    for _ in range(2):  # warm-up: cuDNN's autotuning, the optimizer state, the loader's workers
        train_step(model, optimizer, *next(it), generator, step)
    sync(device)
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    start = time.perf_counter()
    with profile(activities=activities) as trace:
        for _ in range(steps):
            with record_function("data_wait"):
                batch = next(it)
            train_step(model, optimizer, *batch, generator, step)
        with record_function("sync"):
            sync(device)
    wall = time.perf_counter() - start
    phases = {k: [0.0, 0.0] for k in ("data_wait", "augment", "forward", "backward", "optimizer", "sync")}
    for e in trace.key_averages():
        key = e.key if e.key in phases else None
        if e.key.startswith("autograd::engine::evaluate_function"):
            key = "backward"
        elif e.key.startswith(("Optimizer.step", "Optimizer.zero_grad")):
            key = "optimizer"
        if key is not None:
            phases[key][0] += e.cpu_time_total / 1e3 / steps
            phases[key][1] += getattr(e, "device_time_total", 0.0) / 1e3 / steps
    del model, inner, optimizer, it
    return {"steps": steps, "step_ms": wall / steps * 1e3, "note": "ms per step: [host (CPU), device]",
            **{k: [round(c, 2), round(d, 2)] for k, (c, d) in phases.items()}}  # fmt: skip


# ---------------------------------------------------------------------------------------------------------------------
# 3. fastai


def fastai_recipe(p, name, work, device, precision):
    """The seed notebook's training on the same prepared images and split: ImageDataLoaders with the item Resize and
    aug_transforms, vision_learner (random init), GradientAccumulation to the effective batch, mixed precision,
    fine_tune(epochs - 1, freeze_epochs=1); the last (unfrozen) epoch's training part is timed, synced."""
    try:
        import fastai
        from fastai.callback.core import Callback
        from fastai.callback.training import GradientAccumulation
        from fastai.vision.all import ImageDataLoaders, Resize, aug_transforms, vision_learner
    except ImportError as e:
        return {"skipped": f"fastai is not installed ({e}); it is an optional extra: pip install -e '.[fastai]', or "
                           "its wheels in .whl/ for benchmarks/gpu.sh (docs/performance.md)"}  # fmt: skip

    class Clock(Callback):
        order = 99

        def __init__(self):
            self.epochs = []

        def before_train(self):
            sync(device)
            self.start = time.perf_counter()

        def after_train(self):
            sync(device)
            self.epochs.append(time.perf_counter() - self.start)

    cfg, train = p["models"][name], p["train"]
    split = pd.read_csv(work / "split.csv", dtype=str)
    df = split.assign(path=[prepared_path("train", i) for i in split.image_id], is_valid=split.v0 == "1")
    reset_peak(device)
    dls = ImageDataLoaders.from_df(
        df, path=work / "prepared", fn_col="path", label_col="label", valid_col="is_valid",
        item_tfms=Resize(list(as_hw(cfg["item_size"])), method=cfg["item_method"]),
        batch_tfms=aug_transforms(size=list(as_hw(cfg["size"])), min_scale=train["aug"]["min_scale"]),
        bs=cfg["micro_batch"], device=device, seed=0,
    )  # fmt: skip
    clock = Clock()
    cbs = [GradientAccumulation(train["effective_batch"]), clock]
    learn = vision_learner(dls, cfg["arch"], pretrained=False, cbs=cbs)
    mixed = None
    if precision == "bf16" and hasattr(learn, "to_bf16"):
        learn, mixed = learn.to_bf16(), "bf16"
    elif precision in ("bf16", "fp16"):
        learn, mixed = learn.to_fp16(), "fp16"
    epochs = train["frozen_epochs"] + train["epochs"]
    start = time.perf_counter()
    with learn.no_bar(), learn.no_logging():
        learn.fine_tune(max(epochs - 1, 1), train["lr"], freeze_epochs=1)
    images = len(dls.train) * cfg["micro_batch"]
    seconds = clock.epochs[-1]
    return {"images_per_s": images / seconds, "epoch_s": seconds, "run_s": time.perf_counter() - start,
            "epochs": len(clock.epochs), "peak_memory_gb": peak_memory_gb(device), "mixed_precision": mixed,
            "fastai": fastai.__version__}  # fmt: skip


# ---------------------------------------------------------------------------------------------------------------------
# 4. TTA and the loader


def tta(p, index, work, ckpt_dir, device, precision):
    """The tta stage's predict_model (test set and out-of-fold rows, n augmented passes + 1 plain), run twice: the
    first builds the test set's item array; the second is the steady figure."""
    rows = int((index.split == "test").sum()) + int(
        (np.loadtxt(work / "split.csv", delimiter=",", skiprows=1, usecols=2, dtype=str) == "1").sum()
    )
    settings = parse_settings(dict(p, train=dict(p["train"], precision=precision)))
    predict_model(checkpoint_run(settings, ckpt_dir, device, work / "prepared", work / "split.csv"), ckpt_dir)
    reset_peak(device)
    start = time.perf_counter()
    predict_model(checkpoint_run(settings, ckpt_dir, device, work / "prepared", work / "split.csv"), ckpt_dir)
    seconds = time.perf_counter() - start
    return {"images_per_s": rows / seconds, "passes": p["tta"]["n"] + 1, "images": rows, "seconds": seconds,
            "peak_memory_gb": peak_memory_gb(device)}  # fmt: skip


def _rate(fn, n, repeats):
    """(images per CPU-second, images per wall-second), best of `repeats`."""
    cpu, wall = [], []
    for _ in range(repeats):
        c, w = time.process_time(), time.perf_counter()
        fn()
        cpu.append(time.process_time() - c)
        wall.append(time.perf_counter() - w)
    return n / max(min(cpu), 1e-9), n / max(min(wall), 1e-9)


def _top_ops(fn, n=5):
    """The ops `fn` spends its CPU time in: [op, share of the total] for the top n (torch.profiler)."""
    from torch.profiler import profile

    with profile() as trace:
        fn()
    rows = sorted(trace.key_averages(), key=lambda e: e.self_cpu_time_total, reverse=True)
    total = sum(e.self_cpu_time_total for e in rows) or 1
    return [[e.key, round(e.self_cpu_time_total / total, 3)] for e in rows[:n]]


def loader_per_core(work, n, repeats=3, settings=(([640, 480], "crop"), (480, "squish")), size=224):
    """Images/s per CPU core of each part of the data path, on `n` prepared 480x640 JPEGs, one thread."""
    import timm.data
    from PIL import Image

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    index = competition(work, n, 1, (640, 480), 640)
    train = index[index.split == "train"]
    files = list(zip(train.path, train.md5))
    paths = [work / "prepared" / f for f, _ in files]
    params = read_params(ROOT / "params.yaml")
    out = {"images": n, "threads": 1, "repeats": repeats, "size": size, "load_average_before": os.getloadavg()}

    def decode():
        for path in paths:
            with Image.open(path) as im:
                im.convert("RGB").load()

    out["jpeg_decode"] = _rate(decode, n, repeats)
    for item_size, method in settings:
        key = f"{method}_{'x'.join(map(str, as_hw(item_size)))}"
        cache = work / "loader_cache"

        def build(item_size=item_size, method=method, cache=cache):
            os.environ["PADDY_CACHE"] = str(cache)  # a fresh cache every time: the decode and resize, measured
            for old in (cache / "items").glob("*.npy"):
                old.unlink()
            load_items(work / "prepared", files, as_hw(item_size), method, workers=1)

        saved = os.environ.get("PADDY_CACHE")
        resize = _rate(build, n, repeats)
        items_path = load_items(work / "prepared", files, as_hw(item_size), method, workers=1).filename
        if saved is None:
            os.environ.pop("PADDY_CACHE")
        else:
            os.environ["PADDY_CACHE"] = saved
        augment = create_augment(
            (size, size), AugmentSettings(**params["train"]["aug"])
        )  # a random-init model: no normalisation
        loader = create_loader(ItemDataset(items_path, range(n), [0] * n), 32, torch.device("cpu"))
        generator = torch.Generator().manual_seed(0)

        def read_cached(loader=loader):
            for _ in loader:
                pass

        def cached_and_augment(loader=loader, augment=augment, generator=generator):
            for items, _ in loader:
                augment.train(items, generator)

        cached = _rate(read_cached, n, repeats)
        augmented = _rate(cached_and_augment, n, repeats)
        out[key] = {
            "augment_cpu_top_ops": _top_ops(functools.partial(augment.train, next(iter(loader))[0], generator)),
            "decode_resize_cache": resize,  # the item cache's build: once per image and item setting
            "cached_read": cached,  # a later epoch, augmentation on the GPU: the CPU only copies bytes
            "cached_read_augment_cpu": augmented,  # a later epoch on a CPU-only machine
            "augment_cpu_only": 1 / max(1 / augmented[0] - 1 / cached[0], 1e-9),
            # a first epoch (nothing cached): decode and item resize, then the augmentation on the GPU / on the CPU
            "first_epoch_augment_on_device": 1 / (1 / resize[0] + 1 / cached[0]),
            "first_epoch_augment_on_cpu": 1 / (1 / resize[0] + 1 / augmented[0]),
        }

    dataset = timm.data.ImageDataset(str(work / "prepared" / "images" / "train"),
                                     transform=timm.data.create_transform(size, is_training=True))  # fmt: skip

    def timm_loader():
        for i in range(len(dataset)):
            dataset[i]

    out["timm_imagedataset_create_transform"] = _rate(timm_loader, len(dataset), repeats)
    out["load_average_after"] = os.getloadavg()
    # The headline: the loader's slowest epoch, the first, in training on a GPU machine (the augmentation runs on the
    # device), at the slower item setting; later epochs, models and experiments read the cache (cached_read).
    out["loader_images_per_s_per_core"] = min(
        out[f"{m}_{'x'.join(map(str, as_hw(s)))}"]["first_epoch_augment_on_device"] for s, m in settings
    )
    torch.set_num_threads(threads)
    return out


def print_loader(out):
    print(f"\nloader, one CPU core, {out['images']} prepared 480x640 JPEGs, images/s per core (per wall-second):")
    print(f"  JPEG decode alone                          {out['jpeg_decode'][0]:8.0f} ({out['jpeg_decode'][1]:.0f})")
    t = out["timm_imagedataset_create_transform"]
    print(f"  timm ImageDataset + create_transform(224)  {t[0]:8.0f} ({t[1]:.0f})")
    for key, row in out.items():
        if isinstance(row, dict):
            print(f"  {key}:")
            for part, value in row.items():
                if part == "augment_cpu_top_ops":
                    print(f"    {part:<28} " + ", ".join(f"{op} {share:.0%}" for op, share in value))
                    continue
                value = value if isinstance(value, (list, tuple)) else (value,)
                print(f"    {part:<28} {value[0]:8.0f}" + (f" ({value[1]:.0f})" if len(value) > 1 else ""))
    print("headline: a first epoch (decode + item resize into the cache, then the read), augmentation on the device")
    print(f"loader_images_per_s_per_core={out['loader_images_per_s_per_core']:.1f}", flush=True)


# ---------------------------------------------------------------------------------------------------------------------


def versions(device):
    info = {"device": device_name(device), "python": platform.python_version(), "torch": torch.__version__,
            "cuda": torch.version.cuda, "cudnn": torch.backends.cudnn.version() if device.type == "cuda" else None,
            "platform": platform.platform(), "cpu_count": os.cpu_count(),
            "usable_cores": len(os.sched_getaffinity(0))}  # fmt: skip
    import timm

    info["timm"] = timm.__version__
    try:
        import fastai

        info["fastai"] = fastai.__version__
    except ImportError:
        info["fastai"] = None
    try:
        info["commit"] = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True,
                                        check=True).stdout.strip()  # fmt: skip
    except (OSError, subprocess.CalledProcessError):
        info["commit"] = None
    return info


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--smoke", action="store_true", help="the same code on the CPU, tiny models, a few steps")
    parser.add_argument("--loader", action="store_true", help="the loader alone, per CPU core")
    parser.add_argument("--out", type=Path)
    parser.add_argument("--work", type=Path)
    parser.add_argument("--images", type=int, help="training images of the competition (default 2000; smoke 64)")
    parser.add_argument("--loader-images", type=int, default=256)
    parser.add_argument("--archs", nargs="+", help="names from the list (default: all)")
    parser.add_argument("--steps", type=int, help="timed ceiling steps (default 20; smoke 2)")
    parser.add_argument("--note", help="written into the JSON (e.g. what else ran on the machine)")
    args = parser.parse_args()
    if args.loader:
        work = args.work or Path("/tmp/paddy_throughput_loader")
        out = {**versions(torch.device("cpu")), **loader_per_core(work, args.loader_images)}
        out["note"] = "per core = images per CPU-second of the one process (one thread); wall-clock figures second"
        if args.note:
            out["machine_note"] = args.note
        path = args.out or ROOT / "benchmarks/results/throughput_loader_cpu.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        write_json(path, out)
        print_loader(out)
        return
    smoke = args.smoke
    device = torch.device("cpu" if smoke else "cuda")
    work = args.work or Path("/tmp/paddy_throughput_smoke" if smoke else "/tmp/paddy_throughput")
    path = args.out or (work / "throughput.json" if smoke else ROOT / "benchmarks/results/throughput.json")
    os.environ.setdefault("PADDY_CACHE", str(work / "cache"))
    if smoke:  # inductor's C++ build takes minutes on a small CPU; aot_eager captures the same graphs
        os.environ.setdefault("PADDY_COMPILE_BACKEND", "aot_eager")
        torch.set_num_threads(min(torch.get_num_threads(), 2))
    precision = "fp32" if smoke else "bf16"
    archs = SMOKE_ARCHS if smoke else ARCHS
    if args.archs:
        archs = [a for a in archs if a[0] in args.archs or a[1] in args.archs]
    images = args.images or (64 if smoke else 2000)
    steps = args.steps or (2 if smoke else 20)
    report = versions(device)
    if args.note:
        report["machine_note"] = args.note
    report["settings"] = {"images": images, "photo": "480x640 portrait" if not smoke else "96x128 portrait",
                          "precision": precision, "effective_batch": 16 if smoke else 64,
                          "micro_batch": 8 if smoke else 32, "random_init": True, "smoke": smoke}  # fmt: skip
    print(json.dumps(report), flush=True)
    photo = (128, 96) if smoke else (640, 480)
    index = competition(work, images, 16 if smoke else 200, photo, 128 if smoke else 640)
    base = read_params(ROOT / "params.yaml")
    peaks = {"spec_tflops": spec_tflops(device), "matmul_tflops": matmul_tflops(device, precision)}
    report["peak_tflops"] = peaks
    report["models"] = {}
    for name, arch, item_size, item_method, size in archs:
        eager_p = model_params(base, name, arch, item_size, item_method, size, smoke, False)
        flops = forward_flops(arch, as_hw(size), device)
        row = {"arch": arch, "item_size": item_size, "item_method": item_method, "size": size,
               "forward_gflops": flops / 1e9, "gmacs": flops / 2e9}  # fmt: skip
        report["models"][name] = row
        row["ceiling"] = with_mfu(ceiling(eager_p, name, device, precision, steps, 2 if smoke else 5), flops, peaks)
        print(name, "ceiling", json.dumps(row["ceiling"]), flush=True)
        eager, ckpt = pipeline(eager_p, name, work, device, precision, compiled=False)
        row["pipeline_eager"] = with_mfu(eager, flops, peaks)
        print(name, "pipeline eager", json.dumps(eager), flush=True)
        compiled_p = model_params(base, name, arch, item_size, item_method, size, smoke, True)
        # Dynamo's cache is per code object, shared by every model of the process (nn.Module's call): start each
        # architecture's compiled run from an empty one, as a train stage (one model per process) does.
        torch._dynamo.reset()
        row["pipeline_compiled"] = with_mfu(pipeline(compiled_p, name, work, device, precision, True)[0], flops, peaks)
        print(name, "pipeline compiled", json.dumps(row["pipeline_compiled"]), flush=True)
        fa = fastai_recipe(eager_p, name, work, device, precision)
        row["fastai"] = with_mfu(fa, flops, peaks) if "images_per_s" in fa else fa
        print(name, "fastai", json.dumps(row["fastai"]), flush=True)
        row["tta"] = tta(eager_p, index, work, ckpt, device, precision)
        print(name, "tta", json.dumps(row["tta"]), flush=True)
        c = row["ceiling"]["images_per_s"]
        row["ratios"] = {
            "pipeline_eager_over_ceiling": row["pipeline_eager"]["images_per_s"] / c,
            "pipeline_compiled_over_ceiling": row["pipeline_compiled"]["images_per_s"] / c,
        }
        if "images_per_s" in row["fastai"]:
            row["ratios"]["pipeline_eager_over_fastai"] = (
                row["pipeline_eager"]["images_per_s"] / row["fastai"]["images_per_s"]
            )
        row["breakdown"] = breakdown(eager_p, name, work, device, precision, 2 if smoke else 10)
        print(name, "breakdown", json.dumps(row["breakdown"]), flush=True)
        write_json(path, report)  # after every model: a run cut short keeps what it measured
    report["loader"] = loader_per_core(work / "loader", 32 if smoke else args.loader_images, 1 if smoke else 3)
    write_json(path, report)
    print_table(report)
    print_loader(report["loader"])
    print(f"wrote {path}")


def print_table(report):
    print(f"\n{report['device']}, {report['settings']['precision']}, images/s (MFU)")
    print(f"{'model':<16} {'ceiling':>15} {'pipeline':>15} {'compiled':>15} {'fastai':>15} {'TTA':>8} {'compile s':>9}")

    def cell(r):
        if "images_per_s" not in r:
            return "-"
        return f"{r['images_per_s']:.0f}" + (f" ({r['mfu']:.0%})" if r.get("mfu") is not None else "")

    for name, r in report["models"].items():
        compile_s = r["pipeline_compiled"].get("compile_s")
        print(f"{name:<16} {cell(r['ceiling']):>15} {cell(r['pipeline_eager']):>15} {cell(r['pipeline_compiled']):>15} "
              f"{cell(r['fastai']):>15} {r['tta']['images_per_s']:>8.0f} "
              f"{'-' if compile_s is None else f'{compile_s:.0f}':>9}")  # fmt: skip


if __name__ == "__main__":
    sys.exit(main())
