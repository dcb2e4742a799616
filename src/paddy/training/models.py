"""timm models the way fastai's vision_learner builds them: a timm body, fastai's head or timm's, and the split into
body and head that fine_tune's freezing and discriminative rates act on.

`head: fastai` is fastai's `create_timm_model`: the timm model without its classifier (`TimmBody`), then
`create_head`: concat pooling (for bodies that return a feature map), BatchNorm, dropout 0.25, Linear(nf, 512),
ReLU, BatchNorm, dropout 0.5, Linear(512, classes), initialised with kaiming_normal. The module tree is fastai's too
(`Sequential(TimmBody, head)`), so state dicts match. One difference: timm's Swin and SwinV2 return a channels-last
feature map, which the body permutes to NCHW for the head's pooling (fastai 2.8 fails on them). `head: timm` keeps
timm's own classifier.

What a model is built from (an architecture's config, its pretrained weights) is paddy.training.archs's; the checks
of params.yaml's models before any stage needs them are paddy.training.model_checks's.
"""

import contextlib
import warnings

import timm
import torch
from torch import nn

from paddy.errors import PaddyError
from paddy.training.archs import arch_config, fixed_size, pretrained_kwargs, resizable

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


@contextlib.contextmanager
def fake_model(arch, num_classes, head="fastai", memory_format=None, size=None):
    """create_model(arch, num_classes, head=head, size=size) with fake tensors for weights, inside the
    FakeTensorMode it yields in: no weights, no memory, seconds even for large models. Some timm models cannot be
    built under fake tensors; built on the meta device first (and moved to `memory_format` there) they can."""
    from torch._subclasses.fake_tensor import FakeTensorMode

    with warnings.catch_warnings(), torch.device("meta"):
        warnings.simplefilter("ignore")
        model = create_model(arch, num_classes, pretrained=False, head=head, size=size)
    if memory_format is not None:
        model = model.to(memory_format=memory_format)
    with FakeTensorMode(allow_non_fake_inputs=True):
        yield to_fake(model).train()


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


def create_model(arch, num_classes, pretrained=False, head="fastai", size=None):
    """A timm model for `num_classes` outputs with fastai's head (a Sequential(body, head)) or timm's own.

    pretrained: False, True (timm's weights: the Hugging Face hub or its local cache) or the path of a weights file.
    size: the (height, width) it will see; a fixed-size architecture (ViT, Swin) is built for it (timm resamples
    pretrained position embeddings on load), any other takes every size as it is.
    """
    weights = pretrained_kwargs(arch, pretrained)
    if size is not None and fixed_size(arch) and resizable(arch) and tuple(size) != built_size(arch):
        weights["img_size"] = tuple(size)
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


def built_size(arch):
    """The (height, width) the architecture's pretrained config was built for."""
    return tuple(arch_config(arch)["input_size"][1:])


def timm_model(model):
    """The timm model inside create_model's: its body's, under fastai's head."""
    return model[0].model if isinstance(model, nn.Sequential) and isinstance(model[0], TimmBody) else model


def set_input_size(model, size, optimizer=None):
    """Switch a fixed-size model (ViT, Swin) built by create_model to input `size` (progressive resizing's next
    phase), through timm's set_input_size: position embeddings (a Swin's windows and relative position tables)
    resampled. Others take any size: nothing to do. The resampled tensors are new parameters, so `optimizer`'s groups
    are pointed at them, in the same places (its state is per phase, cleared at a phase's start, or loaded on a
    resume after this)."""
    inner = timm_model(model)
    if not getattr(inner, "pretrained_cfg", {}).get("fixed_input_size") or not hasattr(inner, "set_input_size"):
        return
    current = getattr(getattr(inner, "patch_embed", None), "img_size", None)
    if current is not None and tuple(current) == tuple(size):
        return
    before = dict(model.named_parameters())
    inner.set_input_size(img_size=tuple(size))
    after = dict(model.named_parameters())
    swap = {id(before[n]): p for n, p in after.items() if n in before and p is not before[n]}
    if optimizer is not None and swap:
        for group in optimizer.param_groups:
            group["params"] = [swap.get(id(p), p) for p in group["params"]]


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
