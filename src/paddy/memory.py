"""GPU memory per architecture and micro-batch, and the micro-batch (so the gradient accumulation) that fits a budget.

On CUDA the real training step is run and its peaks read from the caching allocator and the driver. Without CUDA the
same step runs on fake tensors (shapes and dtypes, no data) while a tracker adds up the bytes of every live storage,
which gives the peak a CUDA device would allocate; a small calibrated allowance adds what tensors do not show
(allocator fragmentation and the CUDA context). See docs/memory.md for the calibration.
"""

import argparse
import difflib
import gc
import json
import math
import time
import warnings
import weakref
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from paddy.errors import PaddyError

GiB = 2**30

# What the fake-tensor count misses, one factor and one constant calibrated on an H100 (torch 2.11, CUDA 13) over
# nine architectures at micro-batch 16-64 (docs/memory.md): the caching allocator reserves whole segments and keeps
# freed blocks, and cuDNN/cuBLAS workspaces are not tensors of the step, so reserved = allocated x 1.15 (within 8 %
# of every measurement, 9 % when the factor is fitted without the architecture it predicts). The process also owns a
# CUDA context (CUDA, cuBLAS and cuDNN kernels) that the driver counts: 0.75 GB there, less on older CUDA versions,
# so the estimate errs on the safe side for Kaggle's cards.
RESERVED_FACTOR = 1.15
CONTEXT_GB = 0.75

# The first step allocates the AdamW state after the forward pass; from the second step on the state is there while
# activations peak, so one step would understate the steady-state peak.
STEPS = 2

ESTIMATE = "estimate"  # the device recorded for a profile computed without a GPU


@dataclass(frozen=True)
class Spec:
    """Everything about a model's training step that decides its memory."""

    arch: str
    size: tuple  # (height, width)
    num_classes: int
    precision: str  # bf16 | fp16 | fp32 (resolved, never auto)
    weight_decay: float = 0.01
    lr_mult: float = 100.0


# ---------------------------------------------------------------------------------------------------------------------
# Candidates and the choice rule


