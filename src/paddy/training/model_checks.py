"""The models of params.yaml checked before any stage needs them, in seconds: each architecture known to timm at a
size it can take, its pretrained weights to be had (paddy.training.archs), and each model with its head through one
training step on fake tensors (`check_models_train`), so a model that cannot train is refused before training."""

import difflib

import timm
import torch

from paddy.errors import PaddyError
from paddy.training.archs import arch_config, fixed_size, phase_sizes, pretrained_kwargs, resizable, total_stride
from paddy.training.models import fake_model, set_input_size
from paddy.training.step import Heads, target_loss


def check_arch(where, arch, size=None, scales=()):
    """A clear error for an architecture timm does not know, a fixed-size model asked for a size it cannot be built
    for (one timm cannot resize, or not a whole number of its patches), or a size below the architecture's total
    stride; with progressive resizing's `scales` (train.progressive.scales), phase sizes that do not grow once
    rounded to the stride (paddy.training.archs.phase_sizes).

    `where` names the setting for the message, e.g. "`models.vit.arch` in params.yaml" or "--arch".
    """
    if not isinstance(arch, str) or not timm.is_model(arch):
        close = difflib.get_close_matches(str(arch), timm.list_models(), n=3, cutoff=0.6)
        hint = (
            f" Close names: {', '.join(close)}."
            if close
            else " `python -c 'import timm; print(timm.list_models(\"*vit*\"))'` lists names."
        )
        raise PaddyError(f"{where} is {arch!r}, which timm does not know.{hint}")
    built = tuple(arch_config(arch)["input_size"][1:])
    stride = total_stride(arch)
    fixed = size is not None and fixed_size(arch) and tuple(size) != built
    if fixed and resizable(arch) and stride is not None and any(side % stride for side in size):
        below = [max(stride, side // stride * stride) for side in size]
        above = [-(-side // stride) * stride for side in size]
        raise PaddyError(
            f"{where} is {arch}, a fixed-size model whose position embeddings (or windows) timm resamples to the size "
            f"asked, {list(size)}; but it cuts its input into {stride}-pixel patches, and {list(size)} is not a "
            f"multiple of {stride} a side. Set each side of the size to a multiple of {stride} ({below} or {above}), "
            f"or to {list(built)}, the size it was built for."
        )
    if fixed and not resizable(arch):
        raise PaddyError(
            f"{where} is {arch}, built for a fixed input of {list(built)} (its position embeddings or windows have "
            f"that size), but the size asked is {list(size)}. Set the size to {list(built)}, or pick a variant of "
            "the architecture built for the size you want."
        )
    if size is not None and stride is not None and min(size) < stride:
        raise PaddyError(
            f"{where} is {arch}, which shrinks its input {stride} times before its head (its total stride, from "
            f"timm's feature_info), but the size asked is {list(size)}: under {stride} pixels a side, its last "
            f"feature map is less than a pixel, and the head sees padding, not the image. Set each side of the size "
            f"to at least {stride} (it was built for {list(built)})."
        )
    if size is not None and scales:
        _check_phase_sizes(where, arch, size, scales)


def _check_phase_sizes(where, arch, size, scales):
    """Progressive resizing's sizes must grow: two scales that round to the same size train one size twice."""
    sizes = phase_sizes(arch, size, scales)
    for i, scale in enumerate(scales):
        if sizes[i] == sizes[i + 1]:
            after = f"scale {scales[i + 1]}'s" if i + 1 < len(scales) else "the full size"
            raise PaddyError(
                f"`train.progressive.scales` is {list(scales)}, but for {where} ({arch} at {list(size)}) scale "
                f"{scale} gives the phase size {list(sizes[i])}, the same as {after}: each side of scale x size is "
                f"rounded to a multiple of its total stride ({total_stride(arch) or 1}), and the phase sizes are "
                f"{[list(s) for s in sizes]}. Drop that scale, or space the scales further apart."
            )


def check_archs(models, path="params.yaml", scales=()):
    """check_arch for every ModelSettings of `models` (name -> settings, their values checked already) at every
    progressive-resizing size (scales: train.progressive.scales), and that its pretrained weights can be had (a
    file, the local cache, or a reachable hub) before any stage needs them."""
    for name, model in models.items():
        check_arch(f"`models.{name}.arch` in {path}", model.arch, model.size, scales)
        pretrained_kwargs(model.arch, model.pretrained)


# Outputs per target of the check's heads: the classes are prepare's to count (targets.json does not exist yet), and
# how many there are does not change whether a model with its head can take a training step
CHECK_CLASSES_PER_TARGET = 2


def check_models_train(models, path="params.yaml", multi_label=False, scales=()):
    """Every model of params.yaml built with its head and run through one training step's forward and backward at its
    size, on fake tensors (shapes, no weights, no data), with the loss it trains on (multi_label: a multi-label
    competition's binary cross-entropy): a model that cannot train is refused here, in seconds, before any stage
    deletes its outputs, rather than by train@MODEL after download, prepare and profile. With progressive resizing
    (scales: train.progressive.scales) at every phase's size too, switched to it as training does."""
    passed = set()  # the seed trains each architecture twice (two item methods, the same model)
    for name, model in models.items():
        arch, head, size = model.arch, model.head, model.size
        outputs = CHECK_CLASSES_PER_TARGET * len(model.targets)
        if (arch, head, size, outputs, tuple(scales)) in passed:
            continue
        sizes = phase_sizes(arch, size, scales)
        for scale, at in zip(scales, sizes):
            try:
                dry_run(arch, outputs, size, head, multi_label=multi_label, at=at)
            except Exception as e:
                raise PaddyError(
                    f"`models.{name}` in {path} cannot train at progressive resizing's scale {scale} "
                    f"(`train.progressive.scales`): {arch} with `head: {head}`, built for {list(size)}, fails its "
                    f"first step at {list(at)} on fake tensors ({type(e).__name__}: "
                    f"{str(e).strip().splitlines()[0][:300]}). Drop that scale or pick another, then run again."
                ) from e
        try:
            dry_run(arch, outputs, size, head, multi_label=multi_label)
        except Exception as e:  # whatever the model raised, it is this model's settings that have to change
            fix = (
                "Set `head: timm` for this model (the architecture's own classifier, which passes this check)"
                if head == "fastai" and _trains(arch, outputs, size, "timm")
                else "Set another size (e.g. the one the architecture was built for) or another architecture"
            )
            raise PaddyError(
                f"`models.{name}` in {path} cannot train: {arch} with `head: {head}` at size "
                f"{list(size)} ({outputs} outputs) fails its first step, built without weights on fake tensors "
                f"({type(e).__name__}: {str(e).strip().splitlines()[0][:300]}). {fix}, then run again."
            ) from e
        passed.add((arch, head, size, outputs, tuple(scales)))


def _trains(arch, num_classes, size, head):
    try:
        dry_run(arch, num_classes, size, head)
        return True
    except Exception:
        return False


def dry_run(arch, num_classes, size, head="fastai", batch=2, multi_label=False, at=None):
    """One forward and backward of create_model(arch, num_classes, head=head, size=size) in training mode on a fake
    batch of `size` (height, width), or of `at` with the model switched to it as progressive resizing does
    (set_input_size), on fake tensors (fake_model), through the training loss (target_loss; multi_label: one binary
    cross-entropy per output). Raises what the model raises, or a ValueError if the output is not (batch,
    num_classes)."""
    with fake_model(arch, num_classes, head, size=size) as model:
        if at is not None:
            set_input_size(model, at)
        out = model(torch.empty(batch, 3, *(at or size)))
        if tuple(out.shape) != (batch, num_classes):
            raise ValueError(f"the model returns shape {list(out.shape)}, not [{batch}, {num_classes}]")
        heads = Heads((num_classes,), multi_label)
        fake = torch.zeros(
            (batch, num_classes) if multi_label else (batch,), dtype=torch.uint8 if multi_label else torch.long
        )
        target_loss(out, fake, heads).backward()
