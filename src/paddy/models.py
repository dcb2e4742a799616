"""timm models: checking an architecture before any work, creating it, and the fine-tune parameter groups."""

import difflib
import functools
import warnings

import timm
import torch
from timm.models import group_parameters
from timm.optim import param_groups_layer_decay
from timm.optim._param_groups import auto_group_layers

from paddy.errors import PaddyError


@functools.cache
def arch_config(arch):
    """The pretrained config of `arch` (input size, fixed size, mean/std), built on the meta device: no weights."""
    with warnings.catch_warnings(), torch.device("meta"):
        warnings.simplefilter("ignore")  # deprecated names such as convnext_large_in22k are mapped; fine
        return dict(timm.create_model(arch, pretrained=False).pretrained_cfg)


def check_arch(name, arch, size, path="params.yaml"):
    if not isinstance(arch, str) or not timm.is_model(arch):
        close = difflib.get_close_matches(str(arch), timm.list_models(), n=3, cutoff=0.6)
        hint = (
            f" Close names: {', '.join(close)}."
            if close
            else " `python -c 'import timm; print(timm.list_models(\"*vit*\"))'` lists names."
        )
        raise PaddyError(f"`models.{name}.arch` in {path} is {arch!r}, which timm does not know.{hint}")
    cfg = arch_config(arch)
    built = tuple(cfg["input_size"][1:])
    if cfg.get("fixed_input_size") and tuple(size) != built:
        raise PaddyError(
            f"`models.{name}` in {path} asks {arch} for size {list(size)}, but {arch} is built for a fixed input of "
            f"{list(built)} (its position embeddings or windows have that size). Set `models.{name}.size: "
            f"{list(built)}`, or pick a variant of the architecture built for the size you want."
        )


def create_model(arch, num_classes, pretrained=False):
    """A timm model with a fresh head of `num_classes`. pretrained=True downloads (or reads cached) timm weights."""
    try:
        return timm.create_model(arch, pretrained=pretrained, num_classes=num_classes)
    except (OSError, RuntimeError) as e:
        if not pretrained:
            raise
        raise PaddyError(
            f"Could not load pretrained weights for {arch} ({type(e).__name__}: {str(e).splitlines()[0][:200]}). "
            "They come from the Hugging Face hub: connect to the network once so they land in the local cache "
            "(HF_HOME), or set `pretrained: false` for this model."
        ) from e


def head_parameters(model):
    return list(model.get_classifier().parameters())


def set_body_frozen(model, frozen):
    """fastai's freeze: only the new head learns while the pretrained body is frozen."""
    head = {id(p) for p in head_parameters(model)}
    for p in model.parameters():
        p.requires_grad = (not frozen) or id(p) in head


def num_layer_groups(model):
    if hasattr(model, "group_matcher"):
        layer_map = group_parameters(model, model.group_matcher(coarse=False), reverse=True)
    else:
        layer_map = auto_group_layers(model)
    return max(layer_map.values()) + 1


def discriminative_param_groups(model, weight_decay, lr_mult):
    """Layer-wise rates from 1/lr_mult (earliest layers) up to 1 (head), spaced geometrically: fastai's slice(lo, hi).

    Each group carries `lr_scale`; the scheduler multiplies the head rate by it.
    """
    n = num_layer_groups(model)
    decay = lr_mult ** (-1 / (n - 1)) if n > 1 else 1.0
    no_decay = model.no_weight_decay() if hasattr(model, "no_weight_decay") else ()
    return param_groups_layer_decay(model, weight_decay, no_weight_decay_list=no_decay, layer_decay=decay)
