"""A small generated competition laid out exactly like Paddy Disease Classification, for offline runs and tests.

Each disease draws its own lesion pattern and colour on a leaf, and each variety its own leaf shade and vein
spacing, so labels are learnable from the pixels and a multi-target model has varieties to learn too. The test
set's true labels go to a separate file the model never sees, so the pipeline can score itself like a leaderboard.

`difficulty` easy draws each disease in its own colour and shape: tiny models score 1.000, so an ensemble or TTA
can only tie. hard draws it the way the real photos look (hard_image): diseases that share a look, `normal` as the
mere absence of lesions (with harmless specks), variety shades that shift colour from photo to photo, per-photo
camera distance, lighting, colour cast and blur, faint and sparse lesions, spots and streaks framed off the photo's
margins, and a few percent of wrong training labels.
"""

from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image, ImageFilter

from paddy.errors import PaddyError
from paddy.files import write_csv

TRAIN_CSV, SAMPLE_CSV, TRAIN_DIR, TEST_DIR = "train.csv", "sample_submission.csv", "train_images", "test_images"

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


# hard: the training labels a careless annotator gets wrong (the test truth stays right: it scores the model).
LABEL_NOISE = 0.04


def _blend(img, mask, colour, alpha):
    img[mask] = (1 - alpha) * img[mask] + alpha * colour


def _hard_leaf(h, w, variety_idx, rng):
    """The variety's shade, shifted per photo (soil, age, season) so shade alone no longer names the variety."""
    shade = np.array([40 + 6 * variety_idx, 150 - 5 * variety_idx, 50 + 3 * variety_idx], dtype=float)
    shade = shade + rng.normal(0, 12, 3) + rng.uniform(-25, 25)  # hue drift, then brightness drift
    img = np.empty((h, w, 3), dtype=float)
    img[:] = shade
    spacing = 4 + variety_idx + int(rng.integers(-1, 2))
    img[:, (np.arange(w) % max(spacing, 3)) == 0] *= rng.uniform(0.75, 0.92)
    img *= np.linspace(rng.uniform(0.8, 1.0), rng.uniform(0.8, 1.0), h)[:, None, None]  # shading along the blade
    return img


def _streaks(img, rng, colour, n, length, width, alpha, photo_height):
    """Thin bright marks: bacterial_leaf_streak (long, vertical), hispa (short, any slant) share this look. They lie
    within `img` (a view of the photo); their length is a fraction of `photo_height`, the whole photo's height
    at its camera distance."""
    h, w, _ = img.shape
    for _ in range(n):
        cy, cx, angle = rng.uniform(0, h), rng.uniform(0, w), rng.uniform(*length[2])
        dy, dx = np.cos(angle), np.sin(angle)
        half = rng.uniform(length[0], length[1]) * photo_height / 2
        box = _box(img, cy, cx, half * abs(dy) + width * abs(dx), half * abs(dx) + width * abs(dy))
        if box is None:
            continue
        patch, yy, xx = box
        along = (yy - cy) * dy + (xx - cx) * dx
        across = np.abs(-(yy - cy) * dx + (xx - cx) * dy)
        _blend(patch, (np.abs(along) < half) & (across < width), colour, alpha)


def _spots(img, rng, colour, n, radius, alpha, photo_width, ring=None, elongation=1.0):
    """Round or diamond lesions at several scales: brown_spot, blast, downy_mildew and normal's specks share them.
    They lie within `img` (a view of the photo); their radius is a fraction of `photo_width`, the whole photo's width at
    its camera distance."""
    h, w, _ = img.shape
    for _ in range(n):
        cy, cx, r = rng.uniform(0, h), rng.uniform(0, w), rng.uniform(*radius) * photo_width
        box = _box(img, cy, cx, r * elongation, r)
        if box is None:
            continue
        patch, yy, xx = box
        d = np.sqrt(((yy - cy) / (r * elongation)) ** 2 + ((xx - cx) / r) ** 2)
        if ring is not None:
            _blend(patch, (d >= 0.7) & (d < 1), ring, alpha)
            _blend(patch, d < 0.7, colour, alpha)
        else:
            _blend(patch, d < 1, colour, alpha)


