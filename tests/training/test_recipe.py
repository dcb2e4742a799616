"""fastai's fine_tune, pinned without fastai: the schedule's values (computed with fastai 2.8's own combined_cos),
the body/head split, what trains while frozen, which parameters get weight decay, and the optimizer's settings.
benchmarks/fastai_parity.py checks the same against a real fastai Learner, step by step."""

import pytest
import torch
from torch import nn

from paddy.training.models import create_model, head_parameters, norm_bias_params, set_frozen
from paddy.training.optim import create_optimizer
from paddy.training.schedule import fine_tune_phases, lr_at, momentum_at, position, set_hyperparameters

# fastai.callback.schedule.combined_cos at the positions fine_tune's ParamScheduler uses, with 5 optimizer steps of
# 2 micro-batches per epoch: (phase, step, body lr, head lr, momentum). Frozen: fine_tune(3, 0.01, freeze_epochs=1,
# lr_mult=100) -> slice(0.01) = [0.001, 0.01], pct_start 0.99, div 25. Unfrozen: 3 epochs of slice(5e-5, 5e-3),
# pct_start 0.3, div 5.
FASTAI = [
    ("frozen", 0, 6.396586256364119e-05, 0.0006396586256364119, 0.947503555982954),
    ("frozen", 2, 0.0005276156254216645, 0.005276156254216645, 0.8992067056852433),
    ("frozen", 4, 0.0009805566135226305, 0.009805566135226304, 0.8520253527580594),
    ("unfrozen", 0, 1.1206147602071965e-05, 0.0011206147602071965, 0.94698463099482),
    ("unfrozen", 1, 1.9999998918891356e-05, 0.0019999998918891356, 0.9250000027027716),
    ("unfrozen", 4, 5e-05, 0.005, 0.85),
    ("unfrozen", 7, 4.058734021972663e-05, 0.004058734021972663, 0.8688255078156248),
    ("unfrozen", 14, 2.7972721656466487e-07, 2.7972721656465728e-05, 0.9494415399822704),
]


def test_fine_tune_phases_are_fastais():
    frozen, unfrozen = fine_tune_phases(epochs=3, lr=0.01, frozen_epochs=1, lr_mult=100)
    assert (frozen.epochs, frozen.lr, frozen.body_scale, frozen.div, frozen.pct_start) == (1, 0.01, 0.1, 25.0, 0.99)
    assert (unfrozen.epochs, unfrozen.lr, unfrozen.div, unfrozen.pct_start) == (3, 0.005, 5.0, 0.3)
    assert unfrozen.body_scale == pytest.approx(0.01)
    (only,) = fine_tune_phases(epochs=3, lr=0.01, frozen_epochs=0, lr_mult=1)  # fine_tune(freeze_epochs=0)
    assert (only.name, only.lr, only.div) == ("unfrozen", 0.005, 5.0)


@pytest.mark.parametrize("phase_name, step, body, head, mom", FASTAI)
def test_schedule_matches_fastai(phase_name, step, body, head, mom):
    frozen, unfrozen = fine_tune_phases(epochs=3, lr=0.01, frozen_epochs=1, lr_mult=100)
    phase = frozen if phase_name == "frozen" else unfrozen
    pos = position(step, phase.epochs * 5, accumulation=2)
    model = create_model("test_vit", 10)
    optimizer = create_optimizer(model, 0.01, lr_mult=100)
    set_hyperparameters(optimizer, phase, pos)
    rates = {g["part"]: g["lr"] for g in optimizer.param_groups}
    # To 1e-6 of the phase's peak rate: fastai computes the position in float32, which moves the tail by ~1e-11.
    close = dict(rel=1e-6, abs=1e-6 * phase.lr)
    assert rates["head"] == pytest.approx(head, **close) and lr_at(phase, pos) == pytest.approx(head, **close)
    assert rates["body"] == pytest.approx(body, **close)
    assert momentum_at(phase, pos) == pytest.approx(mom, abs=1e-6)
    for group in optimizer.param_groups:
        assert group["betas"] == (pytest.approx(mom, abs=1e-6), 0.99)


def test_schedule_position_counts_micro_batches_like_fastais_param_scheduler():
    assert position(0, 10, 1) == 0.0 and position(9, 10, 1) == 0.9  # no accumulation: step / steps
    assert position(0, 10, 2) == 1 / 20 and position(9, 10, 2) == 19 / 20  # the step's last micro-batch


