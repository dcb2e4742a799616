"""Every kind of image PIL writes is read as a viewer shows it (paddy.data.images.read_image), or left out with its
reason: each case is a file written by PIL's own encoder, then read back by the pipeline's one reader."""

import hashlib
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from paddy.data.images import MAX_PIXELS, BadImage, read_image
from paddy.data.prepare import prepare_competition, resize_image
from paddy.predict.photos import prepare_photos
from paddy.settings import parse_settings


def photo(h=48, w=64):
    """An 8-bit RGB picture with structure in every direction (a gradient per channel, a red block at the top left):
    a rotation, a flip or a clipped channel shows."""
    yy, xx = np.mgrid[0:h, 0:w]
    rgb = np.stack([xx * 255 // (w - 1), yy * 255 // (h - 1), (xx + yy) * 255 // (h + w - 2)], axis=-1)
    rgb[:8, :8] = (230, 20, 20)
    return rgb.astype(np.uint8)


def read(path, **kwargs):
    return np.asarray(read_image(path, **kwargs)).astype(int)


def gray3(values):
    return np.repeat(np.asarray(values).astype(int)[..., None], 3, axis=-1)


def test_an_rgb_jpeg_gives_exactly_what_pil_gave_before(tmp_path):
    """Today's pixels for today's photos: the default dvc repro's outputs must not change."""
    Image.fromarray(photo()).save(tmp_path / "a.jpg", quality=90)
    with Image.open(tmp_path / "a.jpg") as im:
        assert np.array_equal(read(tmp_path / "a.jpg"), np.asarray(im.convert("RGB")))
    with Image.open(tmp_path / "a.jpg") as im:  # prepare's reduced-scale decoding of a large photo
        im.draft("RGB", (20, 20))
        assert np.array_equal(read(tmp_path / "a.jpg", draft=(20, 20)), np.asarray(im.convert("RGB")))


def test_prepare_writes_the_same_bytes_as_before_for_the_generated_jpegs(competition, tmp_path):
    """prepare's old code (Image.open, draft, convert, thumbnail, save) against resize_image, on the generated
    competition's JPEGs: the same file, so the same md5, items and models."""
    for src in sorted(Path(competition[0], "train_images").rglob("*.jpg"))[:12]:
        with Image.open(src) as im:
            im.draft("RGB", (40, 40))
            im = im.convert("RGB")
            im.thumbnail((40, 40), Image.Resampling.BICUBIC)
            im.save(tmp_path / "old.jpg", format="JPEG", quality=95)
        md5 = resize_image(src, tmp_path / "new.jpg", 40)[2]
        assert md5 == hashlib.md5((tmp_path / "old.jpg").read_bytes()).hexdigest(), src


# (mode, file suffix, how to make the file from photo(), what a viewer shows, tolerance of the mean absolute error)
def _alpha():
    h, w = photo().shape[:2]
    return (np.mgrid[0:h, 0:w][1] * 255 // (w - 1)).astype(np.uint8)  # opaque on the right, clear on the left


def _over_white(pixels, alpha):
    a = (alpha[..., None] if pixels.ndim == 3 else alpha) / 255.0
    return np.round(pixels * a + 255 * (1 - a)).astype(int)


def _gray(rgb):
    return np.asarray(Image.fromarray(rgb).convert("L"))


def _wide16():
    h, w = photo().shape[:2]
    return (np.mgrid[0:h, 0:w][1] * 65535 // (w - 1)).astype(np.uint16)  # black to white across the 16 bits


KINDS = {
    "RGB-png": (lambda: Image.fromarray(photo()), "png", lambda: photo(), 0),
    "L-png": (lambda: Image.fromarray(_gray(photo())), "png", lambda: gray3(_gray(photo())), 0),
    "1-png": (
        lambda: Image.fromarray(_gray(photo()) > 127),
        "png",
        lambda: gray3(np.where(_gray(photo()) > 127, 255, 0)),
        0,
    ),
    "P-gif": (
        lambda: Image.fromarray(photo()).quantize(64),
        "gif",
        lambda: np.asarray(Image.fromarray(photo()).quantize(64).convert("RGB")),
        0,
    ),
    "RGBA-png": (
        lambda: Image.fromarray(np.dstack([photo(), _alpha()])),
        "png",
        lambda: _over_white(photo(), _alpha()),
        0.5,
    ),
    "RGBA-webp": (
        lambda: Image.fromarray(np.dstack([photo(), _alpha()])),
        "webp",  # saved lossless below
        lambda: _over_white(photo(), _alpha()),
        0.5,
    ),
    "LA-png": (
        lambda: Image.fromarray(np.dstack([_gray(photo()), _alpha()]), "LA"),
        "png",
        lambda: gray3(_over_white(_gray(photo()), _alpha())),
        0.5,
    ),
    "PA-tif": (
        lambda: Image.fromarray(np.dstack([photo(), _alpha()])).convert("PA"),
        "tif",
        lambda: _over_white(
            np.asarray(Image.fromarray(np.dstack([photo(), _alpha()])).convert("PA").convert("RGB")), _alpha()
        ),
        0.5,
    ),
    "I;16-png": (lambda: Image.fromarray(_wide16()), "png", lambda: gray3(np.round(_wide16() / 257)), 0),
    "I;16-tif": (lambda: Image.fromarray(_wide16()), "tif", lambda: gray3(np.round(_wide16() / 257)), 0),
    "I;16B-tif": (
        lambda: Image.frombytes("I;16B", (64, 48), _wide16().astype(">u2").tobytes()),
        "tif",
        lambda: gray3(np.round(_wide16() / 257)),
        0,
    ),
    "I-tif": (  # 32-bit integers holding 16-bit data: by the 16 bits
        lambda: Image.fromarray(_wide16().astype(np.int32)),
        "tif",
        lambda: gray3(np.round(_wide16() / 257)),
        0,
    ),
    "I-tif-wide": (  # beyond 16 bits: by the values' own range
        lambda: Image.fromarray(_wide16().astype(np.int32) * 1000 - 10_000_000),
        "tif",
        lambda: gray3(np.round(_wide16() / 257)),
        0.01,
    ),
    "F-tif": (
        lambda: Image.fromarray((_wide16() / 65535).astype(np.float32)),
        "tif",
        lambda: gray3(np.round(_wide16() / 257)),
        0.01,
    ),
    "F-tif-wide": (
        lambda: Image.fromarray((_wide16() / 65535 * 40 - 20).astype(np.float32)),
        "tif",
        lambda: gray3(np.round(_wide16() / 257)),
        0.01,
    ),
    "CMYK-jpg": (lambda: Image.fromarray(photo()).convert("CMYK"), "jpg", lambda: photo(), 2.5),
    "CMYK-tif": (lambda: Image.fromarray(photo()).convert("CMYK"), "tif", lambda: photo(), 0),
    "YCbCr-tif": (lambda: Image.fromarray(photo()).convert("YCbCr"), "tif", lambda: photo(), 1.5),
    "LAB-tif": (lambda: Image.fromarray(photo()).convert("LAB"), "tif", lambda: photo(), 2.0),
}


@pytest.mark.parametrize("kind", list(KINDS))
def test_every_kind_of_image_reads_as_a_viewer_shows_it(tmp_path, kind):
    make, suffix, expected, tolerance = KINDS[kind]
    image = make()
    assert image.mode == kind.split("-")[0]
    path = tmp_path / f"image.{suffix}"
    image.save(path, **({"lossless": True} if suffix == "webp" else {}))
    with Image.open(path) as im:
        assert im.mode == image.mode or (kind == "I;16B-tif" and im.mode.startswith("I;16"))
    got, want = read(path), expected()
    assert got.shape == want.shape == (48, 64, 3)
    assert np.abs(got - want).mean() <= tolerance, (kind, np.abs(got - want).mean())
    # the wide modes: what PIL's convert("RGB") alone makes of them is far off (white, or clipped)
    if image.mode.startswith(("I", "F")):
        with Image.open(path) as im:
            assert np.abs(np.asarray(im.convert("RGB")).astype(int) - want).mean() > 20


def test_a_transparent_palette_colour_shows_the_background(tmp_path):
    """A GIF's or palette PNG's transparent index: PIL's convert("RGB") shows the colour it hides (red here)."""
    p = Image.new("P", (32, 32), 0)
    p.putpalette([255, 0, 0, 0, 0, 255] + [0] * 762)
    p.paste(1, (16, 0, 32, 32))  # the right half blue, the left half index 0: transparent
    for suffix in ("gif", "png"):
        p.save(tmp_path / f"t.{suffix}", transparency=0)
        got = read(tmp_path / f"t.{suffix}")
        assert (got[:, :16] == 255).all() and (got[:, 16:] == (0, 0, 255)).all(), suffix


# EXIF orientation: how the file's pixels are stored for the upright picture to show (numpy, by each tag's meaning)
STORED = {
    1: lambda u: u,
    2: lambda u: u[:, ::-1],  # mirrored
    3: lambda u: np.rot90(u, 2),  # upside down
    4: lambda u: u[::-1],  # mirrored vertically
    5: lambda u: u.swapaxes(0, 1),  # transposed
    6: lambda u: np.rot90(u, 1),  # a phone's portrait shot: turned 90 degrees counter-clockwise, shown turned back
    7: lambda u: np.rot90(u, 2).swapaxes(0, 1),
    8: lambda u: np.rot90(u, -1),
}


@pytest.mark.parametrize("orientation", list(STORED))
@pytest.mark.parametrize("suffix", ["png", "jpg"])
def test_exif_orientation_is_applied(tmp_path, orientation, suffix):
    upright = photo()
    exif = Image.Exif()
    exif[0x0112] = orientation
    stored = Image.fromarray(np.ascontiguousarray(STORED[orientation](upright)))
    stored.save(tmp_path / f"o.{suffix}", exif=exif, **({"quality": 98, "subsampling": 0} if suffix == "jpg" else {}))
    got = read(tmp_path / f"o.{suffix}")
    assert got.shape == upright.shape
    error = np.abs(got - upright).mean()
    assert error == 0 if suffix == "png" else error < 2.0, error
    if orientation in (6, 8):
        with Image.open(tmp_path / f"o.{suffix}") as im:
            assert im.size == (48, 64)  # stored sideways: PIL alone reads it so


def test_a_photo_stored_rotated_is_prepared_as_the_upright_one_so_predict_gives_the_same_answer(tmp_path):
    """`paddy predict` pre-resizes a photo exactly as prepare does: the same prepared bytes, the same prediction."""
    upright = photo(240, 320)
    Image.fromarray(upright).save(tmp_path / "upright.png")
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.fromarray(np.ascontiguousarray(np.rot90(upright, 1))).save(tmp_path / "phone.png", exif=exif)
    prepared, errors = prepare_photos([tmp_path / "upright.png", tmp_path / "phone.png"], tmp_path / "out", 64)
    assert not errors
    a, b = (prepared[tmp_path / name].read_bytes() for name in ("upright.png", "phone.png"))
    assert a == b and Image.open(prepared[tmp_path / "phone.png"]).size == (64, 48)


def test_an_mpo_photo_named_jpg_is_a_jpeg(tmp_path):
    """Cameras and phones write MPO: a JPEG, then more pictures; prepare refused it as 'a MPO file named .jpg'."""
    first, second = Image.fromarray(photo()), Image.new("RGB", (64, 48), (0, 0, 255))
    first.save(tmp_path / "camera.jpg", format="MPO", save_all=True, append_images=[second], quality=95)
    with Image.open(tmp_path / "camera.jpg") as im:
        assert im.format == "MPO"
    width, height, _ = resize_image(tmp_path / "camera.jpg", tmp_path / "out.jpg", 64)
    assert (width, height) == (64, 48) and np.abs(read(tmp_path / "out.jpg") - photo()).mean() < 3


@pytest.fixture(scope="module")
def bomb(tmp_path_factory):
    """A 20000x20000 PNG: 48 KB on disk, 400 million pixels (1.2 GB as RGB) once decoded."""
    path = tmp_path_factory.mktemp("bomb") / "bomb.png"
    Image.new("1", (20000, 20000)).save(path)
    return path


def test_a_decompression_bomb_is_too_many_pixels_not_a_traceback(bomb):
    limit = Image.MAX_IMAGE_PIXELS
    with pytest.raises(BadImage) as err:
        read_image(bomb)
    assert str(err.value).startswith(
        f"too many pixels: 20000x20000 is 400,000,000, above prepare.max_pixels ({MAX_PIXELS:,})"
    )
    assert Image.MAX_IMAGE_PIXELS == limit  # PIL's own guard is back as it was
    with pytest.raises(Image.DecompressionBombError):  # what prepare and predict used to die of
        Image.open(bomb)


def test_max_pixels_is_the_limit(tmp_path):
    Image.fromarray(photo()).save(tmp_path / "a.png")
    assert read(tmp_path / "a.png", max_pixels=48 * 64).shape == (48, 64, 3)
    with pytest.raises(BadImage, match=r"too many pixels: 64x48 is 3,072, above prepare.max_pixels \(3,071\)"):
        read_image(tmp_path / "a.png", max_pixels=48 * 64 - 1)


@pytest.mark.parametrize("suffix", ["jpg", "png"])
def test_a_truncated_file_is_left_out_as_truncated(tmp_path, suffix):
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (200, 300, 3), dtype=np.uint8)).save(
        tmp_path / f"whole.{suffix}"
    )
    data = (tmp_path / f"whole.{suffix}").read_bytes()
    (tmp_path / f"cut.{suffix}").write_bytes(data[: len(data) // 2])
    with pytest.raises(BadImage, match="^truncated: the file ends before its image data does"):
        read_image(tmp_path / f"cut.{suffix}")


def test_prepare_leaves_out_a_bomb_and_a_truncated_photo_and_prepares_the_rest(competition, tmp_path, bomb, params):
    """The issue's folder source: one 20000x20000 PNG among the photos made prepare die with three tracebacks."""
    raw = Path(shutil.copytree(competition[0], tmp_path / "raw"))
    train = pd.read_csv(raw / "train.csv", dtype=str)
    big, cut = train.iloc[0], train.iloc[1]
    shutil.copy(bomb, raw / "train_images" / big.label / big.image_id)
    victim = raw / "train_images" / cut.label / cut.image_id
    victim.write_bytes(victim.read_bytes()[:-200])
    comp = parse_settings(params).competition
    index, bad = prepare_competition(raw, tmp_path / "prepared", comp, max_size=64, workers=1)
    reasons = dict(zip(bad.image_id, bad.reason))
    assert reasons[big.image_id].startswith("too many pixels: 20000x20000 is 400,000,000, above prepare.max_pixels")
    assert reasons[cut.image_id].startswith("truncated: ")
    kept = index[(index.split == "train") & index.ok]
    assert len(kept) == len(train) - 2 and big.image_id not in set(kept.image_id)
