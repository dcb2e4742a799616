"""Mixed precision on the CPU: an explicit bf16 or fp16 runs there with CUDA's autocast and grad-scaler logic, so
fp16 (what Kaggle's T4 and P100 run) is tested without a GPU, and the steps its scaler skips are counted."""

import pytest
import timm
import torch
from helpers.data import prepared_work
from helpers.training import train

from paddy.settings import parse_settings
from paddy.training import loop
from paddy.training.augment import BatchAugment
from paddy.training.precision import backward_mode, create_scaler, resolve_precision
from paddy.training.step import Step, train_step

CPU = torch.device("cpu")


def test_the_cpu_honours_an_explicit_precision_and_auto_stays_fp32():
    assert [resolve_precision(p, CPU) for p in ("auto", "fp32", "bf16", "fp16")] == ["fp32", "fp32", "bf16", "fp16"]
    assert create_scaler("fp16", CPU).is_enabled() and create_scaler("bf16", CPU) is None


def test_fp16_convolution_gradients_match_torchs_own_fp16_kernel():
    """The fast path (fp32 sums, fp16 tensors in and out) against torch's slow fp16 kernel, on a small convolution."""
    torch.manual_seed(0)
    conv = torch.nn.Conv2d(8, 16, 3, padding=1).half()
    x = torch.randn(4, 8, 12, 10).half().requires_grad_()
    grad = torch.randn(4, 16, 12, 10).half()
    native = torch.autograd.grad(conv(x), [x, conv.weight, conv.bias], grad)
    with backward_mode(CPU, "fp16"):
        fast = torch.autograd.grad(conv(x), [x, conv.weight, conv.bias], grad)
    for a, b in zip(native, fast):
        assert b.dtype == torch.float16
        assert torch.allclose(a.float(), b.float(), rtol=1e-2, atol=1e-2 * b.float().abs().max().item())


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
@pytest.mark.parametrize("arch", ["test_resnet", "test_vit"])
def test_a_mixed_precision_step_on_the_cpu_follows_the_fp32_step(arch, precision):
    """One step from the same weights on the same images: the gradients (read off an SGD step at rate 1, through the
    scaler's unscaling) agree to mixed precision's error."""
    items = torch.randint(0, 256, (16, 64, 64, 3), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    targets = torch.randint(0, 10, (16,), generator=torch.Generator().manual_seed(1))
    updates = {}
    for p in ("fp32", precision):
        torch.manual_seed(0)
        model = timm.create_model(arch, num_classes=10, img_size=64) if "vit" in arch else timm.create_model(arch)
        before = [q.detach().clone() for q in model.parameters()]
        optimizer = torch.optim.SGD(model.parameters(), lr=1.0)
        scaler = create_scaler(p, CPU)
        torch.manual_seed(1)
        step = Step(BatchAugment((64, 64)), p, 8, scaler)
        train_step(model, optimizer, items, targets, torch.Generator().manual_seed(2), step)
        updates[p] = torch.cat([(q.detach() - b).flatten() for q, b in zip(model.parameters(), before)])
    assert torch.isfinite(updates[precision]).all()
    cosine = torch.nn.functional.cosine_similarity(updates["fp32"], updates[precision], dim=0)
    assert cosine > (0.99 if precision == "fp16" else 0.97), cosine  # bf16 keeps 3 fewer bits than fp16
    ratio = updates[precision].norm() / updates["fp32"].norm()
    assert 0.95 < ratio < 1.05, ratio  # unscaled: the scaler's factor is gone


def test_fp16_training_counts_the_steps_its_scaler_skipped(competition, params, tmp_path, monkeypatch):
    """A scale far too large overflows the first steps: each is skipped (halving the scale) and counted."""
    prepared_work(competition, tmp_path)
    params["models"] = {"resnet": params["models"]["resnet"]}
    params["train"]["epochs"] = 2
    scalers = []

    def huge_scaler(precision, device):
        scalers.append(torch.amp.GradScaler(device.type, init_scale=2.0**40))
        return scalers[-1]

    monkeypatch.setattr(loop, "create_scaler", huge_scaler)
    params["train"]["precision"] = "fp16"
    result = train(parse_settings(params), tmp_path, tmp_path / "m")[0]
    skipped = result["skipped_steps"]
    assert skipped >= 1
    assert scalers[0].get_scale() == 2.0**40 * 0.5**skipped  # the scale halves exactly once per skipped step
