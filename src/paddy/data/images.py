"""One way to open an image: what prepare, the item cache, `paddy predict` and the report read, so every one of them
sees a photo the way an image viewer shows it, as 8-bit RGB, or a reason it cannot be used.

PIL's `Image.open(...).convert("RGB")` alone gets real photos wrong, silently: a phone's portrait shot is stored
sideways with an EXIF orientation tag, which it ignores; a 16-bit PNG's values are clipped to 255 (a white image);
transparent pixels show whatever colour they hide; a 20000x20000 PNG raises DecompressionBombError, a traceback. Here
the orientation is applied, 16-bit and float images are scaled to 8 bits by their real range, transparency is laid
over white (a web page's background, where such images come from), and the pixel limit is a setting
(`prepare.max_pixels`) whose breach, like a truncated or unreadable file, is a BadImage with its reason. An 8-bit RGB
JPEG without an orientation tag decodes to exactly the pixels `Image.open(...).convert("RGB")` gives.
"""

import warnings

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

MAX_PIXELS = 200_000_000  # params.yaml's prepare.max_pixels: a 200-megapixel phone photo passes, a bomb does not
BACKGROUND = (255, 255, 255)  # what transparent pixels are laid over
WIDE_MODES = ("I;16", "I;16L", "I;16B", "I;16N", "I", "F")  # more than 8 bits a channel: PIL's convert clips them


class BadImage(ValueError):
    """An image that cannot be used; its message is the reason, as prepare's bad_files.csv lists it."""


def read_image(path, max_pixels=MAX_PIXELS, draft=None, accept=None):
    """The image at `path` as a viewer shows it: upright (EXIF orientation), 8-bit RGB, fully loaded (the file is
    closed). Raises BadImage(reason) for a file that is not an image PIL reads, one above `max_pixels` pixels, or one
    truncated or corrupt.

    draft: a (width, height) the image is about to be shrunk to: a JPEG then decodes at a reduced scale (1/2 to 1/8),
    much faster for large photos. accept(image): called with the opened, not yet decoded image (its format and size)
    to refuse it by raising BadImage.
    """
    # PIL's own guard raises DecompressionBombError above twice its MAX_IMAGE_PIXELS and warns above it; ours is
    # max_pixels, checked on the size in the file's header, before a pixel is decoded. Switched off only while this
    # reads (the stages that read images do it in one thread).
    limit, Image.MAX_IMAGE_PIXELS = Image.MAX_IMAGE_PIXELS, None
    try:
        with Image.open(path) as im:
            width, height = im.size
            if width * height > max_pixels:
                raise BadImage(
                    f"too many pixels: {width}x{height} is {width * height:,}, above prepare.max_pixels "
                    f"({max_pixels:,}), the guard against decompression bombs (a small file that decodes to "
                    "gigabytes); raise prepare.max_pixels if the photo is real"
                )
            if accept is not None:
                accept(im)
            if draft is not None:
                im.draft("RGB", draft)
            return to_rgb(im)
    except UnidentifiedImageError:
        raise BadImage("not an image PIL can read") from None
    except (OSError, SyntaxError, ValueError) as e:  # truncated or corrupt data; a BadImage raised above passes through
        if isinstance(e, BadImage):
            raise
        if "truncated" in str(e):
            raise BadImage(
                "truncated: the file ends before its image data does (an interrupted download or copy); copy it again"
            ) from None
        raise BadImage(f"unreadable ({e})") from None
    finally:
        Image.MAX_IMAGE_PIXELS = limit


def to_rgb(im):
    """An opened image as a viewer shows it, in 8-bit RGB: its EXIF orientation applied, 16-bit and float values
    scaled by their real range, transparency laid over white; palette, grayscale, CMYK, YCbCr and LAB converted by
    PIL (CMYK as the inverse of PIL's own RGB -> CMYK, since no colour profile is applied)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # a malformed EXIF block is ignored, as a viewer ignores it
        im = ImageOps.exif_transpose(im)
    if im.mode in WIDE_MODES:
        return Image.fromarray(to_8_bits(np.asarray(im))).convert("RGB")
    if im.has_transparency_data:
        rgba = im.convert("RGBA")
        return Image.alpha_composite(Image.new("RGBA", im.size, BACKGROUND), rgba).convert("RGB")
    return im.convert("RGB")


def to_8_bits(values):
    """A single-channel array of more than 8 bits (uint16, int32, float) as uint8, by its real range: 0..65535 for
    integers that fit in 16 bits (a 16-bit file: PNG, TIFF and PPM open as I;16 or I), 0..1 for floats that fit in it
    (the float image convention), and otherwise the values' own minimum..maximum. NaN and infinities are black."""
    floating = np.issubdtype(values.dtype, np.floating)
    values = np.nan_to_num(values.astype(np.float32), nan=0.0, posinf=0.0, neginf=0.0)
    lo, hi = float(values.min()), float(values.max())
    if lo >= 0.0 and hi <= (1.0 if floating else 65535.0):
        lo, hi = 0.0, (1.0 if floating else 65535.0)
    return np.round((values - lo) * (255.0 / max(hi - lo, 1e-12))).clip(0, 255).astype(np.uint8)
