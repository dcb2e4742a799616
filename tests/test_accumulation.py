"""Gradient accumulation by sample count gives the gradient of one full batch (no BatchNorm: ViT)."""

import pytest
import timm
import torch

from paddy.train import accumulate_gradients


def grads(model):
    return [p.grad.detach().clone() for p in model.parameters() if p.grad is not None]


def full_batch_grads(model, x, y):
    model.zero_grad(set_to_none=True)
    torch.nn.functional.cross_entropy(model(x), y).backward()
    return grads(model)


@pytest.fixture(scope="module")
def vit():
    torch.manual_seed(0)
    return timm.create_model("test_vit", num_classes=10).train()  # LayerNorm only, no dropout


@pytest.mark.parametrize("n, micro", [(64, 16), (40, 16), (64, 24)])
def test_micro_batches_match_one_full_batch(vit, n, micro):
    """64 as 4 x 16; a short group of 40 as 16+16+8; 64 as 24+24+16 (micro-batch not a divisor)."""
    torch.manual_seed(1)
    x, y = torch.randn(n, 3, 160, 160), torch.randint(0, 10, (n,))
    expected = full_batch_grads(vit, x, y)
    vit.zero_grad(set_to_none=True)
    loss = accumulate_gradients(vit, x, y, micro, torch.device("cpu"))
    got = grads(vit)
    assert len(got) == len(expected)
    for g, e in zip(got, expected):
        torch.testing.assert_close(g, e, rtol=1e-4, atol=1e-6)
    assert loss == pytest.approx(torch.nn.functional.cross_entropy(vit(x), y).item(), rel=1e-4)


def test_unscaled_sum_would_differ(vit):
    """The check above can fail: summing unscaled micro-batch losses gives 4x the gradient."""
    torch.manual_seed(2)
    x, y = torch.randn(64, 3, 160, 160), torch.randint(0, 10, (64,))
    expected = full_batch_grads(vit, x, y)
    vit.zero_grad(set_to_none=True)
    for xs, ys in zip(x.split(16), y.split(16)):
        torch.nn.functional.cross_entropy(vit(xs), ys).backward()
    assert not torch.allclose(grads(vit)[0], expected[0], rtol=1e-3)
