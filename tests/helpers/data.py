"""Test data: a work folder prepared from the shared tiny competition (the `competition` fixture), a generated
multi-label one (coloured patches for tags), zips in memory."""

import io
import zipfile

import numpy as np
import pandas as pd
from PIL import Image

from helpers.settings import default_competition, settings_with
from paddy.data.prepare import prepare_competition
from paddy.data.split import make_splits
from paddy.files import write_csv

# The generated tags: each one a 10 x 10 patch of its colour somewhere on grey noise, so a tiny model can see them
TAG_COLOURS = {"blue": (40, 70, 230), "green": (40, 200, 60), "red": (220, 40, 40)}
# The competition section of make_tags_competition's folder, laid out as Planet's: train.csv's `tags` column holds
# each image's tags, space-separated; scored by the mean F2
TAGS_COMPETITION = {
    "competition.id_column": "image_name", "competition.label_column": "tags", "competition.form": "tags",
    "competition.metric": "mean_f2", "competition.train_images": "train-jpg/{id}.png",
    "competition.test_images": "test-jpg/{id}.png",
}  # fmt: skip


def prepared_work(competition, work, n_splits=1):
    """`work`/prepared from the shared competition (images at most 64 pixels) and `work`/split.csv of `n_splits`
    bags; the prepared index."""
    index, _ = prepare_competition(competition[0], work / "prepared", default_competition(), max_size=64, workers=1)
    write_csv(make_splits(index[index.split == "train"], "bag", n_splits, 0.2, 0), work / "split.csv")
    return index


def zip_bytes(files):
    """A zip archive's bytes holding {name: content}."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as zf:
        for name, content in files.items():
            zf.writestr(name, content)
    return buffer.getvalue()


def tags_settings(params, changes=None):
    """settings_with(params, changes) for make_tags_competition's folder (TAGS_COMPETITION), through the settings'
    own checks."""
    return settings_with(params, {**TAGS_COMPETITION, **(changes or {})})


def make_tags_competition(raw, n_train, size=32, seed=0):
    """Write a competition folder for TAGS_COMPETITION at `raw`: n_train images of size x size, each with a random
    non-empty set of TAG_COLOURS' tags (each tag with p 0.5); one test image."""
    rng = np.random.default_rng(seed)
    (raw / "train-jpg").mkdir(parents=True)
    (raw / "test-jpg").mkdir()

    def image(tags):
        img = rng.integers(90, 166, (size, size, 3)).astype(np.uint8)
        for tag in tags:
            top, left = rng.integers(0, size - 10, 2)
            img[top : top + 10, left : left + 10] = TAG_COLOURS[tag]
        return Image.fromarray(img)

    rows = []
    for i in range(n_train):
        tags = [t for t in TAG_COLOURS if rng.random() < 0.5] or [str(rng.choice(list(TAG_COLOURS)))]
        image(tags).save(raw / "train-jpg" / f"train_{i}.png")
        rows.append((f"train_{i}", " ".join(tags)))
    pd.DataFrame(rows, columns=["image_name", "tags"]).to_csv(raw / "train.csv", index=False)
    image(["red"]).save(raw / "test-jpg" / "test_0.png")
    pd.DataFrame({"image_name": ["test_0"], "tags": ["red"]}).to_csv(raw / "sample_submission.csv", index=False)


def prepared_tags_work(params, raw, work, valid_pct=0.25):
    """`work`/prepared from the tags competition at `raw` and `work`/split.csv of one tag-balanced bag; the prepared
    index."""
    comp = tags_settings(params).competition
    index, _ = prepare_competition(raw, work / "prepared", comp, max_size=64, workers=1)
    train = index[index.split == "train"]
    write_csv(make_splits(train, "bag", 1, valid_pct, 0, multi_label=True), work / "split.csv")
    return index
