"""The optimizer every training step steps: fastai's Adam as torch's AdamW, over fastai's parameter groups."""

import torch
from timm.models import group_parameters
from timm.optim._param_groups import auto_group_layers

from paddy.training.models import TimmBody, head_parameters, norm_bias_params


def create_optimizer(model, weight_decay, lr_mult=1.0, lr_groups="body_head"):
    """fastai's Adam(mom=0.9, sqr_mom=0.99, eps=1e-5, wd, decouple_wd=True) as torch's AdamW, over fastai's split.

    Groups carry `part` (body or head) and `layer_scale`, which the schedule turns into rates
    (paddy.training.schedule.set_hyperparameters); fastai's wd_bn_bias=False puts norm layers and biases in groups
    without weight decay. lr_groups: body_head (fastai's default_split: the body at lr/lr_mult, the head at lr) or
    layers (timm's layer groups spread geometrically from lr/lr_mult, the earliest, up to lr).
    """
    head = {id(p) for p in head_parameters(model)}
    no_decay = {id(p) for p in norm_bias_params(model, with_bias=True)}
    layer_scale = _layer_scales(model, head, lr_mult) if lr_groups == "layers" else {}
    groups = {}
    for p in model.parameters():
        part = "head" if id(p) in head else "body"
        key = (part, layer_scale.get(id(p), 1.0), id(p) not in no_decay)
        groups.setdefault(key, []).append(p)
    param_groups = [
        {"params": ps, "part": part, "layer_scale": scale, "weight_decay": weight_decay if decay else 0.0}
        for (part, scale, decay), ps in groups.items()
    ]
    # fused: one kernel for the whole update, on CUDA and the CPU alike (fake tensors too, so the memory estimate
    # sees the same update as the GPU); the rates are set by the schedule before every step.
    return torch.optim.AdamW(param_groups, lr=0.0, betas=(0.9, 0.99), eps=1e-5, fused=True)


def _layer_scales(model, head, lr_mult):
    body = model[0].model if isinstance(model, torch.nn.Sequential) and isinstance(model[0], TimmBody) else model
    if hasattr(body, "group_matcher"):
        layer_of = group_parameters(body, body.group_matcher(coarse=False), reverse=True)
    else:
        layer_of = auto_group_layers(body)
    named = dict(body.named_parameters())
    ids = {id(named[name]): layer for name, layer in layer_of.items() if id(named[name]) not in head}
    n = max(ids.values()) + 1
    return {pid: lr_mult ** (layer / n) for pid, layer in ids.items()}
