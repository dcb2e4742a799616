"""A model's memory profile: which micro-batch (so which gradient accumulation) and which eval batch fit a budget.

Candidates: train.effective_batch / 1, / 2, / 4, ... down to profile.min_micro_batch for training; 4x and 2x the
effective batch, then the same halvings, for the prediction step (validation and TTA need no gradients, so far
larger batches fit). Each candidate runs the real steps (paddy.memory.measure: measured on CUDA, estimated without);
the choice is the largest whose process total fits budget_gb less the headroom. With progressive resizing
(train.progressive) each candidate runs at every phase's size and its row is the largest of those peaks, so the
batches chosen fit every phase.
"""

import dataclasses
import json
from pathlib import Path

import torch

from paddy.errors import PaddyError
from paddy.files import write_json
from paddy.memory.measure import GiB, Spec, estimate, oom_row
from paddy.memory.measure import measure as measure_step
from paddy.training.archs import phase_sizes
from paddy.training.precision import device_name, resolve_precision
from paddy.training.step import accumulation, free_cuda_cache

ESTIMATE = "estimate"  # the device recorded for a profile computed without a GPU


def candidates(effective_batch, floor):
    """effective_batch // 1, // 2, // 4, ... while at least `floor` (always at least one candidate)."""
    if effective_batch < 1 or floor < 1:
        raise PaddyError(f"effective batch ({effective_batch}) and the smallest micro-batch ({floor}) must be >= 1.")
    out, k = [effective_batch], 2
    while effective_batch // k >= floor:
        out.append(effective_batch // k)
        k *= 2
    return out


def eval_candidates(effective_batch, floor):
    return [4 * effective_batch, 2 * effective_batch, *candidates(effective_batch, floor)]


def limit_gb(budget_gb, headroom):
    return budget_gb * (1 - headroom)


def choose(rows, limit, key="micro_batch"):
    """The largest batch that ran without running out of memory and whose process total stays within `limit` GB.

    The process total (reserved + CUDA context) is what a card's size bounds, so it is the figure compared.
    """
    fitting = [r[key] for r in rows if not r.get("oom") and r["total_gb"] <= limit]
    return max(fitting) if fitting else None


def profile_model(name, spec, batches, limits, device, micro_batch=None, measure=None):
    """The profile of one model: the table, where it came from, the chosen micro-batch, accumulation, eval batch.

    batches: (micro-batch candidates, eval batch candidates); limits: the ProfileSettings (budget_gb, headroom).
    Each micro-batch candidate runs the training step; the one training will use (`micro_batch` when given, an
    explicit setting, else the chosen one) then runs, with its state alive, the prediction step at every eval
    candidate, and the eval batch is chosen from those. measure(micro, eval_batches) -> (train row, eval rows)
    replaces the real measurement (tests simulate out-of-memory errors with it); on the CPU everything is estimated.
    """
    micro_batches, eval_batches = batches
    budget_gb, headroom = limits.budget_gb, limits.headroom
    measured = device.type == "cuda" or measure is not None
    sizes = phase_sizes(spec.model.arch, spec.model.size, spec.train.progressive.scales)
    if measure is None:
        one = (
            (lambda s, mb, ebs: measure_step(s, mb, device, ebs))
            if measured
            else (lambda s, mb, ebs: estimate(s, mb, ebs))
        )
        measure = (lambda mb, ebs: one(spec, mb, ebs)) if len(sizes) == 1 else every_size(spec, sizes, one)
    micro_batches = sorted(set(micro_batches) | ({micro_batch} if micro_batch else set()), reverse=True)
    limit = limit_gb(budget_gb, headroom)
    if device.type == "cuda":  # a card smaller than the budget bounds it too
        limit = min(limit, limit_gb(torch.cuda.get_device_properties(device).total_memory / GiB, headroom))
    rows, evals = [], {}
    for mb in micro_batches:
        # The eval batch is chosen at the micro-batch training will use, so only that run needs the prediction steps:
        # the explicit one, or else the first that fits (largest first), before which none fitted
        needs_evals = mb == micro_batch if micro_batch else choose(rows, limit) is None
        try:
            train, evals[mb] = measure(mb, eval_batches if needs_evals else ())
        except torch.OutOfMemoryError as e:
            train, evals[mb] = oom_row(e), []
        free_cuda_cache()  # outside the except: its frames (and their tensors) are gone, so this frees everything
        rows.append({"micro_batch": mb, "accumulation": accumulation(spec.train.effective_batch, mb), **train})
    chosen = choose(rows, limit)
    used = micro_batch or chosen
    eval_rows = [{"eval_batch": eb, **r} for eb, r in zip(eval_batches, evals.get(used, []))]
    eval_chosen = choose(eval_rows, limit, key="eval_batch")
    more = {"sizes": [list(s) for s in sizes]} if len(sizes) > 1 else {}  # progressive resizing's, all covered
    return {
        "model": name,
        "arch": spec.model.arch,
        "head": spec.model.head,
        "size": list(spec.model.size),
        **more,
        "item_size": list(spec.model.item_size),
        "num_classes": spec.num_classes,
        "precision": spec.precision,
        "device": device_name(device) if measured else ESTIMATE,
        "budget_gb": budget_gb,
        "headroom": headroom,
        "limit_gb": round(limit, 3),
        "effective_batch": spec.train.effective_batch,
        "table": rows,
        "micro_batch": chosen,
        "accumulation": accumulation(spec.train.effective_batch, chosen) if chosen else None,
        "eval_table": eval_rows,
        "eval_batch": eval_chosen,
    }


def every_size(spec, sizes, one):
    """measure(micro_batch, eval_batches) over progressive resizing's sizes: one(spec at a size, ...) at each, the
    largest first (an out-of-memory error there ends it soonest); each row the largest peak of its batch, with the
    size it was at (`size`), an out-of-memory one wherever any size ran out."""

    def measure(micro_batch, eval_batches):
        runs = []
        for size in reversed(sizes):
            at = dataclasses.replace(spec, model=dataclasses.replace(spec.model, size=tuple(size)))
            runs.append((size, one(at, micro_batch, eval_batches)))
            free_cuda_cache()  # the last size's model and cached blocks are not the next one's peak
        train = _worst([{**t, "size": list(size)} for size, (t, _) in runs])
        evals = [_worst([{**e[i], "size": list(size)} for size, (_, e) in runs]) for i in range(len(eval_batches))]
        return train, evals

    return measure


def _worst(rows):
    ooms = [r for r in rows if r.get("oom")]
    return ooms[0] if ooms else max(rows, key=lambda r: r["total_gb"])


def require_fit(profile, what=("micro_batch", "eval_batch")):
    """A clear error when not even the smallest candidate fits."""
    for key in what:
        if profile[key] is not None:
            continue
        table = profile["table" if key == "micro_batch" else "eval_table"]
        if not table:
            raise PaddyError(
                f"Model `{profile['model']}` has no eval batch that fits: its training step did not fit, so the "
                "prediction step was not measured. Fit the training step first (see the table above)."
            )
        smallest = min(table, key=lambda r: r[key])
        peak = "ran out of memory" if smallest.get("oom") else f"needs {smallest['total_gb']:.1f} GB"
        lower = "lower profile.min_micro_batch or the model's size"
        if profile["precision"] == "fp32":
            lower += ", or set train.precision to auto (mixed precision)"
        step = "training" if key == "micro_batch" else "prediction"
        raise PaddyError(
            f"Model `{profile['model']}` ({profile['arch']} at {profile['size'][0]}x{profile['size'][1]}, "
            f"{profile['precision']}) does not fit the memory budget: even the smallest {step} batch, "
            f"{smallest[key]}, {peak} ({profile['device']}), over the limit of {profile['limit_gb']:.2f} GB "
            f"(profile.budget_gb {profile['budget_gb']} less headroom {profile['headroom']}). To fit, {lower}; raise "
            "profile.budget_gb if the card is larger; or pick a smaller architecture."
        )


# ---------------------------------------------------------------------------------------------------------------------
# From the settings


def model_spec(model, train, vocab, device, multi_label=False):
    """The Spec of one model (ModelSettings) trained with `train` (TrainSettings): its outputs are one per class of
    each of its targets (vocab: {target: classes}; multi_label: one per tag, trained with binary cross-entropy);
    precision resolved for `device`, or for a CUDA card when estimating on a CPU."""
    num_classes = sum(len(vocab[t]) for t in model.targets)
    return Spec(model, train, num_classes, planned_precision(train.precision, device), multi_label)


def planned_precision(precision, device):
    """The precision on `device`; an estimate plans for a CUDA card, where auto means mixed precision (bf16 or
    fp16: the same bytes)."""
    if device.type == "cuda":
        return resolve_precision(precision, device)
    return "fp32" if precision == "fp32" else ("bf16" if precision == "auto" else precision)


def profile_settings(run, measure=None):
    """The profile of a run's model (paddy.training.run.TrainingRun) over the candidates its settings allow."""
    settings, model = run.settings, run.model
    train, limits = settings.train, settings.profile
    effective, floor = train.effective_batch, limits.min_micro_batch
    evals = [train.eval_batch] if train.eval_batch != "auto" else eval_candidates(effective, floor)
    spec = model_spec(model, train, run.vocab, run.device, settings.competition.multi_label)
    explicit = None if model.micro_batch == "auto" else model.micro_batch
    return profile_model(run.name, spec, (candidates(effective, floor), evals), limits, run.device, explicit, measure)


def batches_of(profile, settings):
    """What train takes from the profile, and nothing else, so that train reruns only when that changes: the
    micro-batch and eval batch where params.yaml says auto (with the device they were planned on), else nothing."""
    auto = {
        "micro_batch": settings.model(profile["model"]).micro_batch == "auto",
        "eval_batch": settings.train.eval_batch == "auto",
    }
    out = {key: profile[key] for key, is_auto in auto.items() if is_auto}
    if out:
        out["device"] = profile["device"]
    return out


def resolve_batches(run, batches_path):
    """(micro_batch, eval_batch) for a run (paddy.training.run.TrainingRun): the explicit values of params.yaml, and
    for `auto` the profile's at `batches_path` (profile@MODEL's output).

    No profile there yet (`paddy lr-find` before any `dvc repro`): the model is profiled now. A profile estimated, or
    measured on another GPU, is not trusted on this CUDA device: it is measured again here.
    """
    settings, name, device = run.settings, run.name, run.device
    micro, evals = settings.model(name).micro_batch, settings.train.eval_batch
    if "auto" not in (micro, evals):
        return micro, evals
    path = Path(batches_path)
    chosen = json.loads(path.read_text()) if path.exists() else None
    here = device_name(device) if device.type == "cuda" else None
    if chosen is None or (here is not None and chosen.get("device") != here):
        why = "no profile yet" if chosen is None else f"planned on {chosen.get('device')}, not {here}"
        print(f"{path}: {why}; profiling {name} here")
        profile = profile_settings(run)
        require_fit(profile)
        chosen = batches_of(profile, settings)
    return chosen.get("micro_batch", micro), chosen.get("eval_batch", evals)


# ---------------------------------------------------------------------------------------------------------------------
# Outputs


def write_profile(profile, settings, profile_json, batches_json):
    write_json(profile_json, profile)
    write_json(batches_json, batches_of(profile, settings))
