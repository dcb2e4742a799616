"""A timm architecture before any model of it is built: its pretrained config and total stride (read from a model
built on the meta device, without weights), and where its pretrained weights come from: a weights file, the local
Hugging Face cache, or the hub, whose reachability is probed first so that offline never means minutes of retries.
paddy.training.models builds with them; paddy.training.model_checks checks settings against them."""

import functools
import math
import os
import socket
import warnings
from pathlib import Path

import timm
import torch

from paddy.errors import PaddyError


def arch_config(arch):
    """The pretrained config of `arch` (input size, fixed size, mean/std), built on the meta device: no weights."""
    return _arch_facts(arch)[0]


def total_stride(arch):
    """How many times `arch` shrinks its input before its head: the largest reduction of timm's feature_info (32 for
    a ResNet, 16 for a ViT/16), or None where timm does not say."""
    return _arch_facts(arch)[1]


def fixed_size(arch):
    """Whether `arch` is built for one input size (ViT, Swin: position embeddings or windows of that size); such a
    model takes another size only as timm rebuilds it for that size (resizable)."""
    return bool(arch_config(arch).get("fixed_input_size"))


def resizable(arch):
    """Whether a fixed-size `arch` can be built for, and switched to, another size: timm's `set_input_size`, which
    resamples the position embeddings (and a Swin's windows and their relative position tables)."""
    return _arch_facts(arch)[2]


def phase_sizes(arch, size, scales):
    """The (height, width) of each progressive-resizing phase (train.progressive.scales), then the full `size`: each
    side of scale x size rounded (halves up) to a multiple of the architecture's total stride (a ViT's patch, a
    convnet's or Swin's 32), at least one stride, so every phase's last feature map (or patch grid) covers the image
    whole."""
    stride = total_stride(arch) or 1
    size = tuple(size)
    scaled = [tuple(max(1, math.floor(scale * side / stride + 0.5)) * stride for side in size) for scale in scales]
    return [*scaled, size]


@functools.cache
def _arch_facts(arch):
    with warnings.catch_warnings(), torch.device("meta"):
        warnings.simplefilter("ignore")  # deprecated names such as convnext_large_in22k are mapped; fine
        model = timm.create_model(arch, pretrained=False)
    info = getattr(model, "feature_info", None)
    try:
        reductions = [f["reduction"] for f in info] if isinstance(info, list) else info.reduction()
        stride = int(max(reductions))
    except (TypeError, KeyError, AttributeError, ValueError):
        stride = None
    return dict(model.pretrained_cfg), stride, hasattr(model, "set_input_size")


# ---------------------------------------------------------------------------------------------------------------------
# Pretrained weights: a local file, the hub's local cache, or the hub; never minutes of retries offline


def pretrained_kwargs(arch, pretrained):
    """timm.create_model's keyword arguments for `pretrained` (False, True or a weights file's path), or a PaddyError
    when the weights cannot be had: a missing file, or neither the local cache nor a reachable hub."""
    if pretrained is False:
        return {"pretrained": False}
    if pretrained is not True:  # a path to a weights file (e.g. a Kaggle dataset attached to an offline notebook)
        path = Path(pretrained).expanduser()
        if not path.is_file():
            raise PaddyError(
                f"The pretrained weights file {path} for {arch} does not exist. Give the path of a .safetensors, "
                ".pth or .bin file holding timm's weights for this architecture, true for timm's own, or false."
            )
        return {"pretrained": True, "pretrained_cfg_overlay": {"file": str(path)}}
    cached = _cached_weights(arch)
    if cached is not None:  # load the cached file directly: no request to the hub at all
        return {"pretrained": True, "pretrained_cfg_overlay": {"file": cached}}
    if os.environ.get("HF_HUB_OFFLINE") == "1" or not _hub_reachable():
        raise PaddyError(
            f"Pretrained weights for {arch} are not in the local Hugging Face cache and the hub cannot be reached "
            "(no network). Connect once so they land in the cache (HF_HOME), set `pretrained` to the path of a "
            "weights file (e.g. an attached Kaggle dataset), or set `pretrained: false`."
        )
    return {"pretrained": True}


def _cached_weights(arch):
    """The path of `arch`'s weights in the local Hugging Face cache, or None."""
    hub_id = arch_config(arch).get("hf_hub_id")
    if not hub_id:
        return None
    from huggingface_hub import try_to_load_from_cache

    for filename in ("model.safetensors", "pytorch_model.bin", "open_clip_pytorch_model.bin"):
        found = try_to_load_from_cache(hub_id, filename)
        if isinstance(found, str):
            return found
    return None


def _hub_reachable(timeout=3.0):
    try:
        socket.create_connection(("huggingface.co", 443), timeout=timeout).close()
        return True
    except OSError:
        return False