def candidates(effective_batch, floor):
    """effective_batch // 1, // 2, // 4, ... while at least `floor` (always at least one candidate)."""
    if effective_batch < 1 or floor < 1:
        raise PaddyError(f"effective batch ({effective_batch}) and the smallest micro-batch ({floor}) must be >= 1.")
    out, k = [effective_batch], 2
    while effective_batch // k >= floor:
        out.append(effective_batch // k)
        k *= 2
    return out


def accumulation(effective_batch, micro_batch):
    """Micro-batches per optimizer step. Accumulation counts samples, so a remainder makes a short last group."""
    return math.ceil(effective_batch / micro_batch)


def limit_gb(budget_gb, headroom):
    return budget_gb * (1 - headroom)


def choose(rows, limit):
    """The largest micro-batch that ran without running out of memory and whose process total stays within `limit` GB.

    The process total (reserved + CUDA context) is what a card's size bounds, so it is the figure compared.
    """
    fitting = [r["micro_batch"] for r in rows if not r.get("oom") and r["total_gb"] <= limit]
    return max(fitting) if fitting else None


def run_candidates(micro_batches, step):
    """step(micro_batch) -> row for each candidate; an out-of-memory error becomes a row saying so, never a crash."""
    rows = []
    for mb in micro_batches:
        try:
            row = step(mb)
        except torch.OutOfMemoryError as e:
            row = {"micro_batch": mb, "oom": True, "error": str(e).splitlines()[0][:200]}
        # The exception (and the tensors its frames hold) is gone here, so the cache can really be emptied:
        # a candidate that ran out of memory must not poison the next.
        _free_cuda()
        rows.append(row)
    return rows


def _free_cuda():
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


# ---------------------------------------------------------------------------------------------------------------------
# The training step (the same one src/paddy/train.py runs)


def _optimizer(model, spec):
    from paddy.models import discriminative_param_groups

    return torch.optim.AdamW(discriminative_param_groups(model, spec.weight_decay, spec.lr_mult), lr=1e-4)


def _train_steps(model, optimizer, x, y, device, precision, steps, scaler=None, on_step=None):
    from paddy.device import autocast

    for _ in range(steps):
        with autocast(device, precision):
            loss = F.cross_entropy(model(x), y)
        if scaler is not None:
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
        else:
            loss.backward()
            optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if on_step is not None:
            on_step()


def measure(spec, micro_batch, device, steps=STEPS):
    """Run `steps` real training steps on CUDA at `micro_batch`; the peaks in GB. Raises torch.OutOfMemoryError."""
    from paddy.models import create_model

    torch.cuda.reset_peak_memory_stats(device)
    start = time.perf_counter()
    with torch.device(device):  # initialising on the GPU is faster than on the CPU and ends in the same memory
        model = create_model(spec.arch, spec.num_classes, pretrained=False)
    model = model.to(memory_format=torch.channels_last).train()
    optimizer = _optimizer(model, spec)
    scaler = torch.amp.GradScaler("cuda") if spec.precision == "fp16" else None
    h, w = spec.size
    x = torch.randn(micro_batch, 3, h, w, device=device).to(memory_format=torch.channels_last)
    y = torch.randint(0, spec.num_classes, (micro_batch,), device=device)
    _train_steps(model, optimizer, x, y, device, spec.precision, steps, scaler)
    torch.cuda.synchronize(device)
    free, total = torch.cuda.mem_get_info(device)
    # Read before the cache is emptied: the driver's figure for this process is its context plus what the caching
    # allocator holds, which has not shrunk since the peak. (On a GPU shared with other processes this includes them.)
    return {
        "micro_batch": micro_batch,
        "oom": False,
        "allocated_gb": round(torch.cuda.max_memory_allocated(device) / GiB, 3),
        "reserved_gb": round(torch.cuda.max_memory_reserved(device) / GiB, 3),
        "total_gb": round((total - free) / GiB, 3),
        "seconds": round(time.perf_counter() - start, 2),
    }


# ---------------------------------------------------------------------------------------------------------------------
# The estimate without a GPU


class _StorageTracker(torch.utils._python_dispatch.TorchDispatchMode):
    """Adds up the bytes of every live tensor storage, the way the CUDA caching allocator counts `allocated`."""

    def __init__(self):
        super().__init__()
        from torch.utils.weak import WeakIdKeyDictionary

        self.live = WeakIdKeyDictionary()
        self.current = 0
        self.peak = 0

    def track(self, tensor):
        storage = tensor.untyped_storage()
        if storage in self.live:  # a view or an in-place result: no new memory
            return
        nbytes = -(-storage.nbytes() // 512) * 512  # the allocator rounds every block up to 512 bytes
        self.live[storage] = nbytes
        self.current += nbytes
        self.peak = max(self.peak, self.current)
        weakref.finalize(storage, self._release, nbytes)

    def _release(self, nbytes):
        self.current -= nbytes

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in torch.utils._pytree.tree_leaves(out):
            if isinstance(t, torch.Tensor):
                self.track(t)
        return out


def estimate(spec, micro_batches):
    """Rows of estimated CUDA peaks (GB) for each micro-batch, computed on fake tensors: no GPU, no weights, seconds.

    The step is the CUDA one: channels_last, mixed precision (bf16 stands in for fp16, same bytes), and AdamW's
    foreach implementation, whose temporary copies of the optimizer state count towards the peak.
    """
    from torch._subclasses.fake_tensor import FakeTensorMode

    from paddy.models import create_model

    # Some timm models cannot be built under fake tensors; built on the meta device first they can, then move.
    with warnings.catch_warnings(), torch.device("meta"):
        warnings.simplefilter("ignore")
        model = create_model(spec.arch, spec.num_classes, pretrained=False)
    model = model.to(memory_format=torch.channels_last).train()
    precision = "fp32" if spec.precision == "fp32" else "bf16"
    cpu = torch.device("cpu")
    tracker = _StorageTracker()
    rows = []
    with FakeTensorMode(allow_non_fake_inputs=True):
        model = model.to_empty(device=cpu)
        for t in [*model.parameters(), *model.buffers()]:
            tracker.track(t)
        optimizer = torch.optim.AdamW(_optimizer(model, spec).param_groups, lr=1e-4, foreach=True)
        # CPU autocast on fake CPU tensors: CUDA autocast refuses to start without a GPU; both cast the same
        # matmuls and convolutions down and keep reductions and norms in fp32.
        for i, mb in enumerate(micro_batches):
            start = time.perf_counter()
            tracker.peak = tracker.current
            h, w = spec.size
            with tracker:
                x = torch.empty(mb, 3, h, w).to(memory_format=torch.channels_last)
                y = torch.zeros(mb, dtype=torch.long)
                # The optimizer state persists from candidate to candidate, so only the first needs the extra step.
                _train_steps(model, optimizer, x, y, cpu, precision, STEPS if i == 0 else 1)
                del x, y
            allocated = tracker.peak / GiB
            reserved = allocated * RESERVED_FACTOR
            rows.append(
                {
                    "micro_batch": mb,
                    "oom": False,
                    "allocated_gb": round(allocated, 3),
                    "reserved_gb": round(reserved, 3),
                    "total_gb": round(reserved + CONTEXT_GB, 3),
                    "seconds": round(time.perf_counter() - start, 2),
                }
            )
    return rows


# ---------------------------------------------------------------------------------------------------------------------
# A model's profile


def profile_model(name, spec, micro_batches, budget_gb, headroom, device, effective_batch, step=None):
    """The profile of one model: its table, where it came from, and the chosen micro-batch and accumulation.

    On CUDA each candidate is measured (or `step(micro_batch) -> row` is called, which tests use to simulate an
    out-of-memory error); on the CPU the whole table is estimated.
    """
    from paddy.device import device_name

    check_budget(budget_gb, headroom)
    measured = device.type == "cuda" or step is not None
    if step is None and measured:
        step = lambda mb: measure(spec, mb, device)  # noqa: E731
    rows = run_candidates(micro_batches, step) if measured else estimate(spec, micro_batches)
    limit = limit_gb(budget_gb, headroom)
    if device.type == "cuda":  # a card smaller than the budget bounds it too
        limit = min(limit, limit_gb(torch.cuda.get_device_properties(device).total_memory / GiB, headroom))
    chosen = choose(rows, limit)
    return {
        "model": name,
        "arch": spec.arch,
        "size": list(spec.size),
        "num_classes": spec.num_classes,
        "precision": spec.precision,
        "device": device_name(device) if measured else ESTIMATE,
        "budget_gb": budget_gb,
        "headroom": headroom,
        "limit_gb": round(limit, 3),
        "effective_batch": effective_batch,
        "table": rows,
        "micro_batch": chosen,
        "accumulation": accumulation(effective_batch, chosen) if chosen else None,
    }


def require_fit(profile):
    """A clear error when not even the smallest micro-batch fits."""
    if profile["micro_batch"] is not None:
        return
    smallest = min(profile["table"], key=lambda r: r["micro_batch"])
    peak = "ran out of memory" if smallest.get("oom") else f"needs {smallest['total_gb']:.1f} GB"
    lower = "lower profile.min_micro_batch or the model's size"
    if profile["precision"] == "fp32":
        lower += ", or set train.precision to auto (mixed precision)"
    raise PaddyError(
        f"Model `{profile['model']}` ({profile['arch']} at {profile['size'][0]}x{profile['size'][1]}, "
        f"{profile['precision']}) does not fit the memory budget: even the smallest micro-batch, "
        f"{smallest['micro_batch']}, {peak} ({profile['device']}), over the limit of {profile['limit_gb']:.2f} GB "
        f"(profile.budget_gb {profile['budget_gb']} less headroom {profile['headroom']}). To fit, {lower}; raise "
        "profile.budget_gb if the card is larger; or pick a smaller architecture."
    )


# ---------------------------------------------------------------------------------------------------------------------
# From params.yaml


def check_budget(budget_gb, headroom):
    if not (isinstance(budget_gb, (int, float)) and not isinstance(budget_gb, bool) and budget_gb > 0):
        raise PaddyError(
            f"`profile.budget_gb` in params.yaml is {budget_gb!r}; it must be a number of GB above 0, the GPU memory "
            "a training step may use (16 for Kaggle's card)."
        )
    if not (isinstance(headroom, (int, float)) and not isinstance(headroom, bool) and 0 <= headroom < 1):
        raise PaddyError(
            f"`profile.headroom` in params.yaml is {headroom!r}; it must be a fraction of the budget kept free, "
            "at least 0 and below 1 (e.g. 0.1)."
        )


def profile_settings(params):
    """(budget_gb, headroom, min_micro_batch) from params.yaml's `profile` section, checked."""
    section = params.get("profile")
    if not isinstance(section, dict):
        raise PaddyError("params.yaml has no `profile` section: add budget_gb, headroom and min_micro_batch.")
    missing = [k for k in ("budget_gb", "headroom", "min_micro_batch") if k not in section]
    if missing:
        raise PaddyError(f"`profile` in params.yaml lacks {', '.join(missing)}; restore them from git.")
    check_budget(section["budget_gb"], section["headroom"])
    floor = section["min_micro_batch"]
    if not (isinstance(floor, int) and not isinstance(floor, bool) and floor >= 1):
        raise PaddyError(f"`profile.min_micro_batch` in params.yaml is {floor!r}; it must be an integer >= 1.")
    return section["budget_gb"], section["headroom"], floor


def read_num_classes(labels_path):
    path = Path(labels_path)
    if not path.exists():
        raise PaddyError(f"{path} does not exist: run `dvc repro prepare` first (it writes the label vocabulary).")
    labels = json.loads(path.read_text())
    if not isinstance(labels, list) or not labels:
        raise PaddyError(f"{path} must hold a non-empty JSON list of labels; rerun `dvc repro -f prepare`.")
    return len(labels)


def model_spec(name, params, num_classes, device):
    """The Spec of `models.<name>`; precision resolved for `device`, or for a CUDA card when estimating on a CPU."""
    from paddy.device import resolve_precision
    from paddy.params import as_hw

    models = params.get("models") or {}
    if name not in models:
        raise PaddyError(f"params.yaml has no `models.{name}`. Models defined: {', '.join(models) or 'none'}.")
    cfg, train = models[name], params["train"]
    precision = train["precision"]
    # An estimate plans for a CUDA card, where auto means mixed precision (bf16 or fp16: the same bytes).
    precision = resolve_precision(precision, device) if device.type == "cuda" else estimate_precision(precision)
    return Spec(cfg["arch"], as_hw(cfg["size"]), num_classes, precision, train["weight_decay"], train["lr_mult"])


def estimate_precision(precision):
    return "fp32" if precision == "fp32" else ("bf16" if precision == "auto" else precision)


def profile_from_params(name, params, num_classes, device, step=None):
    budget_gb, headroom, floor = profile_settings(params)
    effective = params["train"]["effective_batch"]
    spec = model_spec(name, params, num_classes, device)
    return profile_model(name, spec, candidates(effective, floor), budget_gb, headroom, device, effective, step)


def resolve_micro_batch(name, params, profile_path, device):
    """The micro-batch train uses: models.<name>.micro_batch when it is a number (an explicit value always wins);
    for `auto`, the one the profile chose. A profile measured on another GPU, or estimated, is redone by measuring
    on this CUDA device; on the CPU an estimate is fine. A profile for other settings is recomputed too.
    """
    from paddy.device import device_name

    micro = params["models"][name]["micro_batch"]
    if micro != "auto":
        return micro
    path = Path(profile_path)
    if not path.exists():
        raise PaddyError(
            f"`models.{name}.micro_batch` is auto but {path} does not exist: run `dvc repro profile@{name}` first."
        )
    profile = json.loads(path.read_text())
    spec = model_spec(name, params, profile["num_classes"], device)
    budget_gb, headroom, _ = profile_settings(params)
    here = device_name(device) if device.type == "cuda" else None
    stale = (profile["arch"], tuple(profile["size"]), profile["precision"], profile["effective_batch"]) != (
        spec.arch,
        spec.size,
        spec.precision,
        params["train"]["effective_batch"],
    ) or (profile["budget_gb"], profile["headroom"]) != (budget_gb, headroom)
    if stale or (here is not None and profile["device"] != here):
        why = "its settings differ from params.yaml" if stale else f"it was made on {profile['device']}, not {here}"
        print(f"profile {path}: {why}; profiling {name} again on {device_name(device) if here else 'an estimate'}")
        profile = profile_from_params(name, params, profile["num_classes"], device)
    require_fit(profile)
    return profile["micro_batch"]


# ---------------------------------------------------------------------------------------------------------------------
# Outputs


def metrics_of(profile):
    """Numbers for `dvc exp show`: the choice, and the peak (process total, GB) at each micro-batch."""
    chosen = next((r for r in profile["table"] if r["micro_batch"] == profile["micro_batch"]), None)
    return {
        "measured": profile["device"] != ESTIMATE,
        "micro_batch": profile["micro_batch"],
        "accumulation": profile["accumulation"],
        "peak_gb": chosen["total_gb"] if chosen else None,
        "limit_gb": profile["limit_gb"],
        "peak_gb_at": {str(r["micro_batch"]): (None if r.get("oom") else r["total_gb"]) for r in profile["table"]},
    }


def plot_rows(profile):
    """Rows for the dvc bar chart: one bar per micro-batch, and one for the limit they are held against."""
    rows = []
    for r in profile["table"]:
        chosen = " (chosen)" if r["micro_batch"] == profile["micro_batch"] else ""
        fits = not r.get("oom") and r["total_gb"] <= profile["limit_gb"]
        # An out-of-memory candidate has no peak: draw it past the limit so the chart still shows it does not fit.
        peak = profile["limit_gb"] * 1.5 if r.get("oom") else r["total_gb"]
        rows.append({"bar": f"{profile['model']} x{r['micro_batch']}{chosen}", "peak_gb": peak, "fits": fits})
    rows.append({"bar": f"{profile['model']} limit", "peak_gb": profile["limit_gb"], "fits": True})
    return rows


def format_table(profiles):
    # `paddy profile --arch` names each job by its arch: then a model column would only repeat it
    show_model = any(p["model"] != p["arch"] for p in profiles)
    name_w = max([5] + [len(p["model"]) for p in profiles]) if show_model else -1
    arch_w = max([4] + [len(p["arch"]) for p in profiles])
    head = (
        (f"{'model':<{name_w}} " if show_model else "")
        + f"{'arch':<{arch_w}} {'size':>7} {'prec':>4} {'micro':>6} {'alloc GB':>8} "
        f"{'reserved':>8} {'total GB':>8}  fits  source"
    )
    lines = [head, "-" * len(head)]
    for p in profiles:
        for r in p["table"]:
            size = f"{p['size'][0]}x{p['size'][1]}"
            if r.get("oom"):
                nums = f"{'OOM':>8} {'':>8} {'':>8}  no  "
            else:
                fits = "yes" if r["total_gb"] <= p["limit_gb"] else "no"
                nums = f"{r['allocated_gb']:>8.2f} {r['reserved_gb']:>8.2f} {r['total_gb']:>8.2f}  {fits:<4}"
            mark = "*" if r["micro_batch"] == p["micro_batch"] else " "
            model = f"{p['model']:<{name_w}} " if show_model else ""
            lines.append(
                f"{model}{p['arch']:<{arch_w}} {size:>7} {p['precision']:>4} {r['micro_batch']:>5}{mark} "
                f"{nums}  {p['device']}"
            )
    if profiles:
        p = profiles[0]
        lines.append(
            f"* chosen: the largest micro-batch whose total (reserved + CUDA context) is within {p['limit_gb']:.1f} GB "
            f"(budget {p['budget_gb']} GB less {p['headroom']:.0%} headroom)"
        )
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------------------------------
# `paddy profile`


def add_arguments(parser):
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
        help="micro-batches (default: from params.yaml's train.effective_batch down to profile.min_micro_batch)",
    )
    parser.add_argument("--precision", choices=("auto", "bf16", "fp16", "fp32"), help="default: train.precision")
    parser.add_argument("--estimate", action="store_true", help="estimate even where CUDA is available")
    parser.add_argument("--budget-gb", type=float, help="default: profile.budget_gb")
    parser.add_argument("--num-classes", type=int, help="default: data/prepared/labels.json's length, else 10")
    parser.add_argument("--json", type=Path, help="also write the profiles to this file")


def parse_arch(text):
    """'vit_large_patch16_224' or 'convnext_large_in22k:320x224' -> (arch, (height, width)), checked against timm."""
    import timm

    from paddy.models import arch_config, check_arch

    arch, _, size = text.partition(":")
    if not timm.is_model(arch):
        close = difflib.get_close_matches(arch, timm.list_models(), n=3, cutoff=0.6)
        hint = f" Close names: {', '.join(close)}." if close else ""
        raise PaddyError(f"--arch {text}: timm has no architecture {arch!r}.{hint}")
    if not size:
        return arch, tuple(arch_config(arch)["input_size"][1:])
    try:
        h, _, w = size.lower().partition("x")
        hw = (int(h), int(w or h))
    except ValueError:
        raise PaddyError(f"--arch {text}: the size must be 224 or HxW, e.g. {arch}:320x224.") from None
    check_arch(arch, arch, hw, "--arch")
    return arch, hw


def run(args):
    from paddy.device import device_name, pick_device, resolve_precision
    from paddy.fileio import write_json
    from paddy.params import load_params

    if bool(args.arch) == bool(args.params):
        raise PaddyError("`paddy profile` needs either --arch ARCH[:SIZE] ... or --params (the models in params.yaml).")
    params = load_params()
    budget_gb, headroom, floor = profile_settings(params)
    budget_gb = budget_gb if args.budget_gb is None else args.budget_gb
    device = torch.device("cpu") if args.estimate else pick_device()
    effective = params["train"]["effective_batch"]
    batches = sorted(set(args.batch), reverse=True) if args.batch else candidates(effective, floor)
    if any(b < 1 for b in batches):
        raise PaddyError(f"--batch {batches}: micro-batches must be >= 1.")
    labels = Path("data/prepared/labels.json")
    num_classes = args.num_classes or (read_num_classes(labels) if labels.exists() else 10)
    precision = args.precision or params["train"]["precision"]
    precision = resolve_precision(precision, device) if device.type == "cuda" else estimate_precision(precision)
    train = params["train"]
    if args.params:
        jobs = [(name, model_spec(name, params, num_classes, device)) for name in params["models"]]
        if args.precision:
            jobs = [(n, Spec(s.arch, s.size, s.num_classes, precision, s.weight_decay, s.lr_mult)) for n, s in jobs]
    else:
        jobs = []
        for text in args.arch:
            arch, hw = parse_arch(text)
            jobs.append((arch, Spec(arch, hw, num_classes, precision, train["weight_decay"], train["lr_mult"])))
    print(f"profiling on {device_name(device) if device.type == 'cuda' else 'the CPU: estimates for a CUDA card'}")
    profiles = []
    for name, spec in jobs:
        start = time.perf_counter()
        profiles.append(profile_model(name, spec, batches, budget_gb, headroom, device, effective))
        print(f"  {name}: {time.perf_counter() - start:.1f} s")
    print(format_table(profiles))
    if args.json:
        write_json(args.json, profiles)
    return 0


def main(argv=None):
    parser = argparse.ArgumentParser(prog="paddy profile")
    add_arguments(parser)
    return run(parser.parse_args(argv))
