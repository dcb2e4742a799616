"""fastai's `aug_transforms(size, min_scale)`, batch-wise on the device, from uint8 items to normalised model input.

The loader hands over uint8 items (the per-image resize done once, on the CPU); everything random happens here, on
the GPU when there is one, as fastai does it: flip (p 0.5), perspective warp, rotation and zoom (each p_affine),
brightness and contrast in logit space (each p_lighting), and a random resized crop of the item to the model's size
(scale min_scale..1, aspect ratio 1 relative to the item, with fastai's centre-crop fallback). The same ranges and
probabilities as fastai 2.8 (`fastai/vision/augment.py`), drawn per image. Then, as fastai's `vision_learner`, the
architecture's mean/std normalise the input of a model that starts from pretrained weights, and nothing does for one
that starts from random weights: it sees pixels in [0, 1] (paddy.training.models.input_normalization decides, for
every user).

Three differences, all deliberate (measured in tests/training/test_fastai_pixel_parity.py and docs/performance.md):
fastai samples twice (affine at the item size, then the crop), here the crop, the affine and the warp are composed into
one grid_sample, so an image is interpolated once; fastai draws one crop per batch (its RandomResizedCropGPU), here each
image draws its own from the same distribution; and an item more than twice the output size is shrunk whole before
the one resampling, where fastai shrinks only a crop more than twice the size (following it would read every
batch's crops back from the device).
"""

import copy
import math

import torch
import torch.nn.functional as F

from paddy.settings import AugmentSettings


class BatchAugment:
    """uint8 items (B, H, W, 3) on the device -> float (B, 3, h, w) model input, normalised by `mean` and `std` when
    given (a pretrained model's statistics), else left in [0, 1].

    `draw(items, generator)` draws every image's random augmentation, `apply(items, draws)` applies it: a training
    step draws for its whole batch once and applies per micro-batch, so the images a step sees do not depend on how
    it is split into micro-batches. `plain(items)` is fastai's validation transform: the crop's deterministic
    fallback (the centre, at aspect ratio 1) resized to the size.
    """

    def __init__(self, size, mean=None, std=None, settings=None):
        self.size, self.s = tuple(size), settings or AugmentSettings()
        self.mean = None if mean is None else torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1)
        self.std = None if std is None else torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1)

    def at(self, size):
        """The same augmentation with output `size` (progressive resizing's phases): the draws do not depend on it."""
        if tuple(size) == self.size:
            return self
        out = copy.copy(self)
        out.size = tuple(size)
        return out

    def draw(self, items, generator):
        """The random draws for a batch of items: crop boxes, affine matrices, warps, lighting (per image)."""
        b, h, w, _ = items.shape
        draw = _Draws(b, items.device, generator)
        s = self.s
        out = {"boxes": _random_crops(b, h, w, s.min_scale, draw) if s.min_scale < 1 else _full_crops(b, h, w, items)}
        mat = _identity(b, items.device)
        if s.do_flip:
            mat = mat @ (_dihedral(draw, 0.5) if s.flip_vert else _flip(draw, 0.5))
        if s.max_warp:
            out["warp"] = _warp_targets(draw, s.max_warp, s.p_affine)
        if s.max_rotate:
            mat = mat @ _rotate(draw, s.max_rotate, s.p_affine)
        if s.min_zoom < 1 or s.max_zoom > 1:
            mat = mat @ _zoom(draw, s.min_zoom, s.max_zoom, s.p_affine)
        out["mat"] = _aspect_corrected(mat, h, w)
        if s.max_lighting:
            out["lighting"] = _lighting_draws(draw, s.max_lighting, s.p_lighting)
        return out

    def apply(self, items, draws):
        x = _sample(_to_float(items), draws["boxes"], draws["mat"], draws.get("warp"), self.size)
        if "lighting" in draws:
            x = _lighting(x, *draws["lighting"])
        return self._normalise(x)

    def train(self, items, generator):
        return self.apply(items, self.draw(items, generator))

    def plain(self, items):
        b, h, w, _ = items.shape
        boxes = _fallback_crops(b, h, w, items) if self.s.min_scale < 1 else _full_crops(b, h, w, items)
        return self._normalise(_sample(_to_float(items), boxes, None, None, self.size))

    def _normalise(self, x):
        if self.mean is not None:
            x = (x - self.mean.to(x.device)) / self.std.to(x.device)
        # channels_last lets cuDNN pick its fastest convolution kernels; on the CPU it changes nothing that matters
        return x.contiguous(memory_format=torch.channels_last) if x.is_cuda else x.contiguous()


def slice_draws(draws, start, stop):
    """The draws of images start..stop of a batch (a micro-batch's share)."""
    return {k: tuple(t[start:stop] for t in v) if isinstance(v, tuple) else v[start:stop] for k, v in draws.items()}


def _to_float(items):
    """(B, H, W, 3) uint8 -> (B, 3, H, W) float in [0, 1]; the bytes cross to the device as uint8, 4x fewer."""
    return items.permute(0, 3, 1, 2).float().div_(255)


