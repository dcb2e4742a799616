"""The item cache: each image resized once per item setting, keyed by content, shared, never stale; and the loader's
batches, which depend only on (seed, epoch) so a run can restart at any step."""

import os

import numpy as np
import pytest
from helpers.settings import default_competition
from PIL import Image

from paddy.data.items import item_key, load_items, resize_item
from paddy.data.loaders import EpochBatches, ItemDataset, item_files
from paddy.data.prepare import prepare_competition
from paddy.files import cache_dir


@pytest.fixture(scope="module")
def prepared(competition, tmp_path_factory):
    out = tmp_path_factory.mktemp("prep") / "prepared"
    index, _ = prepare_competition(competition[0], out, default_competition(), max_size=64, workers=1)
    return out, index


def test_items_are_the_resized_images_and_built_once(prepared):
    out, index = prepared
    paths = index.path[:10].tolist()
    files = item_files(index, paths)
    items = load_items(out, files, (40, 30), "crop", workers=2)
    assert items.shape == (10, 40, 30, 3) and items.dtype == np.uint8
    with Image.open(out / paths[3]) as im:
        assert np.array_equal(items[3], np.asarray(resize_item(im.convert("RGB"), (40, 30), "crop")))
    built = os.stat(items.filename).st_mtime_ns
    again = load_items(out, files, (40, 30), "crop")
    assert again.filename == items.filename and os.stat(again.filename).st_mtime_ns == built  # read, not rebuilt
    assert str(cache_dir()) in str(items.filename)  # the shared cache, not the workspace
    assert not [p for p in (cache_dir() / "items").iterdir() if p.suffix == ".tmp"]  # nothing half-written left


def test_a_changed_image_or_setting_is_a_new_key(prepared):
    _, index = prepared
    files = item_files(index, index.path[:5].tolist())
    key = item_key(files, (40, 30), "crop")
    assert item_key(files, (40, 30), "squish") != key and item_key(files, (30, 40), "crop") != key
    edited = [(files[0][0], "0" * 32), *files[1:]]
    assert item_key(edited, (40, 30), "crop") != key
    assert item_key(list(files), (40, 30), "crop") == key


def test_a_dataset_fetches_whole_batches(prepared):
    out, index = prepared
    items = load_items(out, item_files(index, index.path[:6].tolist()), (16, 16), "squish")
    ds = ItemDataset(items.filename, [5, 4, 3], [0, 1, 2])
    x, y = ds.__getitems__([2, 0])
    assert np.array_equal(x.numpy(), items[[3, 5]]) and y.tolist() == [2, 0]


def test_epoch_batches_repeat_and_resume():
    sampler = EpochBatches(10, 3, shuffle=True, drop_last=True, seed=1)
    first = list(sampler)
    assert len(first) == 3 and all(len(b) == 3 for b in first)
    assert list(sampler) == first  # same seed and epoch: same batches
    sampler.set_epoch(1)
    second = list(sampler)
    assert second != first
    sampler.set_epoch(1, start=2)
    assert list(sampler) == second[2:]  # resuming at step 2 of epoch 1
    assert len(EpochBatches(10, 3, drop_last=False)) == 4 and list(EpochBatches(4, 3))[-1] == [3]
