"""timm models the way fastai's vision_learner builds them: a timm body, fastai's head or timm's, and the split into
body and head that fine_tune's freezing and discriminative rates act on.

`head: fastai` is fastai's `create_timm_model`: the timm model without its classifier (`TimmBody`), then
`create_head`: concat pooling (for bodies that return a feature map), BatchNorm, dropout 0.25, Linear(nf, 512),
ReLU, BatchNorm, dropout 0.5, Linear(512, classes), initialised with kaiming_normal. The module tree is fastai's too
(`Sequential(TimmBody, head)`), so state dicts match. One difference: timm's Swin and SwinV2 return a channels-last
feature map, which the body permutes to NCHW for the head's pooling (fastai 2.8 fails on them). `head: timm` keeps
timm's own classifier. `check_models_train` runs each model of params.yaml through a training step on fake tensors.
"""

import contextlib
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


def arch_config(arch):
    """The pretrained config of `arch` (input size, fixed size, mean/std), built on the meta device: no weights."""
    return _arch_facts(arch)[0]


def total_stride(arch):
    """How many times `arch` shrinks its input before its head: the largest reduction of timm's feature_info (32 for
    a ResNet, 16 for a ViT/16), or None where timm does not say."""
    return _arch_facts(arch)[1]


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
    return dict(model.pretrained_cfg), stride


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
    """A clear error for an architecture timm does not know, a fixed-size model asked for another size, or a size
    below the architecture's total stride.

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
    stride = total_stride(arch)
    if size is not None and stride is not None and min(size) < stride:
        raise PaddyError(
            f"{where} is {arch}, which shrinks its input {stride} times before its head (its total stride, from "
            f"timm's feature_info), but the size asked is {list(size)}: under {stride} pixels a side, its last "
            f"feature map is less than a pixel, and the head sees padding, not the image. Set each side of the size "
            f"to at least {stride} (it was built for {list(built)})."
        )


def check_archs(models, path="params.yaml"):
    """check_arch for every ModelSettings of `models` (name -> settings, their values checked already), and that
    its pretrained weights can be had (a file, the local cache, or a reachable hub) before any stage needs them."""
    for name, model in models.items():
        check_arch(f"`models.{name}.arch` in {path}", model.arch, model.size)
        _pretrained_kwargs(model.arch, model.pretrained)


# Outputs per target of the check's heads: the classes are prepare's to count (targets.json does not exist yet), and
# how many there are does not change whether a model with its head can take a training step
CHECK_CLASSES_PER_TARGET = 2


def check_models_train(models, path="params.yaml"):
    """Every model of params.yaml built with its head and run through one training step's forward and backward at its
    size, on fake tensors (shapes, no weights, no data): a model that cannot train is refused here, in seconds,
    before any stage deletes its outputs, rather than by train@MODEL after download, prepare and profile."""
    passed = set()  # the seed trains each architecture twice (two item methods, the same model)
    for name, model in models.items():
        arch, head, size = model.arch, model.head, model.size
        outputs = CHECK_CLASSES_PER_TARGET * len(model.targets)
        if (arch, head, size, outputs) in passed:
            continue
        try:
            dry_run(arch, outputs, size, head)
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
        passed.add((arch, head, size, outputs))


def to_fake(model):
    """`model`, built on the meta device, with every parameter and buffer an empty CPU tensor of the FakeTensorMode
    this is called in. Not `model.to_empty()`: under fake tensors it swaps each tensor in place, once per path to its
    module, and the second swap of a module shared by several blocks fails (coat_lite_medium's position encoding
    convolutions: "_apply(): Couldn't swap Conv2d.weight"). Each tensor is replaced once; shared ones stay shared."""
    done = {}  # id -> (original, replacement): the original kept alive so that its id is not reused
    for module in model.modules():
        for store in (module._parameters, module._buffers):
            for key, t in store.items():
                if t is None:
                    continue
                if id(t) not in done:
                    empty = torch.empty_like(t, device="cpu")
                    done[id(t)] = (t, nn.Parameter(empty, t.requires_grad) if isinstance(t, nn.Parameter) else empty)
                store[key] = done[id(t)][1]
    return model


def _trains(arch, num_classes, size, head):
    try:
        dry_run(arch, num_classes, size, head)
        return True
    except Exception:
        return False


@contextlib.contextmanager
def fake_model(arch, num_classes, head="fastai", memory_format=None):
    """create_model(arch, num_classes, head=head) with fake tensors for weights, inside the FakeTensorMode it yields
    in: no weights, no memory, seconds even for large models. Some timm models cannot be built under fake tensors;
    built on the meta device first (and moved to `memory_format` there) they can."""
    from torch._subclasses.fake_tensor import FakeTensorMode

    with warnings.catch_warnings(), torch.device("meta"):
        warnings.simplefilter("ignore")
        model = create_model(arch, num_classes, pretrained=False, head=head)
    if memory_format is not None:
        model = model.to(memory_format=memory_format)
    with FakeTensorMode(allow_non_fake_inputs=True):
        yield to_fake(model).train()


def dry_run(arch, num_classes, size, head="fastai", batch=2):
    """One forward and backward of create_model(arch, num_classes, head=head) in training mode on a fake batch of
    `size` (height, width), on fake tensors (fake_model). Raises what the model raises, or a ValueError if the output
    is not (batch, num_classes)."""
    with fake_model(arch, num_classes, head) as model:
        out = model(torch.empty(batch, 3, *size))
        if tuple(out.shape) != (batch, num_classes):
            raise ValueError(f"the model returns shape {list(out.shape)}, not [{batch}, {num_classes}]")
        nn.functional.cross_entropy(out, torch.zeros(batch, dtype=torch.long)).backward()


class TimmBody(nn.Module):
    """fastai's TimmBody: a timm model without its classifier. Models whose config has a pool size (convnets, Swin)
    return their feature map, NCHW, for the head's concat pooling; the others (ViT, DeiT, EVA) return their own
    pooled features: the model without a classifier, i.e. forward_head(pre_logits=True)."""

    def __init__(self, model):
        super().__init__()
        self.needs_pool = model.pretrained_cfg.get("pool_size") is not None
        # timm's Swin and SwinV2 (and other models whose output_fmt is NHWC) return a channels-last map (B, H, W, C)
        # from forward_features. fastai 2.8's TimmBody hands it to the head as it is, whose concat pooling then pools
        # over (W, C), and its first BatchNorm fails: fastai 2.8.12 with timm 1.0.31 on swin_tiny_patch4_window7_224,
        # "running_mean should contain 14 elements not 1536". Permuted to NCHW, the head pools over (H, W) as it does
        # for a convnet; the permute is a view, so the map keeps its memory layout.
        self.permute = self.needs_pool and _output_fmt(model) == "NHWC"
        self.model = model

    def forward(self, x):
        if not self.needs_pool:
            return self.model(x)
        x = self.model.forward_features(x)
        return x.permute(0, 3, 1, 2) if self.permute else x


def _output_fmt(model):
    """timm's `output_fmt` of a model's forward_features ("NCHW" where it does not say); a string or timm's Format."""
    fmt = getattr(model, "output_fmt", "NCHW")
    return getattr(fmt, "value", fmt)


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
    return model if head == "timm" else add_fastai_head(model, num_classes)


def add_fastai_head(model, num_classes):
    """fastai's create_timm_model on a timm model built without a classifier: Sequential(TimmBody, create_head)."""
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