class _Draws:
    """Uniform draws for one batch from one generator: fastai draws per image (batch=False) with torch's RNG."""

    def __init__(self, n, device, generator):
        self.n, self.device, self.generator = n, device, generator

    def uniform(self, lo, hi, *shape):
        u = torch.rand((self.n, *shape), device=self.device, generator=self.generator)
        return lo + (hi - lo) * u

    def mask(self, values, p, neutral=0.0):
        """fastai's _draw_mask: each image keeps its value with probability p, else gets the neutral value."""
        keep = torch.rand(self.n, device=self.device, generator=self.generator) < p
        return torch.where(keep, values, torch.full_like(values, neutral))


def _identity(n, device):
    return torch.eye(3, device=device).expand(n, 3, 3).clone()


def _affine(a, b, c, d, e, f):
    """Batched 3x3 matrices [[a, b, c], [d, e, f], [0, 0, 1]] from (B,) tensors."""
    zero, one = torch.zeros_like(a), torch.ones_like(a)
    return torch.stack([torch.stack([a, b, c], 1), torch.stack([d, e, f], 1), torch.stack([zero, zero, one], 1)], 1)


def _flip(draw, p):
    sign = draw.mask(torch.full((draw.n,), -1.0, device=draw.device), p, neutral=1.0)
    zero = torch.zeros_like(sign)
    return _affine(sign, zero, zero, zero, torch.ones_like(sign), zero)


def _dihedral(draw, p):
    """One of the 8 symmetries of the square (fastai's Dihedral, used when flip_vert is on), with probability p."""
    idx = draw.mask(torch.floor(draw.uniform(0, 8)).clamp_max(7), p, neutral=0.0).long()
    table = torch.tensor(
        [
            [1, -1, 1, -1, -1, 1, 1, -1],
            [1, 1, -1, 1, -1, -1, 1, -1],
            [1, 1, 1, 0, 1, 0, 0, 0],
            [0, 0, 0, 1, 0, 1, 1, 1],
        ],
        dtype=torch.float32,
        device=draw.device,
    )
    xs, ys, m0, m1 = table[:, idx]
    zero = torch.zeros_like(xs)
    return _affine(xs * m0, xs * m1, zero, ys * m1, ys * m0, zero)


def _rotate(draw, max_deg, p):
    theta = draw.mask(draw.uniform(-max_deg, max_deg), p) * (math.pi / 180)
    zero = torch.zeros_like(theta)
    return _affine(theta.cos(), theta.sin(), zero, -theta.sin(), theta.cos(), zero)


def _zoom(draw, min_zoom, max_zoom, p):
    s = 1 / draw.mask(draw.uniform(min_zoom, max_zoom), p, neutral=1.0)
    col, row = draw.uniform(0, 1), draw.uniform(0, 1)
    zero = torch.zeros_like(s)
    return _affine(s, zero, (1 - s) * (2 * col - 1), zero, s, (1 - s) * (2 * row - 1))


def _aspect_corrected(mat, h, w):
    """fastai's _prepare_mat: rotations act on a square of normalised coordinates, so rescale the shear terms."""
    mat = mat.clone()
    mat[:, 0, 1] *= h / w
    mat[:, 1, 0] *= w / h
    return mat[:, :2]


def _warp_targets(draw, magnitude, p):
    """fastai's _WarpCoord: the four corners move by up to `magnitude` (x and y each kept with probability p)."""
    x_t = draw.mask(draw.uniform(-magnitude, magnitude), p)
    y_t = draw.mask(draw.uniform(-magnitude, magnitude), p)
    targets = torch.stack(
        [
            torch.stack([-1 - y_t, -1 - x_t], 1),
            torch.stack([-1 + y_t, 1 + x_t], 1),
            torch.stack([1 + y_t, -1 + x_t], 1),
            torch.stack([1 - y_t, 1 - x_t], 1),
        ],
        1,
    )
    corners = torch.tensor([[-1, -1], [-1, 1], [1, -1], [1, 1]], dtype=torch.float32, device=draw.device)
    return _perspective_coeffs(corners.expand_as(targets), targets)


def _perspective_coeffs(p1, p2):
    """fastai's find_coeffs: the 8 coefficients of the perspective map taking points p2 to p1, by a linear solve."""
    x2, y2, x1, y1 = p2[..., 0], p2[..., 1], p1[..., 0], p1[..., 1]
    one, zero = torch.ones_like(x2), torch.zeros_like(x2)
    rows_x = torch.stack([x2, y2, one, zero, zero, zero, -x1 * x2, -x1 * y2], -1)
    rows_y = torch.stack([zero, zero, zero, x2, y2, one, -y1 * x2, -y1 * y2], -1)
    a = torch.stack([rows_x, rows_y], 2).flatten(1, 2)  # (B, 8, 8): rows alternate x and y per point, as fastai's
    return torch.linalg.solve(a, p1.reshape(-1, 8, 1)).squeeze(-1)


