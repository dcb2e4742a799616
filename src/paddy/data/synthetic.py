"""A small generated competition laid out exactly like Paddy Disease Classification, for offline runs and tests.

Each disease draws its own lesion pattern and colour on a leaf, and each variety its own leaf shade and vein
spacing, so labels are learnable from the pixels and a multi-target model has varieties to learn too. The test
set's true labels go to a separate file the model never sees, so the pipeline can score itself like a leaderboard.
"""

from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from paddy.data.competition import SAMPLE_CSV, TEST_DIR, TRAIN_CSV, TRAIN_DIR
from paddy.files import write_csv

# The real competition's label and variety counts (10,407 training images).
LABEL_COUNTS = {
    "bacterial_leaf_blight": 479,
    "bacterial_leaf_streak": 380,
    "bacterial_panicle_blight": 337,
    "blast": 1738,
    "brown_spot": 965,
    "dead_heart": 1442,
    "downy_mildew": 620,
    "hispa": 1594,
    "normal": 1764,
    "tungro": 1088,
}
VARIETY_COUNTS = {
    "ADT45": 6992,
    "KarnatakaPonni": 988,
    "Ponni": 657,
    "AtchayaPonni": 461,
    "Zonal": 399,
    "AndraPonni": 377,
    "Onthanel": 351,
    "IR20": 114,
    "RR": 36,
    "Surya": 32,
}
AGES = [45, 47, 50, 55, 57, 60, 62, 65, 66, 67, 68, 70, 72, 73, 75, 77, 80, 82]

# Lesion colour (RGB) per disease; shapes are drawn in _draw_disease.
LESION_COLOURS = {
    "bacterial_leaf_blight": (235, 215, 90),
    "bacterial_leaf_streak": (250, 250, 200),
    "bacterial_panicle_blight": (150, 90, 40),
    "blast": (120, 120, 130),
    "brown_spot": (110, 60, 20),
    "dead_heart": (225, 225, 215),
    "downy_mildew": (235, 240, 250),
    "hispa": (255, 255, 255),
    "normal": (0, 0, 0),
    "tungro": (240, 150, 30),
}


def _counts(total, weights, rng):
    """Split `total` across classes in the real proportions, at least one each."""
    names = list(weights)
    p = np.array([weights[n] for n in names], dtype=float)
    p /= p.sum()
    counts = np.maximum(1, np.floor(p * total)).astype(int)
    while counts.sum() < total:  # hand out the remainder to the largest fractional parts, reproducibly
        counts[int(np.argmax(p * total - counts))] += 1
    while counts.sum() > total:
        counts[int(np.argmax(counts))] -= 1
    return dict(zip(names, counts.tolist()))


def _leaf(h, w, variety_idx, rng):
    """A green leaf whose shade and vein spacing depend on the variety."""
    shade = np.array([40 + 6 * variety_idx, 150 - 5 * variety_idx, 50 + 3 * variety_idx], dtype=float)
    img = np.empty((h, w, 3), dtype=float)
    img[:] = shade
    spacing = 4 + variety_idx  # veins: vertical stripes, wider apart for later varieties
    veins = (np.arange(w) % spacing) == 0
    img[:, veins] *= 0.8
    img += rng.normal(0, 8, size=img.shape)
    return img


