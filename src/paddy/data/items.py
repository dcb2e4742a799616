"""The per-model item resize (fastai's item_tfms Resize), done once: every image at the item size in one uint8 array.

fastai decodes each JPEG and resizes it again in every epoch, and TTA does it n+1 times more. Here the result of the
resize is kept on disk as a .npy array, keyed by the content of the prepared images and the item settings, so a
second epoch, fold, model with the same item settings, TTA pass or experiment reads raw bytes and decodes nothing.
The cache lives outside the repository (cache_dir(): PADDY_CACHE, default ~/.cache/paddy), so queue workers and
clones share it; a key is a hash of what went in, so a changed image or setting can never read a stale array.
"""

import errno
import hashlib
import json
import os
import shutil
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

from paddy.data.images import BadImage, read_image
from paddy.errors import PaddyError
from paddy.files import atomic_path, cache_dir, process_pool

VERSION = 1  # bump when resize_item changes: old arrays then stop matching


def resize_item(img, size, method):
    """fastai's Resize(size, method): squish ignores the aspect ratio, crop keeps it and cuts, pad letterboxes."""
    h, w = size
    if method == "squish":
        return img.resize((w, h), Image.Resampling.BICUBIC)
    if method == "crop":
        return ImageOps.fit(img, (w, h), Image.Resampling.BICUBIC)
    return ImageOps.pad(img, (w, h), Image.Resampling.BICUBIC, color=(0, 0, 0))


def item_key(files, item_size, item_method):
    """files: [(path, md5)] in row order. The same images in the same order at the same settings, the same key."""
    blob = json.dumps([VERSION, list(item_size), item_method, [list(f) for f in files]])
    return hashlib.sha256(blob.encode()).hexdigest()[:24]


def load_items(prepared_dir, files, item_size, item_method, workers=1):
    """The (N, H, W, 3) uint8 items of `files` ([(path relative to prepared_dir, md5)]), memory-mapped read-only.

    Built on first use, in `workers` processes, into a temporary file renamed into place when complete: a killed
    build leaves nothing that looks whole, and two builders of the same key write the same bytes.
    """
    path = cache_dir() / "items" / f"{item_key(files, item_size, item_method)}.npy"
    if not path.exists():
        _build(path, Path(prepared_dir), [f for f, _ in files], tuple(item_size), item_method, workers)
    return np.load(path, mmap_mode="r")


def _build(path, root, paths, size, method, workers):
    h, w = size
    need = len(paths) * h * w * 3 + 4096  # the array and its .npy header
    path.parent.mkdir(parents=True, exist_ok=True)
    if shutil.disk_usage(path.parent).free < need:
        raise _no_room(path.parent, need, len(paths), size)
    try:
        with atomic_path(path) as tmp:
            np.lib.format.open_memmap(tmp, mode="w+", dtype=np.uint8, shape=(len(paths), h, w, 3)).flush()
            _reserve(tmp)
            chunks = [range(i, min(i + 64, len(paths))) for i in range(0, len(paths), 64)]
            jobs = [(tmp, root, [paths[i] for i in c], c.start, size, method) for c in chunks]
            if workers > 1 and len(chunks) > 1:
                with process_pool(workers) as pool:
                    small = [s for found in pool.map(_fill, jobs) for s in found]
            else:
                small = [s for job in jobs for s in _fill(job)]
    except OSError as e:
        if e.errno not in (errno.ENOSPC, errno.EDQUOT):
            raise
        raise _no_room(path.parent, need, len(paths), size) from e
    if small:
        warnings.warn(
            f"{len(small)} image(s) are far smaller than the item size {h}x{w} (e.g. {small[0]}): they are upscaled "
            "more than 4x and carry little detail. Check prepare.max_size and the source images.",
            stacklevel=2,
        )


def _reserve(file):
    """Allocate the file's blocks now. The memory map is a sparse file: on a full disk, writing into it kills the
    process by SIGBUS, without a word, where allocating fails with ENOSPC, which _build turns into a message."""
    if not hasattr(os, "posix_fallocate"):
        return  # macOS, Windows: the free-space check alone
    with open(file, "r+b") as f:
        try:
            os.posix_fallocate(f.fileno(), 0, os.fstat(f.fileno()).st_size)
        except OSError as e:
            if e.errno not in (errno.EOPNOTSUPP, errno.EINVAL):  # a filesystem that cannot: the check alone
                raise


def _no_room(folder, need, n, size):
    free = shutil.disk_usage(folder).free
    return PaddyError(
        f"The item cache needs {need:,} bytes ({need / 2**20:.1f} MiB: {n} images at {size[0]}x{size[1]}) in "
        f"{folder}, but only {free:,} bytes are free there. Free some space, or point PADDY_CACHE at a disk with "
        "room (`export PADDY_CACHE=/a/bigger/disk/paddy`), and run again: the items are built there once."
    )


def _fill(job):
    """Resize one chunk of images into rows start.. of the array at `tmp`; return the ones far below the size."""
    tmp, root, paths, start, size, method = job
    out = np.load(tmp, mmap_mode="r+")
    small = []
    for i, rel in enumerate(paths):
        try:
            im = read_image(root / rel)
        except BadImage as e:  # prepare wrote and checked it: the file was damaged since
            raise PaddyError(
                f"{root / rel} is {e}: prepare wrote it whole, so it was damaged since (a full disk, a bad copy). "
                "Run `dvc repro -f prepare` to write the prepared images again."
            ) from None
        if max(im.size) * 4 < max(size):
            small.append(f"{rel}: {im.size[0]}x{im.size[1]}")
        out[start + i] = np.asarray(resize_item(im, size, method))
    out.flush()
    return small