def _apply_perspective(coords, coeffs):
    b = coords.shape[0]
    m = torch.cat([coeffs, torch.ones_like(coeffs[:, :1])], 1).view(b, 3, 3)
    flat = coords.reshape(b, -1, 2)
    out = flat @ m[:, :, :2].transpose(1, 2) + m[:, :, 2].unsqueeze(1)
    return (out[..., :2] / out[..., 2:]).view_as(coords)


def _random_crops(n, h, w, min_scale, draw, attempts=10):
    """fastai's RandomResizedCropGPU with ratio (1, 1): up to 10 tries of a square-ish crop of min_scale..1 of the
    area that fits; images where none fits fall back to the centre crop. Returns (top, left, height, width)."""
    area = draw.uniform(min_scale, 1.0, attempts) * (h * w)
    side = torch.round(torch.sqrt(area))  # ratio 1: width = height = sqrt(area)
    fits = (side <= w) & (side <= h)
    first = torch.argmax(fits.int(), 1)  # the first attempt that fits (0 where none does; masked below)
    side = side.gather(1, first[:, None]).squeeze(1)
    any_fit = fits.any(1)
    top = torch.floor(draw.uniform(0, 1) * (h - side + 1))
    left = torch.floor(draw.uniform(0, 1) * (w - side + 1))
    fallback = _fallback_crops(n, h, w, area)
    crops = torch.stack([top, left, side, side], 1)
    return torch.where(any_fit[:, None], crops, fallback)


def _fallback_crops(n, h, w, like):
    """The centre crop at aspect ratio 1 (fastai's fallback, and its validation crop)."""
    ch, cw = (w, w) if w < h else ((h, h) if w > h else (h, w))
    return _boxes(n, [(h - ch) // 2, (w - cw) // 2, ch, cw], like)


def _full_crops(n, h, w, like):
    return _boxes(n, [0, 0, h, w], like)


def _boxes(n, box, like):
    return torch.tensor(box, dtype=torch.float32, device=like.device).expand(n, 4).clone()


def _sample(x, boxes, mat, warp, size):
    """Resample each image at output size: out(q) = x(warp(mat @ crop(q))), bilinear, reflection padding.

    Coordinates follow F.affine_grid with align_corners=True, fastai's convention. Downscaling by more than 2x
    first shrinks the source with area interpolation (fastai's own remedy for bilinear aliasing).
    """
    b, _, h, w = x.shape
    oh, ow = size
    shrink = min(h / oh, w / ow) / 2
    if shrink > 1:
        x = F.interpolate(x, scale_factor=1 / shrink, mode="area", recompute_scale_factor=True)
    # Output pixel q in [-1, 1] -> item pixel index inside the crop box -> item coordinates in [-1, 1].
    ys = torch.linspace(-1, 1, oh, device=x.device)
    xs = torch.linspace(-1, 1, ow, device=x.device)
    top, left, ch, cw = (boxes[:, i].view(b, 1, 1) for i in range(4))
    py = top + (ys.view(1, oh, 1) + 1) / 2 * (ch - 1)
    px = left + (xs.view(1, 1, ow) + 1) / 2 * (cw - 1)
    gy = (2 * py / max(h - 1, 1) - 1).expand(b, oh, ow)
    gx = (2 * px / max(w - 1, 1) - 1).expand(b, oh, ow)
    grid = torch.stack([gx, gy], -1)
    if mat is not None:
        grid = grid @ mat[:, :, :2].transpose(1, 2).unsqueeze(1) + mat[:, :, 2].view(b, 1, 1, 2)
    if warp is not None:
        grid = _apply_perspective(grid, warp)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="reflection", align_corners=True)


def _lighting_draws(draw, max_lighting, p):
    brightness = draw.mask(draw.uniform(0.5 * (1 - max_lighting), 0.5 * (1 + max_lighting)), p, neutral=0.5)
    contrast = torch.exp(draw.uniform(math.log(1 - max_lighting), -math.log(1 - max_lighting)))
    return brightness, draw.mask(contrast, p, neutral=1.0)


def _lighting(x, brightness, contrast):
    """fastai's Brightness then Contrast, in logit space: sigmoid((logit(x) + logit(b)) * c)."""
    logit = torch.logit(x.clamp(1e-7, 1 - 1e-7))
    return torch.sigmoid((logit + torch.logit(brightness).view(-1, 1, 1, 1)) * contrast.view(-1, 1, 1, 1))


def create_augment(size, aug=None, normalization=None):
    """The batch augmentation at `size` (height, width) with `aug` (AugmentSettings, params.yaml's `train.aug`;
    fastai's defaults if None);
    `normalization` is paddy.training.models.input_normalization's answer for the model ({"mean", "std"} or None),
    or a checkpoint's record of it, so that a model is always predicted with the input it was trained on."""
    norm = normalization or {}
    return BatchAugment(size, norm.get("mean"), norm.get("std"), aug)