def _draw_disease(img, label, rng):
    h, w, _ = img.shape
    colour = np.array(LESION_COLOURS[label], dtype=float)
    yy, xx = np.mgrid[0:h, 0:w]
    if label == "normal":
        return img
    if label == "bacterial_leaf_blight":  # yellow margins along both edges
        edge = int(w * rng.uniform(0.15, 0.25))
        img[:, :edge] = colour
        img[:, w - edge :] = colour
    elif label == "bacterial_leaf_streak":  # thin long vertical streaks
        for _ in range(rng.integers(4, 7)):
            x = rng.integers(0, w - 2)
            y0 = rng.integers(0, h // 3)
            img[y0 : y0 + rng.integers(h // 2, h), x : x + 2] = colour
    elif label == "bacterial_panicle_blight":  # brown tint over the top half
        img[: h // 2] = 0.4 * img[: h // 2] + 0.6 * colour
    elif label == "blast":  # grey diamond lesions with brown borders
        for _ in range(rng.integers(3, 6)):
            cy, cx = rng.integers(0, h), rng.integers(0, w)
            d = np.abs(yy - cy) / (h * 0.08) + np.abs(xx - cx) / (w * 0.05)
            img[(d < 1.3) & (d >= 1)] = (120, 60, 20)
            img[d < 1] = colour
    elif label == "brown_spot":  # many small round brown spots
        for _ in range(rng.integers(15, 25)):
            cy, cx = rng.integers(0, h), rng.integers(0, w)
            img[(yy - cy) ** 2 + (xx - cx) ** 2 < (w * 0.03) ** 2] = colour
    elif label == "dead_heart":  # a large dry pale region in the centre
        cy, cx = h // 2 + rng.integers(-h // 8, h // 8), w // 2 + rng.integers(-w // 8, w // 8)
        img[((yy - cy) / (h * 0.3)) ** 2 + ((xx - cx) / (w * 0.35)) ** 2 < 1] = colour
    elif label == "downy_mildew":  # whitish fuzzy patches
        for _ in range(rng.integers(3, 5)):
            cy, cx = rng.integers(0, h), rng.integers(0, w)
            mask = ((yy - cy) / (h * 0.12)) ** 2 + ((xx - cx) / (w * 0.15)) ** 2 < 1
            img[mask] = 0.3 * img[mask] + 0.7 * colour
    elif label == "hispa":  # short white horizontal scratches
        for _ in range(rng.integers(10, 16)):
            y, x = rng.integers(0, h - 2), rng.integers(0, w - w // 5)
            img[y : y + 2, x : x + w // 5] = colour
    elif label == "tungro":  # orange-yellow discolouration over the bottom two thirds
        img[h // 3 :] = 0.35 * img[h // 3 :] + 0.65 * colour
    return img


def draw_image(label, variety_idx, height, width, rng):
    img = _draw_disease(_leaf(height, width, variety_idx, rng), label, rng)
    return Image.fromarray(np.clip(img, 0, 255).astype(np.uint8))


def make_competition(root, truth_path, n_train=800, n_test=200, width=192, height=256, seed=0):
    """Write a competition folder at `root` and the test set's true labels at `truth_path`."""
    root = Path(root)
    rng = np.random.default_rng(seed)
    varieties = list(VARIETY_COUNTS)
    vprob = np.array(list(VARIETY_COUNTS.values()), dtype=float)
    vprob /= vprob.sum()

    def rows(n):
        labels = [lab for lab, k in _counts(n, LABEL_COUNTS, rng).items() for _ in range(k)]
        rng.shuffle(labels)
        return [(lab, int(rng.choice(len(varieties), p=vprob)), int(rng.choice(AGES))) for lab in labels]

    train_rows = []
    for i, (label, v, age) in enumerate(rows(n_train)):
        image_id = f"{100001 + i}.jpg"
        out = root / TRAIN_DIR / label / image_id
        out.parent.mkdir(parents=True, exist_ok=True)
        draw_image(label, v, height, width, rng).save(out, quality=90)
        train_rows.append((image_id, label, varieties[v], age))
    test_rows = []
    (root / TEST_DIR).mkdir(parents=True, exist_ok=True)
    for i, (label, v, _) in enumerate(rows(n_test)):
        image_id = f"{200001 + i}.jpg"
        draw_image(label, v, height, width, rng).save(root / TEST_DIR / image_id, quality=90)
        test_rows.append((image_id, label))

    write_csv(pd.DataFrame(train_rows, columns=["image_id", "label", "variety", "age"]), root / TRAIN_CSV)
    test = pd.DataFrame(test_rows, columns=["image_id", "label"])
    write_csv(test.assign(label=""), root / SAMPLE_CSV)
    write_csv(test, truth_path)