def test_fastai_head_and_split():
    """vision_learner's model: Sequential(TimmBody, create_head(...)); the head is everything after the body."""
    model = create_model("test_resnet", 10, head="fastai")
    assert isinstance(model, nn.Sequential) and len(model) == 2
    kinds = [type(m).__name__ for m in model[1]]
    assert kinds == [
        "AdaptiveConcatPool2d",
        "Flatten",
        "BatchNorm1d",
        "Dropout",
        "Linear",
        "ReLU",
        "BatchNorm1d",
        "Dropout",
        "Linear",
    ]
    assert model[1][4].in_features == 2 * model[0].model.num_features and model[1][4].out_features == 512
    assert [model[1][3].p, model[1][7].p] == [0.25, 0.5] and model[1][8].bias is None
    assert model(torch.randn(2, 3, 64, 64)).shape == (2, 10)
    vit = create_model("test_vit", 10, head="fastai")
    assert type(vit[1][0]).__name__ == "BatchNorm1d"  # ViT pools itself: no concat pooling
    assert {id(p) for p in head_parameters(model)} == {id(p) for p in model[1].parameters()}
    timm_head = create_model("test_vit", 10, head="timm")
    assert {id(p) for p in head_parameters(timm_head)} == {id(p) for p in timm_head.head.parameters()}


def test_frozen_body_trains_only_norm_layers_and_unfreeze_trains_all():
    """fastai's freeze with train_bn=True: the head and every norm layer of the body learn; nothing else."""
    model = create_model("test_resnet", 10, head="fastai")
    set_frozen(model, True)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    norms = {
        f"{name}.{p}"
        for name, m in model.named_modules()
        if isinstance(m, nn.BatchNorm2d)
        for p, _ in m.named_parameters()
    }
    assert norms and norms <= trainable
    assert {n for n in trainable if n.startswith("0.")} == norms  # in the body: exactly the norm layers
    assert {n for n, _ in model.named_parameters() if n.startswith("1.")} <= trainable
    set_frozen(model, False)
    assert all(p.requires_grad for p in model.parameters())


def test_weight_decay_spares_norm_layers_and_biases():
    """fastai's wd_bn_bias=False: norm_bias_params(with_bias=True) get no weight decay, everything else 0.01."""
    model = create_model("test_vit", 10, head="fastai")
    optimizer = create_optimizer(model, 0.01)
    decay = {id(p): g["weight_decay"] for g in optimizer.param_groups for p in g["params"]}
    spared = {id(p) for p in norm_bias_params(model)}
    named = dict(model.named_parameters())
    assert decay[id(named["0.model.blocks.0.norm1.weight"])] == 0.0  # LayerNorm
    assert decay[id(named["0.model.blocks.0.attn.qkv.bias"])] == 0.0  # a bias
    assert decay[id(named["0.model.blocks.0.attn.qkv.weight"])] == 0.01
    assert decay[id(named["0.model.pos_embed"])] == 0.01  # fastai decays it too (not a norm or a bias)
    assert all((decay[i] == 0.0) == (i in spared) for i in decay)
    assert len(decay) == len(named)


def test_optimizer_is_fastais_adam():
    model = create_model("test_vit", 10)
    optimizer = create_optimizer(model, 0.01, lr_mult=100)
    group = optimizer.param_groups[0]
    assert group["eps"] == 1e-5 and group["betas"] == (0.9, 0.99) and not group["amsgrad"]
    assert isinstance(optimizer, torch.optim.AdamW)  # decoupled weight decay: fastai's decouple_wd=True


def test_layer_wise_rates_are_an_option():
    """lr_groups: layers spreads the body's rates over timm's layer groups, earliest lowest, never above the head."""
    model = create_model("test_vit", 10, head="timm")
    optimizer = create_optimizer(model, 0.01, lr_mult=100, lr_groups="layers")
    (unfrozen,) = fine_tune_phases(epochs=1, lr=0.01, frozen_epochs=0, lr_mult=100)
    set_hyperparameters(optimizer, unfrozen, 0.3)  # the peak: the head at lr/2
    rate = {id(p): g["lr"] for g in optimizer.param_groups for p in g["params"]}
    named = dict(model.named_parameters())
    assert rate[id(named["patch_embed.proj.weight"])] == pytest.approx(0.005 / 100)
    assert rate[id(named["blocks.0.attn.qkv.weight"])] > rate[id(named["patch_embed.proj.weight"])]
    assert rate[id(named["blocks.0.attn.qkv.weight"])] < rate[id(named["norm.weight"])] < 0.005
    assert rate[id(named["head.weight"])] == pytest.approx(0.005)
    body_head = create_optimizer(model, 0.01, lr_mult=100)
    set_hyperparameters(body_head, unfrozen, 0.3)
    assert {round(g["lr"], 12) for g in body_head.param_groups} == {5e-5, 0.005}  # the default: two rates
