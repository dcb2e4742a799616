"""The training step counts samples: any split into micro-batches gives one full batch's gradient (no BatchNorm: ViT
with timm's head), on the same augmented images, because the augmentation is drawn for the whole step."""

import pytest
import timm
import torch
from helpers.training import CaptureGradients

from paddy.training.augment import BatchAugment
from paddy.training.step import Step, train_step


@pytest.fixture(scope="module")
def vit():
    torch.manual_seed(0)
    return timm.create_model("test_vit", num_classes=10).train()  # LayerNorm only, no dropout


def step_gradients(model, items, targets, micro, sum_unscaled=False):
    augment = BatchAugment((160, 160), (0.5,) * 3, (0.5,) * 3)
    capture = CaptureGradients(model)
    generator = torch.Generator().manual_seed(7)  # the same draws for every split
    loss = train_step(model, capture, items, targets, generator, Step(augment, "fp32", micro))
    return capture.grads, loss


@pytest.mark.parametrize("n, micro", [(64, 16), (40, 16), (64, 24)])
def test_micro_batches_match_one_full_batch(vit, n, micro):
    """64 as 4 x 16; a short group of 40 as 16+16+8; 64 as 24+24+16 (micro-batch not a divisor)."""
    torch.manual_seed(1)
    items, targets = torch.randint(0, 256, (n, 160, 160, 3), dtype=torch.uint8), torch.randint(0, 10, (n,))
    expected, full_loss = step_gradients(vit, items, targets, n)
    got, loss = step_gradients(vit, items, targets, micro)
    assert len(got) == len(expected)
    for g, e in zip(got, expected):
        torch.testing.assert_close(g, e, rtol=1e-4, atol=1e-6)
    assert loss.item() == pytest.approx(full_loss.item(), rel=1e-5)


def test_unscaled_sum_would_differ(vit):
    """The check above can fail: summing unscaled micro-batch losses gives 4x the gradient."""
    torch.manual_seed(2)
    items, targets = torch.randint(0, 256, (64, 160, 160, 3), dtype=torch.uint8), torch.randint(0, 10, (64,))
    expected, _ = step_gradients(vit, items, targets, 64)
    augment = BatchAugment((160, 160), (0.5,) * 3, (0.5,) * 3)
    x = augment.train(items, torch.Generator().manual_seed(7))
    vit.zero_grad(set_to_none=True)
    for xs, ys in zip(x.split(16), targets.split(16)):
        torch.nn.functional.cross_entropy(vit(xs), ys).backward()
    i = [name for name, _ in vit.named_parameters()].index("patch_embed.proj.weight")
    assert not torch.allclose(vit.patch_embed.proj.weight.grad, expected[i], rtol=1e-3)
