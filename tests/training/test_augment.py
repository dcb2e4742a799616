"""fastai's aug_transforms on the device: conventions (a flip mirrors, neutral values change nothing), the ranges and
probabilities of every draw, fastai's crop rule, determinism. benchmarks/fastai_parity.py compares the resampling
with fastai's own on the same matrices."""

import math

import pytest
import torch

from paddy.settings import AugmentSettings
from paddy.training import augment as aug
from paddy.training.augment import BatchAugment

N = 4000  # draws: enough for probabilities to within a few percent


def draws(seed=0):
    return aug._Draws(N, torch.device("cpu"), torch.Generator().manual_seed(seed))


def items(n=3, h=48, w=40, seed=0):
    return torch.randint(0, 256, (n, h, w, 3), dtype=torch.uint8, generator=torch.Generator().manual_seed(seed))


def normalise(x):
    return (x.permute(0, 3, 1, 2).float() / 255 - 0.5) / 0.5


def test_plain_at_the_item_size_is_the_item_normalised():
    x = items(h=40, w=40)
    out = BatchAugment((40, 40), (0.5,) * 3, (0.5,) * 3).plain(x)
    torch.testing.assert_close(out, normalise(x), atol=1e-5, rtol=0)


def test_a_flip_mirrors_and_neutral_lighting_changes_nothing():
    x = items()
    a = BatchAugment((48, 40), (0.5,) * 3, (0.5,) * 3)
    flip = torch.tensor([[-1.0, 0, 0], [0, 1, 0]]).expand(3, 2, 3)
    full = aug._full_crops(3, 48, 40, x)
    mirrored = a.apply(x, {"boxes": full, "mat": flip})
    torch.testing.assert_close(mirrored, normalise(x).flip(-1), atol=1e-5, rtol=0)
    neutral = (torch.full((3,), 0.5), torch.ones(3))
    lit = a.apply(x, {"boxes": full, "mat": torch.eye(3)[:2].expand(3, 2, 3), "lighting": neutral})
    torch.testing.assert_close(lit, normalise(x), atol=1e-4, rtol=0)


def test_flip_rotate_zoom_ranges_and_probabilities():
    d = draws()
    sign = aug._flip(d, 0.5)[:, 0, 0]
    assert set(sign.tolist()) == {-1.0, 1.0} and (sign < 0).float().mean() == pytest.approx(0.5, abs=0.03)
    rot = aug._rotate(d, 10.0, 0.75)
    theta = torch.atan2(rot[:, 0, 1], rot[:, 0, 0]) * 180 / math.pi
    assert theta.abs().max() <= 10.0 and (theta != 0).float().mean() == pytest.approx(0.75, abs=0.03)
    zoom = aug._zoom(d, 1.0, 1.1, 0.75)
    scale = 1 / zoom[:, 0, 0]
    assert scale.min() >= 1.0 and scale.max() <= 1.1 and (scale > 1).float().mean() == pytest.approx(0.75, abs=0.03)
    # the zoomed window stays inside the image: |translation| <= 1 - 1/scale
    assert (zoom[:, 0, 2].abs() <= 1 - zoom[:, 0, 0] + 1e-6).all()


def test_lighting_and_warp_ranges_and_probabilities():
    brightness, contrast = aug._lighting_draws(draws(), 0.2, 0.75)
    assert brightness.min() >= 0.4 and brightness.max() <= 0.6
    assert (brightness != 0.5).float().mean() == pytest.approx(0.75, abs=0.03)
    assert contrast.min() >= 0.8 - 1e-6 and contrast.max() <= 1.25 + 1e-6
    assert (contrast != 1).float().mean() == pytest.approx(0.75, abs=0.03)
    coeffs = aug._warp_targets(draws(), 0.2, 0.75)
    corners = torch.tensor([[[-1.0, -1.0]]]).expand(N, 1, 2)
    moved = aug._apply_perspective(corners, coeffs)  # where the corner (-1, -1) samples from
    assert (moved - corners).abs().max() < 1  # a perspective of moves of at most 0.2: the corner stays near
    unwarped = ((moved - corners).abs().amax((1, 2)) < 1e-6).float().mean()
    assert unwarped == pytest.approx(0.25**2, abs=0.02)  # x and y each kept with p 0.75


def test_perspective_coefficients_map_the_target_points_onto_the_corners():
    """fastai's find_coeffs(p1, p2): the perspective map sends each p2 to its p1 (the sampling grid's warp)."""
    corners = torch.tensor([[-1.0, -1.0], [-1, 1], [1, -1], [1, 1]]).expand(5, 4, 2)
    targets = corners + 0.2 * (torch.rand(5, 4, 2, generator=torch.Generator().manual_seed(0)) - 0.5)
    coeffs = aug._perspective_coeffs(corners, targets)
    torch.testing.assert_close(aug._apply_perspective(targets[:, :, None], coeffs)[:, :, 0], corners)


def test_crops_follow_fastais_rule():
    """Square crops of 0.75..1 of the area that fit, at a random place; a portrait 640x480 item, where a square of
    more than 0.7516 of the area is wider than 480, mostly gets fastai's fallback, the centre 480x480."""
    boxes = aug._random_crops(N, 100, 100, 0.75, draws())
    top, left, h, w = boxes.unbind(1)
    assert (h == w).all() and ((h * w) / 1e4).min() >= 0.74 and ((h * w) / 1e4).max() <= 1.0
    assert (top >= 0).all() and (top + h <= 100).all() and (left + w <= 100).all()
    portrait = aug._random_crops(N, 640, 480, 0.75, draws())
    assert (portrait[:, 1:] == torch.tensor([0.0, 480, 480])).all()
    assert (portrait[:, 0] == 80).float().mean() == pytest.approx(0.94, abs=0.02)  # 10 tries at 0.6 % each
    assert aug._fallback_crops(1, 640, 480, portrait).tolist() == [[80.0, 0.0, 480.0, 480.0]]


def test_the_augmentation_is_repeatable_and_varies_with_the_seed():
    x = items(n=8, h=64, w=48)
    a = BatchAugment((32, 32), (0.5,) * 3, (0.5,) * 3, AugmentSettings())
    one = a.train(x, torch.Generator().manual_seed(1))
    assert torch.equal(one, a.train(x, torch.Generator().manual_seed(1)))
    assert not torch.equal(one, a.train(x, torch.Generator().manual_seed(2)))
    assert one.shape == (8, 3, 32, 32) and one.dtype == torch.float32


def test_a_micro_batch_gets_its_share_of_the_draws():
    x = items(n=6, h=32, w=32)
    a = BatchAugment((24, 24), (0.5,) * 3, (0.5,) * 3)
    d = a.draw(x, torch.Generator().manual_seed(3))
    whole = a.apply(x, d)
    parts = torch.cat([a.apply(x[i : i + 4], aug.slice_draws(d, i, i + 4)) for i in (0, 4)])
    torch.testing.assert_close(parts, whole)
