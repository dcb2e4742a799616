"""The multi-label model's training core without fastai: its loss is torch's binary cross-entropy with logits, in
fp32 and under CPU autocast, and a tiny model learns generated tags through the pipeline's own path (prepare, the
tag-balanced split, create_run, train_model, validate_tags). Parity with fastai's multi-label learner itself (its
loss, targets, pixels, optimizer steps and metrics) is tests/training/test_fastai_multi_label_parity.py's."""

import numpy as np
import pytest
import torch
from helpers.data import TAG_COLOURS, make_tags_competition, prepared_tags_work, tags_settings
from helpers.training import train
from torch import nn

from paddy.data.split import read_splits
from paddy.tags import mean_fbeta, tag_matrix
from paddy.training.step import Heads, output_probs, target_loss

HEADS = Heads((17,), multi_label=True)  # Planet's 17 tags


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Tiny tensors: one thread runs them several times faster than two on a busy 2-core machine (no OpenMP
    threads spinning for cores another process holds; the smoke test took 12 s with two, 1.6 s with one)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def logits_and_tags(seed=0, n=64):
    """A linear layer's logits for n images and their 0/1 tags (uint8, as the loader gives them), the logits spread
    over +-8 like a model's part-way through training."""
    g = torch.Generator().manual_seed(seed)
    layer = nn.Linear(32, HEADS.sizes[0])
    with torch.no_grad():
        layer.weight.copy_(torch.randn(layer.weight.shape, generator=g) * 0.5)
        layer.bias.zero_()
    x = torch.randn(n, 32, generator=g)
    tags = (torch.rand(n, HEADS.sizes[0], generator=g) < 0.3).to(torch.uint8)
    return layer, x, tags


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_the_loss_is_torchs_bce_with_logits(precision):
    """target_loss of a multi-label head is nn.BCEWithLogitsLoss (the mean over images and tags) of the float
    targets, value and gradient. Under CPU autocast (bf16) the model's logits are bf16 and the loss is computed in
    float32 from them on both sides (autocast runs binary_cross_entropy_with_logits in float32 too): equal to the
    last bit. Measured: 0 difference in value and in the logits' gradient."""
    layer, x, tags = logits_and_tags()
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16"):
        logits = layer(x)
        assert logits.dtype == (torch.bfloat16 if precision == "bf16" else torch.float32)
        ours = target_loss(logits, tags, HEADS)
        theirs = nn.BCEWithLogitsLoss()(logits, tags.float())
    assert ours.dtype == theirs.dtype == torch.float32
    assert ours.item() == theirs.item()
    (grad_ours,) = torch.autograd.grad(ours, logits, retain_graph=True)
    (grad_theirs,) = torch.autograd.grad(theirs, logits)
    assert torch.equal(grad_ours, grad_theirs)
    # and it is the mean over images and tags of each tag's own binary cross-entropy, not a sum or a softmax
    p = logits.detach().float().sigmoid().double()
    by_hand = -(tags * p.log() + (1 - tags.double()) * (1 - p).log()).mean()
    assert ours.item() == pytest.approx(by_hand.item(), rel=1e-5)
    probs = output_probs(logits.detach().float(), HEADS)
    assert torch.equal(probs, logits.detach().float().sigmoid())  # independent tags: rows need not sum to 1


def test_a_tiny_model_learns_generated_tags(params, tmp_path):
    """The smoke test: test_resnet from random weights learns three tags (coloured patches on noise, each image
    1-3 of them) through the pipeline's own path, prepare, the tag-balanced split, create_run (multi-hot targets,
    the multi-label heads) and train_model (train_step, validate_tags), in a few seconds on one CPU thread. On its ~60
    validation images it must beat the trivial answers by far: valid_acc each tag's majority value (0.56 here),
    the mean F2 predicting every tag (0.84), the loss half the tags' prior entropy (0.68). Measured: valid_acc 0.977,
    valid_mean_f2 0.987, valid_loss 0.068; over 6 data and training seeds 0.962-0.989, 0.970-0.992, 0.037-0.077."""
    make_tags_competition(tmp_path / "raw", n_train=240)
    index = prepared_tags_work(params, tmp_path / "raw", tmp_path)
    params["models"] = {"resnet": dict(params["models"]["resnet"], item_size=[32, 32], size=[32, 32])}
    settings = tags_settings(params, {"train.epochs": 8, "train.effective_batch": 16, "train.aug.max_rotate": 0.0})
    history = []
    (result,) = train(settings, tmp_path, tmp_path / "models", (16, 64), on_epoch=lambda s, e, m: history.append(m))
    print("\n" + "\n".join(f"epoch {e + 1}: " + ", ".join(f"{k} {m[k]:.4f}" for k in sorted(m) if k.startswith(
        ("train_loss", "valid_"))) for e, m in enumerate(history)))  # fmt: skip

    table, _ = read_splits(tmp_path / "split.csv")
    valid = index.set_index("image_id").label[table.image_id[table.v0 == 1]].tolist()
    truth = tag_matrix(valid, sorted(TAG_COLOURS))
    prior = truth.mean(0)
    majority = float(np.maximum(prior, 1 - prior).mean())
    every_tag = mean_fbeta(truth, np.ones_like(truth), 2.0)
    entropy = float(-(prior * np.log(prior) + (1 - prior) * np.log(1 - prior)).mean())
    print(f"{len(valid)} validation images, trivial: accuracy {majority:.3f}, F2 {every_tag:.3f}, loss {entropy:.3f}")
    assert 50 <= len(valid) <= 70 and set(result) >= {"valid_loss", "valid_acc", "valid_mean_f2"}
    assert result["valid_acc"] >= max(0.85, majority + 0.2), (result, majority)
    assert result["valid_mean_f2"] >= every_tag + 0.05, (result, every_tag)
    assert result["valid_loss"] < entropy / 2, (result, entropy)
    assert history[-1]["train_loss"] < history[0]["train_loss"] / 2