def _box(img, cy, cx, ry, rx):
    """The part of the image a lesion centred at (cy, cx) reaching ry, rx can touch (a view) and its pixel
    coordinates: drawing there instead of over the whole photo gives the same pixels, several times faster."""
    h, w, _ = img.shape
    y0, y1 = max(int(np.floor(cy - ry)) - 1, 0), min(int(np.ceil(cy + ry)) + 2, h)
    x0, x1 = max(int(np.floor(cx - rx)) - 1, 0), min(int(np.ceil(cx + rx)) + 2, w)
    if y0 >= y1 or x0 >= x1:
        return None
    yy, xx = np.mgrid[y0:y1, x0:x1]
    return img[y0:y1, x0:x1], yy, xx


# Spots and streaks keep this fraction of each side free: the photographer centres the lesions, so a random-resized
# crop of 75% of the area (TTA's and training's) trims leaf around them instead of cutting the evidence away.
MARGIN = 0.1


def _hard_disease(img, label, rng):
    h, w, _ = img.shape
    centre = img[round(MARGIN * h) : h - round(MARGIN * h), round(MARGIN * w) : w - round(MARGIN * w)]  # a view
    jitter = rng.normal(0, 15, 3)  # lesion colours vary, and neighbouring diseases' colours overlap
    pale, brown, grey = np.array([225, 215, 150]) + jitter, np.array([125, 80, 40]) + jitter, np.array([150, 150, 140])
    alpha = rng.uniform(0.35, 0.9)  # faint early lesions to vivid late ones
    # How close the camera was: every spot and streak scales with it, so size alone does not name a disease, and the
    # training photos show the sizes a zoomed TTA pass shows
    zoom = rng.uniform(0.8, 1.25)
    sh, sw = h * zoom, w * zoom
    vertical = (-0.15, 0.15)
    if label == "normal":  # no lesions: only dust and the odd speck, which brown_spot's sparsest photos also show
        _spots(centre, rng, brown, rng.integers(0, 4), (0.01, 0.025), rng.uniform(0.2, 0.5), sw)
    elif label == "bacterial_leaf_streak":
        _streaks(centre, rng, pale, rng.integers(2, 7), (0.3, 0.8, vertical), rng.uniform(0.8, 1.6) * zoom, alpha, sh)
    elif label == "hispa":
        n = rng.integers(4, 12)
        _streaks(centre, rng, pale + 20, n, (0.06, 0.2, (-1.6, 1.6)), rng.uniform(0.8, 1.6) * zoom, alpha, sh)
    elif label == "brown_spot":
        _spots(centre, rng, brown, rng.integers(3, 20), (0.015, 0.045), alpha, sw)
    elif label == "blast":  # spindle-shaped, grey centre, brown rim
        _spots(centre, rng, grey, rng.integers(1, 6), (0.03, 0.07), alpha, sw, ring=brown, elongation=2.0)
    elif label == "downy_mildew":
        _spots(centre, rng, pale, rng.integers(2, 6), (0.06, 0.14), alpha * 0.7, sw, elongation=1.3)
    elif label in ("bacterial_leaf_blight", "bacterial_panicle_blight", "tungro", "dead_heart"):
        # blights and yellowing: a discoloured region whose edge wanders; where and which colour tells them apart
        yy, xx = np.mgrid[0:h, 0:w]
        wobble = rng.uniform(0.03, 0.08) * w * np.sin(yy / h * rng.uniform(4, 12) + rng.uniform(0, 6))
        if label == "bacterial_leaf_blight":  # from both margins inwards
            edge = rng.uniform(0.1, 0.25) * w + wobble
            mask, colour = (xx < edge) | (xx > w - edge), pale
        elif label == "bacterial_panicle_blight":  # from the top down
            mask, colour = yy < rng.uniform(0.3, 0.6) * h + wobble, brown + 30
        elif label == "tungro":  # from the bottom up, orange-yellow
            mask, colour = yy > rng.uniform(0.3, 0.6) * h + wobble, np.array([225, 170, 60]) + jitter
        else:  # dead_heart: a dry pale centre
            cy, cx = h * rng.uniform(0.35, 0.65), w * rng.uniform(0.35, 0.65)
            mask = ((yy - cy) / (h * rng.uniform(0.15, 0.3))) ** 2 + ((xx - cx - wobble) / (w * 0.3)) ** 2 < 1
            colour = pale + 10
        _blend(img, mask, colour, alpha)
    return img


