"""timm models the way fastai's vision_learner builds them: a timm body, fastai's head or timm's, and the split into
body and head that fine_tune's freezing and discriminative rates act on.

`head: fastai` is fastai's `create_timm_model`: the timm model without its classifier (`TimmBody`), then
`create_head`: concat pooling (for bodies that return a feature map), BatchNorm, dropout 0.25, Linear(nf, 512),
ReLU, BatchNorm, dropout 0.5, Linear(512, classes), initialised with kaiming_normal. The module tree is fastai's too
(`Sequential(TimmBody, head)`), so state dicts match. `head: timm` keeps timm's own classifier.
"""

import difflib
import functools
import os
import socket
import warnings
from pathlib import Path

import timm
import torch
from torch import nn

from paddy.errors import PaddyError

HEADS = ("fastai", "timm")

# fastai's norm_types: the layers `train_bn` keeps training in a frozen body, and whose weights get no weight decay
NORM_TYPES = (
    nn.BatchNorm1d,
    nn.BatchNorm2d,
    nn.BatchNorm3d,
    nn.InstanceNorm1d,
    nn.InstanceNorm2d,
    nn.InstanceNorm3d,
    nn.LayerNorm,
)


@functools.cache
def arch_config(arch):
    """The pretrained config of `arch` (input size, fixed size, mean/std), built on the meta device: no weights."""
    with warnings.catch_warnings(), torch.device("meta"):
        warnings.simplefilter("ignore")  # deprecated names such as convnext_large_in22k are mapped; fine
        return dict(timm.create_model(arch, pretrained=False).pretrained_cfg)


def input_normalization(arch, pretrained):
    """What normalises the model's input: the architecture's mean/std for pretrained weights (true or a weights
    file), none for random ones, which then see pixels in [0, 1].

    fastai's vision_learner decides it so (`_timm_norm` and `_add_norm` return at once when not pretrained), and it
    matters: a random-init ViT fed zero-centred input under the lighting augmentation stalls (valid accuracy 0.90
    against 0.99, docs/performance.md). Training, validation, TTA, lr-find, the memory profile and the benchmarks
    all ask here; a checkpoint records the answer, so TTA of an old checkpoint keeps what it was trained with.
    """
    if pretrained is False:
        return None
    cfg = arch_config(arch)
    return {"mean": [float(v) for v in cfg["mean"]], "std": [float(v) for v in cfg["std"]]}


def check_arch(where, arch, size=None):
    """A clear error for an architecture timm does not know, or a fixed-size model asked for another size.

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
    if size is not None and arch_config(arch).get("fixed_input_size") and tuple(size) != built:
        raise PaddyError(
            f"{where} is {arch}, built for a fixed input of {list(built)} (its position embeddings or windows have "
            f"that size), but the size asked is {list(size)}. Set the size to {list(built)}, or pick a variant of "
            "the architecture built for the size you want."
        )


def check_archs(params, path="params.yaml"):
    """check_arch for every model of params.yaml (already checked by paddy.params.check_params), and that its
    pretrained weights can be had (a file, the local cache, or a reachable hub) before any stage needs them."""
    from paddy.params import as_hw

    for name, cfg in params["models"].items():
        check_arch(f"`models.{name}.arch` in {path}", cfg["arch"], as_hw(cfg["size"]))
        _pretrained_kwargs(cfg["arch"], cfg["pretrained"])


class TimmBody(nn.Module):
    """fastai's TimmBody: a timm model without its classifier. Models with a pooled feature map (convnets) return
    the map, for the head to pool; the others (ViT) return their own pooled features."""

    def __init__(self, model):
        super().__init__()
        self.needs_pool = model.pretrained_cfg.get("pool_size") is not None
        self.model = model

    def forward(self, x):
        return self.model.forward_features(x) if self.needs_pool else self.model(x)


class AdaptiveConcatPool2d(nn.Module):
    def __init__(self):
        super().__init__()
        self.ap, self.mp = nn.AdaptiveAvgPool2d(1), nn.AdaptiveMaxPool2d(1)

    def forward(self, x):
        return torch.cat([self.mp(x), self.ap(x)], 1)


def _batch_norm_1d(n):
    bn = nn.BatchNorm1d(n)
    bn.bias.data.fill_(1e-3)  # fastai's BatchNorm init
    bn.weight.data.fill_(1.0)
    return bn


def create_fastai_head(nf, n_out, pool=True):
    """fastai's create_head(nf, n_out, concat_pool=True, pool=pool) with its defaults (lin_ftrs [512], ps 0.5)."""
    layers = [AdaptiveConcatPool2d(), nn.Flatten()] if pool else []
    nf = nf * 2 if pool else nf
    for n_in, n_out_, p, act in ((nf, 512, 0.25, True), (512, n_out, 0.5, False)):
        layers += [_batch_norm_1d(n_in), nn.Dropout(p), nn.Linear(n_in, n_out_, bias=False)]
        if act:
            layers.append(nn.ReLU(inplace=True))
    head = nn.Sequential(*layers)
    for m in head.modules():  # fastai's apply_init(head, kaiming_normal_): every non-norm layer with a weight
        if isinstance(m, nn.Linear):
            nn.init.kaiming_normal_(m.weight)
    return head


def create_model(arch, num_classes, pretrained=False, head="fastai"):
    """A timm model for `num_classes` outputs with fastai's head (a Sequential(body, head)) or timm's own.

    pretrained: False, True (timm's weights: the Hugging Face hub or its local cache) or the path of a weights file.
    """
    weights = _pretrained_kwargs(arch, pretrained)
    try:
        model = timm.create_model(arch, num_classes=num_classes if head == "timm" else 0, **weights)
    except (OSError, RuntimeError) as e:
        if not weights["pretrained"]:
            raise
        raise PaddyError(
            f"Could not load pretrained weights for {arch} ({type(e).__name__}: {str(e).splitlines()[0][:200]}). "
            "Check that the weights file matches the architecture, or set `pretrained: false` for this model."
        ) from e
    if head == "timm":
        return model
    body = TimmBody(model)
    return nn.Sequential(body, create_fastai_head(model.num_features, num_classes, pool=body.needs_pool))


def head_parameters(model):
    """The head's parameters: fastai's default_split puts everything after the body there; timm names its own."""
    head = model[1] if isinstance(model, nn.Sequential) and isinstance(model[0], TimmBody) else model.get_classifier()
    return list(head.parameters())


def norm_bias_params(model, with_bias=True):
    """fastai's norm_bias_params: every parameter of a norm layer, and (with_bias) every module's bias."""
    if isinstance(model, NORM_TYPES):
        return list(model.parameters())
    out = [p for child in model.children() for p in norm_bias_params(child, with_bias)]
    bias = getattr(model, "bias", None)
    if with_bias and isinstance(bias, nn.Parameter):
        out.append(bias)
    return out


def set_frozen(model, frozen):
    """fastai's freeze (train_bn=True): only the head and the body's norm layers learn; unfreeze: everything."""
    trainable = {id(p) for p in head_parameters(model) + norm_bias_params(model, with_bias=False)}
    for p in model.parameters():
        p.requires_grad_(not frozen or id(p) in trainable)


# ---------------------------------------------------------------------------------------------------------------------
# Pretrained weights: a local file, the hub's local cache, or the hub; never minutes of retries offline


def _pretrained_kwargs(arch, pretrained):
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