def _photo(img, rng):
    """The camera: per-photo exposure, contrast, colour cast, sensor noise and focus blur."""
    mean = img.mean()
    img = (img - mean) * rng.uniform(0.7, 1.2) + mean * rng.uniform(0.7, 1.3)
    img = img * rng.uniform(0.9, 1.1, 3) + rng.normal(0, rng.uniform(4, 14), img.shape)
    pil = Image.fromarray(np.clip(img, 0, 255).astype(np.uint8))
    return pil.filter(ImageFilter.GaussianBlur(rng.uniform(0, 1.5) * img.shape[1] / 192))


def hard_image(label, variety_idx, height, width, rng):
    return _photo(_hard_disease(_hard_leaf(height, width, variety_idx, rng), label, rng), rng)


def description(layout, classes=0):
    """The competition section (params.yaml's `competition`) that describes what `layout` writes, with the metric
    of the Kaggle competition it imitates: what `paddy init synthetic` infers, and what the check stage holds a
    generated competition's section against."""
    if layout != "paddy":
        raise PaddyError(f"`data.synthetic.layout` {layout!r} is not written yet.")
    return {
        "train_table": TRAIN_CSV,
        "id_column": "image_id",
        "labels_from": "column",
        "label_column": "label",
        "train_images": f"{TRAIN_DIR}/{{label}}/{{id}}",
        "test_images": f"{TEST_DIR}/{{id}}",
        "sample_submission": SAMPLE_CSV,
        "form": "label",
        "positive": "",
        "metric": "accuracy",
    }


# What describes the files themselves; the metric is the user's to change
LAYOUT_FIELDS = ("train_table", "id_column", "labels_from", "label_column", "train_images", "test_images",
                 "sample_submission", "form", "positive")  # fmt: skip


def check_description(synthetic, comp):
    """Refuse a competition section that does not describe the generated competition (SyntheticSettings), before
    anything is generated."""
    expected = description(synthetic.layout, synthetic.classes)
    wrong = [
        f"{key}: {getattr(comp, key)!r} (the generated one: {expected[key]!r})"
        for key in LAYOUT_FIELDS
        if (list(v) if isinstance(v := getattr(comp, key), tuple) else v) != expected[key]
    ]
    if wrong:
        raise PaddyError(
            f"The competition section in params.yaml does not describe the generated competition "
            f"(`data.synthetic.layout: {synthetic.layout}`): {'; '.join(wrong)}. Run `paddy init synthetic` to "
            "write the section that does, or set data.synthetic.layout to the competition the section describes."
        )


def make_competition(
    root,
    truth_path,
    n_train=800,
    n_test=200,
    width=192,
    height=256,
    seed=0,
    difficulty="easy",
    layout="paddy",
    classes=0,
):
    """Write a competition folder at `root` and the test set's true labels at `truth_path`."""
    root = Path(root)
    rng = np.random.default_rng(seed)
    draw = hard_image if difficulty == "hard" else draw_image
    labels = list(LABEL_COUNTS)
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
        image = draw(label, v, height, width, rng)
        if difficulty == "hard" and rng.random() < LABEL_NOISE:  # drawn as one disease, filed as another
            label = labels[(labels.index(label) + rng.integers(1, len(labels))) % len(labels)]
        out = root / TRAIN_DIR / label / image_id
        out.parent.mkdir(parents=True, exist_ok=True)
        image.save(out, quality=90)
        train_rows.append((image_id, label, varieties[v], age))
    test_rows = []
    (root / TEST_DIR).mkdir(parents=True, exist_ok=True)
    for i, (label, v, _) in enumerate(rows(n_test)):
        image_id = f"{200001 + i}.jpg"
        draw(label, v, height, width, rng).save(root / TEST_DIR / image_id, quality=90)
        test_rows.append((image_id, label))

    write_csv(pd.DataFrame(train_rows, columns=["image_id", "label", "variety", "age"]), root / TRAIN_CSV)
    test = pd.DataFrame(test_rows, columns=["image_id", "label"])
    write_csv(test.assign(label=""), root / SAMPLE_CSV)
    write_csv(test, truth_path)


def train_label_counts(synthetic):
    """The generated training set's images per label (SyntheticSettings), as make_competition draws them, without
    generating a picture: for the check stage. `hard`'s few wrong labels (LABEL_NOISE) then move a handful."""
    return pd.Series(_counts(synthetic.n_train, LABEL_COUNTS, None), name="count")
