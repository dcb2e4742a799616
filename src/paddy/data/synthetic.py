"""A small generated competition laid out exactly like Paddy Disease Classification, or like one of the other
Kaggle competitions paddy enters (`layout`: FAMILIES, docs/competitions.md), for offline runs and tests.

Each disease draws its own lesion pattern and colour on a leaf, and each variety its own leaf shade and vein
spacing, so labels are learnable from the pixels and a multi-target model has varieties to learn too. The test
set's true labels go to a separate file the model never sees, so the pipeline can score itself like a leaderboard.

`difficulty` easy draws each disease in its own colour and shape: tiny models score 1.000, so an ensemble or TTA
can only tie. hard draws it the way the real photos look (hard_image): diseases that share a look, `normal` as the
mere absence of lesions (with harmless specks), variety shades that shift colour from photo to photo, per-photo
camera distance, lighting, colour cast and blur, faint and sparse lesions, spots and streaks framed off the photo's
margins, and a few percent of wrong training labels.

The other layouts file the same painted leaves the way their competition files its images (MLE-bench's copy of
it): class k is drawn as disease k % 10 on leaf shade (k // 10) % 12, so up to 120 classes look different, and
`classes` N scales to thousands (time linear in images and classes).

The planet layout is multi-label (`competition.form: tags`), as Planet: Understanding the Amazon from Space is: each
photo shows several marks at once, each a tag (tagged_image), with Planet's tags, their real frequencies and the way
they go together: exactly one weather tag per photo, cloudy hiding every other, cultivation mostly with agriculture,
habitation mostly with road, rare tags (PLANET_RULES).
"""

import dataclasses
import io
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image, ImageFilter

from paddy.data.competition import class_order
from paddy.errors import PaddyError
from paddy.files import atomic_path, write_csv
from paddy.settings.schema import CompetitionSettings, SyntheticSettings

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


def _spots(img, rng, colour, n, radius, alpha, photo_width, shape=(None, 1.0)):
    """Round or diamond lesions at several scales: brown_spot, blast, downy_mildew and normal's specks share them.
    They lie within `img` (a view of the photo); their radius is a fraction of `photo_width`, the whole photo's width at
    its camera distance. shape: (the colour of a ring around each, or None; how much longer than wide they are)."""
    ring, elongation = shape
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
        _spots(centre, rng, grey, rng.integers(1, 6), (0.03, 0.07), alpha, sw, shape=(brown, 2.0))
    elif label == "downy_mildew":
        _spots(centre, rng, pale, rng.integers(2, 6), (0.06, 0.14), alpha * 0.7, sw, shape=(None, 1.3))
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


# ---------------------------------------------------------------------------------------------------------------
# Layout families: the same painted leaves, filed the way one Kaggle competition files its images (MLE-bench's copy
# of it), so every way paddy reads a competition runs offline.

DOG_BREEDS = (
    "affenpinscher afghan_hound african_hunting_dog airedale american_staffordshire_terrier appenzeller "
    "australian_terrier basenji basset beagle bedlington_terrier bernese_mountain_dog black-and-tan_coonhound "
    "blenheim_spaniel bloodhound bluetick border_collie border_terrier borzoi boston_bull bouvier_des_flandres boxer "
    "brabancon_griffon briard brittany_spaniel bull_mastiff cairn cardigan chesapeake_bay_retriever chihuahua chow "
    "clumber cocker_spaniel collie curly-coated_retriever dandie_dinmont dhole dingo doberman english_foxhound "
    "english_setter english_springer entlebucher eskimo_dog flat-coated_retriever french_bulldog german_shepherd "
    "german_short-haired_pointer giant_schnauzer golden_retriever gordon_setter great_dane great_pyrenees "
    "greater_swiss_mountain_dog groenendael ibizan_hound irish_setter irish_terrier irish_water_spaniel "
    "irish_wolfhound italian_greyhound japanese_spaniel keeshond kelpie kerry_blue_terrier komondor kuvasz "
    "labrador_retriever lakeland_terrier leonberg lhasa malamute malinois maltese_dog mexican_hairless "
    "miniature_pinscher miniature_poodle miniature_schnauzer newfoundland norfolk_terrier norwegian_elkhound "
    "norwich_terrier old_english_sheepdog otterhound papillon pekinese pembroke pomeranian pug redbone "
    "rhodesian_ridgeback rottweiler saint_bernard saluki samoyed schipperke scotch_terrier scottish_deerhound "
    "sealyham_terrier shetland_sheepdog shih-tzu siberian_husky silky_terrier soft-coated_wheaten_terrier "
    "staffordshire_bullterrier standard_poodle standard_schnauzer sussex_spaniel tibetan_mastiff tibetan_terrier "
    "toy_poodle toy_terrier vizsla walker_hound weimaraner welsh_springer_spaniel west_highland_white_terrier "
    "whippet wire-haired_fox_terrier yorkshire_terrier"
).split()
# The real training counts (the imbalance each competition has)
SEEDLING_COUNTS = {
    "Black-grass": 263, "Charlock": 390, "Cleavers": 287, "Common Chickweed": 611, "Common wheat": 221,
    "Fat Hen": 475, "Loose Silky-bent": 654, "Maize": 221, "Scentless Mayweed": 516, "Shepherds Purse": 231,
    "Small-flowered Cranesbill": 496, "Sugar beet": 385,
}  # fmt: skip
CASSAVA_COUNTS = {"0": 1087, "1": 2189, "2": 2386, "3": 13158, "4": 2577}
APTOS_COUNTS = {"0": 1805, "1": 370, "2": 999, "3": 193, "4": 295}
CACTUS_COUNTS = {"0": 4364, "1": 13136}
PATHOLOGY_COUNTS = {"healthy": 516, "multiple_diseases": 91, "rust": 622, "scab": 592}
# Planet's 17 tags and the training images that have each (of 40,479), most frequent first: its sample submission's
# placeholder is the first five
PLANET_COUNTS = {
    "primary": 37513, "clear": 28431, "agriculture": 12315, "road": 8071, "water": 7411, "partly_cloudy": 7261,
    "cultivation": 4547, "habitation": 3660, "haze": 2697, "cloudy": 2089, "bare_ground": 862,
    "selective_logging": 340, "artisinal_mine": 339, "blooming": 332, "slash_burn": 209, "blow_down": 101,
    "conventional_mine": 100,
}  # fmt: skip


@dataclass(frozen=True)
class Family:
    """One layout family: the Kaggle competition it imitates, its classes and how its files say them."""

    slug: str  # the Kaggle competition
    counts: dict  # its classes in its own naming -> their real training counts
    section: dict  # the competition section (params.yaml) describing its files, label_column filled for one_hot
    numbered: bool = False  # classes are 0..N-1: `classes` N names them 0..N-1
    sample: str = "first"  # what its sample submission sends: "" | first | last (class) | half | uniform
    separator: str = "_"  # between a class's base name and its round when N exceeds the real count: Maize 2
    ids: str = "counter"  # how its images are named (_ids)
    extras: tuple = ()  # the train table's columns besides the id and the label: extra targets


def _section(table, id_column, labels_from, label_column, images, form, metric, positive=""):
    """A layout's competition section; images: (train_images, test_images)."""
    train_images, test_images = images
    return dict(
        train_table=table, id_column=id_column, labels_from=labels_from, label_column=label_column,
        train_images=train_images, test_images=test_images, sample_submission=SAMPLE_CSV, form=form,
        positive=positive, metric=metric,
    )  # fmt: skip


FAMILIES = {
    "paddy": Family(
        "paddy-disease-classification", LABEL_COUNTS,
        _section(TRAIN_CSV, "image_id", "column", "label",
                 ("train_images/{label}/{id}", "test_images/{id}"), "label", "accuracy"),
        sample="", extras=("variety", "age"),
    ),
    "cassava": Family(
        "cassava-leaf-disease-classification", CASSAVA_COUNTS,
        _section(TRAIN_CSV, "image_id", "column", "label",
                 ("train_images/{id}", "test_images/{id}"), "label", "accuracy"),
        numbered=True, sample="last", ids="number",
    ),
    "dog_breed": Family(
        "dog-breed-identification", dict.fromkeys(DOG_BREEDS, 1),
        _section("labels.csv", "id", "column", "breed",
                 ("train/{id}.jpg", "test/{id}.jpg"), "probabilities", "log_loss"),
        sample="uniform", ids="hex32",
    ),
    "dogs_vs_cats": Family(
        "dogs-vs-cats-redux-kernels-edition", {"cat": 1, "dog": 1},
        _section("", "", "file_names", "", ("train/{id}", "test/{id}.jpg"), "probability", "log_loss", "dog"),
        sample="half", ids="file_names",
    ),
    "plant_seedlings": Family(
        "plant-seedlings-classification", SEEDLING_COUNTS,
        _section("", "", "folders", "", ("train/{label}/{id}", "test/{id}"), "label", "f1_micro"),
        sample="last", separator=" ", ids="hex9.png",
    ),
    "cactus": Family(
        "aerial-cactus-identification", CACTUS_COUNTS,
        _section(TRAIN_CSV, "id", "column", "has_cactus", ("train/{id}", "test/{id}"), "probability", "roc_auc", "1"),
        numbered=True, sample="half", ids="hex32.jpg",
    ),
    "aptos": Family(
        "aptos2019-blindness-detection", APTOS_COUNTS,
        _section(TRAIN_CSV, "id_code", "column", "diagnosis",
                 ("train_images/{id}.png", "test_images/{id}.png"), "label", "qwk"),
        numbered=True, sample="first", ids="hex12",
    ),
    "plant_pathology": Family(
        "plant-pathology-2020-fgvc7", PATHOLOGY_COUNTS,
        _section(TRAIN_CSV, "image_id", "one_hot", list(PATHOLOGY_COUNTS),
                 ("images/{id}.jpg", "images/{id}.jpg"), "probabilities", "mean_roc_auc"),
        sample="uniform", ids="train_test",
    ),
    "planet": Family(
        "planet-understanding-the-amazon-from-space", PLANET_COUNTS,
        _section("train_v2.csv", "image_name", "column", "tags", ("train-jpg/{id}.jpg", "test-jpg/{id}.jpg"),
                 "tags", "mean_f2") | {"sample_submission": "sample_submission_v2.csv"},
        sample="placeholder", ids="planet",
    ),
}  # fmt: skip
ZIPPED = {"cactus": ("train", "test")}  # folders shipped only as train.zip/test.zip, flat inside
TEST_TABLE = {"aptos", "plant_pathology"}  # beside the train table, a test.csv of the test ids only
DISEASES = list(LABEL_COUNTS)  # class k is drawn as disease k % 10 ...
SHADES = 12  # ... on the leaf shade (k // 10) % 12: up to 120 classes look different (dog_breed's 120 included)


def family(layout):
    if layout not in FAMILIES:
        raise PaddyError(f"`data.synthetic.layout` is {layout!r}; it must be one of {', '.join(FAMILIES)}.")
    return FAMILIES[layout]


def class_names(layout, classes=0):
    """The classes of a generated competition, in the layout's own naming: its real ones (classes 0, or its own
    count); else N of them: 0..N-1 for numbered layouts, the real names then `<name>_<round>` (Maize 2 for the
    seedlings) for the others. Binary layouts have exactly two."""
    fam = family(layout)
    own = list(fam.counts)
    n = classes or len(own)
    binary = fam.section["form"] == "probability"
    if (binary and n != 2) or n < 2:
        raise PaddyError(
            f"`data.synthetic.classes` is {classes}, but the {layout} layout "
            + (f"sends the probability of one class of two ({', '.join(own)}): set it to 0 or 2."
               if binary else "needs at least two classes: set it to 0 (its own count) or 2 or more.")
        )  # fmt: skip
    if n == len(own):
        return own
    if fam.numbered:
        return [str(k) for k in range(n)]
    return [own[k % len(own)] + (f"{fam.separator}{k // len(own)}" if k >= len(own) else "") for k in range(n)]


def description(layout, classes=0):
    """The competition section (params.yaml's `competition`, as plain values: label_column a list for one_hot)
    describing what `layout` writes, with the metric of the Kaggle competition it imitates: what `paddy init
    synthetic` infers, and what the check stage holds a generated competition's section against."""
    names = class_names(layout, classes)  # refuses a class count the layout cannot have
    section = dict(family(layout).section)
    if section["labels_from"] == "one_hot":
        section["label_column"] = names
    return section


def columns(layout):
    """The generated train table's columns besides the id and the label (paddy: variety, age): the extra targets
    `models.<name>.targets` may name on a generated competition."""
    return family(layout).extras


def described(layout="paddy", classes=0):
    """description(layout, classes) as the settings hold it (CompetitionSettings): for code that generates a
    competition and reads it back without a params.yaml (the benchmarks, the tests)."""
    return CompetitionSettings.of(description(layout, classes))


# What describes the files themselves; the metric is the user's to change
LAYOUT_FIELDS = ("train_table", "id_column", "labels_from", "label_column", "train_images", "test_images",
                 "sample_submission", "form", "positive")  # fmt: skip


def _check_size(layout, names, n_train):
    """A sample that sends a value per class needs every class among the training images."""
    if family(layout).section["form"] in ("probabilities", "probability") and n_train < len(names):
        raise PaddyError(
            f"`data.synthetic.n_train` is {n_train}, fewer than the {len(names)} classes of the {layout} layout, "
            "whose submission sends a probability per class (or of one class of two): every class needs a training "
            "image. Raise n_train or lower `data.synthetic.classes`."
        )


def check_description(synthetic, comp):
    """Refuse a competition section that does not describe the generated competition (SyntheticSettings), or
    settings the generator cannot honour, before anything is generated."""
    expected = description(synthetic.layout, synthetic.classes)
    _check_size(synthetic.layout, class_names(synthetic.layout, synthetic.classes), synthetic.n_train)
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


def _spread(total, weights, rng):
    """`total` images over the classes in proportion to `weights`, in time linear in the classes: at least one
    each when total >= the classes (the rest by largest remainder, ties broken at random); else `total` classes
    drawn by weight, one image each."""
    p = np.asarray(weights, dtype=float) / np.sum(weights)
    n = len(p)
    if total < n:
        counts = np.zeros(n, dtype=int)
        counts[rng.choice(n, total, replace=False, p=p)] = 1
        return counts.tolist()
    share = p * (total - n)
    counts = 1 + np.floor(share).astype(int)
    order = np.lexsort((rng.random(n), -(share - np.floor(share))))  # largest remainder first
    counts[order[: total - counts.sum()]] += 1
    return counts.tolist()


def _hex_ids(rng, n, digits):
    """n distinct random hexadecimal names of `digits` digits (a collision is drawn again)."""
    found = {}
    per = (digits + 1) // 2  # bytes per name
    while len(found) < n:
        need = n - len(found)
        text = rng.bytes(need * per).hex()
        found.update(dict.fromkeys(text[j * 2 * per : j * 2 * per + digits] for j in range(need)))
    return list(found)[:n]


def _ids(scheme, n_train, n_test, rng):
    """(training ids, test ids) in the competition's own style; file_names: the test ids only (a training image is
    named by its class as it is filed)."""
    if scheme == "counter":  # paddy
        return [f"{100001 + i}.jpg" for i in range(n_train)], [f"{200001 + i}.jpg" for i in range(n_test)]
    if scheme == "train_test":  # plant_pathology: one folder, Train_0.jpg beside Test_0.jpg
        return [f"Train_{i}" for i in range(n_train)], [f"Test_{i}" for i in range(n_test)]
    if scheme == "planet":  # train-jpg/train_0.jpg, test-jpg/test_0.jpg
        return [f"train_{i}" for i in range(n_train)], [f"test_{i}" for i in range(n_test)]
    if scheme == "file_names":  # dogs_vs_cats: test/1.jpg ... N.jpg, sent as 1 ... N
        return None, [str(i + 1) for i in range(n_test)]
    if scheme == "number":  # cassava: 1000015157.jpg, distinct, in no order
        numbers = rng.permutation(100_000_000 + np.cumsum(rng.integers(1, 15_000, n_train + n_test)))
        ids = [f"{v}.jpg" for v in numbers.tolist()]
    else:  # hex32 (dog_breed), hex32.jpg (cactus), hex12 (aptos), hex9.png (plant_seedlings)
        digits, _, suffix = scheme[len("hex") :].partition(".")
        ids = [i + (f".{suffix}" if suffix else "") for i in _hex_ids(rng, n_train + n_test, int(digits))]
    return ids[:n_train], ids[n_train:]


class _Images:
    """Where generated images go: files under `root`, or entries of <folder>.zip at its top for the folders a
    competition ships zipped (flat inside, as aerial-cactus does)."""

    def __init__(self, root, zipped=()):
        self.root, self.folders, self.zips = Path(root), set(), {}
        for folder in zipped:
            self.root.mkdir(parents=True, exist_ok=True)
            self.zips[folder] = zipfile.ZipFile(self.root / f"{folder}.zip", "w")

    def save(self, rel, image):
        folder, _, name = rel.partition("/")
        if folder in self.zips:
            buffer = io.BytesIO()
            image.save(buffer, format=Image.registered_extensions()[Path(name).suffix.lower()], quality=90)
            entry = zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0))  # no clock time: the same bytes every run
            entry.external_attr = 0o644 << 16
            self.zips[folder].writestr(entry, buffer.getvalue())
            return
        out = self.root / rel
        if out.parent not in self.folders:  # one mkdir per folder, not per image
            out.parent.mkdir(parents=True, exist_ok=True)
            self.folders.add(out.parent)
        image.save(out, quality=90)  # JPEG at quality 90 (PNG has no quality: lossless)

    def close(self):
        for zf in self.zips.values():
            zf.close()


def _write_lines(path, lines):
    with atomic_path(path) as tmp:
        tmp.write_text("".join(f"{line}\n" for line in lines))


def _write_sample(path, id_column, ids, columns, value):
    """The sample submission: the ids, then `value` in every column. Written as text: a probability column per
    class is ids x classes values (Kaggle's dog-breed sample: 10,357 x 120), which a DataFrame builds slowly."""
    cells = f",{value}" * len(columns)
    _write_lines(path, [",".join([id_column, *columns]), *(f"{i}{cells}" for i in ids)])


def _class_counts(layout, names, n, rng):
    """Images per class (in `names` order) of n images drawn for `layout`: the real proportions of its own
    classes (Paddy's with today's rounding), equal ones for N classes."""
    fam = family(layout)
    own = names == list(fam.counts)
    if layout == "paddy" and own:
        return list(_counts(n, LABEL_COUNTS, rng).values())
    return _spread(n, list(fam.counts.values()) if own else [1] * len(names), rng)


def train_label_counts(synthetic):
    """The generated training set's images per class (SyntheticSettings) as make_competition draws them (its
    first draw from the seed's stream), without generating a picture: for the check stage. `hard`'s few wrong
    labels (LABEL_NOISE) then move a handful."""
    names = class_names(synthetic.layout, synthetic.classes)
    if family(synthetic.layout).section["form"] == "tags":  # images per set of tags, as the train table says them
        filed = _tag_draws(synthetic, names)[1]
        return pd.Series(tag_strings(filed, names)).value_counts().rename("count")
    counts = _class_counts(synthetic.layout, names, synthetic.n_train, np.random.default_rng(synthetic.seed))
    return pd.Series(counts, index=names, name="count")


# make_competition's competition unless told otherwise: an easy one, quick to draw (params.yaml's is hard)
TEST_COMPETITION = SyntheticSettings(n_train=800, n_test=200, width=192, height=256, seed=0, difficulty="easy")


def make_competition(root, truth_path, spec=TEST_COMPETITION, **changes):
    """Write a competition folder at `root`, laid out like `layout`'s Kaggle competition (description(layout,
    classes) describes it), and the test set's true labels at `truth_path`: image_id (the sample submission's id as
    written) and label (the class as the pipeline names it). spec: SyntheticSettings (n_train, n_test, width,
    height, seed, difficulty, layout, classes), with any of its fields given as `changes`.

    Time is linear in the images and the classes. The paddy layout with its own classes draws exactly today's
    random stream (the default competition's bytes); the others draw their ids from a second stream."""
    spec = dataclasses.replace(spec, **changes)
    n_train, n_test, width, height, seed = spec.n_train, spec.n_test, spec.width, spec.height, spec.seed
    difficulty, layout, classes = spec.difficulty, spec.layout, spec.classes
    root = Path(root)
    fam = family(layout)
    names = class_names(layout, classes)
    _check_size(layout, names, n_train)
    section = description(layout, classes)
    if section["form"] == "tags":
        _make_tagged(root, truth_path, spec, names, section)
        return
    own = names == list(fam.counts)
    paddy = layout == "paddy"
    legacy = paddy and own  # today's Paddy generator, byte for byte: its rounding, its random stream
    rng = np.random.default_rng(seed)
    draw = hard_image if difficulty == "hard" else draw_image
    varieties = list(VARIETY_COUNTS)
    vprob = np.array(list(VARIETY_COUNTS.values()), dtype=float)
    vprob /= vprob.sum()

    def rows(n):
        """(class, variety, age) of n images in the real proportions (equal ones for N classes), shuffled."""
        counts = _class_counts(layout, names, n, rng)
        ks = [k for k, count in enumerate(counts) for _ in range(count)]
        rng.shuffle(ks)
        if paddy:
            return [(k, int(rng.choice(len(varieties), p=vprob)), int(rng.choice(AGES))) for k in ks]
        return [(k, None, None) for k in ks]

    def shade(k, variety):
        # Paddy's leaf shade is its variety's (a second target); otherwise it tells classes k and k + 10 apart
        return variety if paddy and len(names) <= 10 else (k // 10) % SHADES

    train_ids, test_ids = _ids(fam.ids, n_train, n_test, np.random.default_rng([seed, 1]))
    images = _Images(root, ZIPPED.get(layout, ()))
    try:
        train = rows(n_train)
        filed = np.bincount([k for k, _, _ in train], minlength=len(names))  # training images per class, as filed
        table, per_class = [], [0] * len(names)
        for i, (k, v, age) in enumerate(train):
            image = draw(DISEASES[k % 10], shade(k, v), height, width, rng)
            if difficulty == "hard" and rng.random() < LABEL_NOISE:  # drawn as one class, filed as another
                other = (k + rng.integers(1, len(names))) % len(names)
                # a class's last image keeps its label, so none is left without one; today's Paddy generator
                # predates this rule (at its sizes it never applies) and keeps its bytes
                if legacy or filed[k] > 1:
                    filed[k], filed[other], k = filed[k] - 1, filed[other] + 1, other
            label = names[k]
            if train_ids is None:  # named by the class it is filed under: cat.0.jpg, dog.0.jpg, cat.1.jpg
                image_id, per_class[k] = f"{label}.{per_class[k]}.jpg", per_class[k] + 1
            else:
                image_id = train_ids[i]
            images.save(section["train_images"].replace("{id}", image_id).replace("{label}", label), image)
            if section["labels_from"] == "one_hot":  # a 0/1 column per class, as text: ids x classes cells
                table.append(f"{image_id},{'0,' * k}1{',0' * (len(names) - k - 1)}")
            elif section["train_table"]:
                table.append((image_id, label, varieties[v], age) if paddy else (image_id, label))
        truth = []
        for i, (k, v, _) in enumerate(rows(n_test)):
            image = draw(DISEASES[k % 10], shade(k, v), height, width, rng)
            images.save(section["test_images"].replace("{id}", test_ids[i]), image)
            truth.append((test_ids[i], names[k]))
    finally:
        images.close()

    id_column = section["id_column"]
    if section["labels_from"] == "one_hot":
        _write_lines(root / section["train_table"], [",".join([id_column, *names]), *table])
    elif section["train_table"]:
        write_csv(
            pd.DataFrame(table, columns=[id_column, section["label_column"], *fam.extras]),
            root / section["train_table"],
        )
    if layout in TEST_TABLE:
        write_csv(pd.DataFrame({id_column: test_ids}), root / "test.csv")
    truth = pd.DataFrame(truth, columns=["image_id", "label"])
    sample_id = {"plant_seedlings": "file"}.get(layout, id_column or "id")
    if fam.sample == "uniform":  # a probability per class, 1/N each, the classes' columns in the train table's order
        columns = names if section["labels_from"] == "one_hot" else sorted(names)
        _write_sample(root / SAMPLE_CSV, sample_id, test_ids, columns, repr(1 / len(names)))
    else:
        value = {"": "", "first": class_order(names)[0], "last": class_order(names)[-1], "half": "0.5"}
        column = {"dogs_vs_cats": "label", "plant_seedlings": "species"}.get(layout, section["label_column"])
        write_csv(
            truth.rename(columns={"image_id": sample_id, "label": column}).assign(**{column: value[fam.sample]}),
            root / SAMPLE_CSV,
        )
    write_csv(truth, truth_path)


# ---------------------------------------------------------------------------------------------------------------
# The multi-label layout (planet): each photo shows several marks at once, each a tag

WEATHER = ("clear", "partly_cloudy", "haze", "cloudy")  # exactly one per photo, in Planet's proportions
# A tag's chance in a photo that is not cloudy: (chance, a tag drawn before it, the chance when that one is there):
# Planet's tags go together (cultivation is farmland, so mostly with agriculture; habitation mostly by a road)
PLANET_RULES = {
    "primary": (0.97, None, None),
    "agriculture": (0.32, None, None),
    "road": (0.08, "agriculture", 0.45),
    "water": (0.18, None, None),
    "cultivation": (0.02, "agriculture", 0.3),
    "habitation": (0.02, "road", 0.35),
    "bare_ground": (0.02, None, None),
    "selective_logging": (0.009, None, None),
    "artisinal_mine": (0.001, "water", 0.04),
    "blooming": (0.009, None, None),
    "slash_burn": (0.002, "agriculture", 0.012),
    "blow_down": (0.003, None, None),
    "conventional_mine": (0.003, None, None),
}
EXTRA_TAG = 0.1  # the chance of a tag past Planet's 17 (`classes` N > 17: primary_1, clear_1, ...)
# The marks of the land tags (every tag but the weather and primary, in class-name order): the j-th is drawn as the
# lesion LAND_KINDS[j % 9], its colours rolled (j // 9) % 3 channels, so 27 look different; primary is a green
# ground, its absence a brown one
LAND_KINDS = ("bacterial_leaf_blight", "bacterial_leaf_streak", "blast", "brown_spot", "hispa", "dead_heart",
              "bacterial_panicle_blight", "downy_mildew", "tungro")  # fmt: skip
REGIONS = ("bacterial_leaf_blight", "bacterial_panicle_blight", "tungro", "dead_heart")  # drawn first: they cover


def _planet_tags(names, n, rng):
    """(n, tags) bool: n photos' true tags among `names`, Planet's way: one weather tag each, nothing else under
    cloudy, the others by PLANET_RULES."""
    index = {name: k for k, name in enumerate(names)}
    weights = np.array([PLANET_COUNTS[w] for w in WEATHER], dtype=float)
    weather = rng.choice(len(WEATHER), n, p=weights / weights.sum())
    draws = rng.random((n, len(names)))
    tags = np.zeros((n, len(names)), dtype=bool)
    for w, name in enumerate(WEATHER):
        if name in index:
            tags[:, index[name]] = weather == w
    clouded = weather == WEATHER.index("cloudy")
    for k, name in enumerate(names):  # a rule's tag comes before it in `names` (Planet's order, by frequency)
        if name in WEATHER:
            continue
        chance, given, chance_given = PLANET_RULES.get(name, (EXTRA_TAG, None, None))
        if given in index:
            chance = np.where(tags[:, index[given]], chance_given, chance)
        tags[:, k] = (draws[:, k] < chance) & ~clouded
    return tags


def _every_tag_seen(tags, names, rng):
    """Give each tag no photo has one (a rare tag in a small competition), as the other layouts give every class a
    training image, without taking any other tag's last photo: a weather tag replaces a photo's weather (cloudy
    its every tag), any other tag joins a photo that is not cloudy. Where the photos are too few, a tag stays out."""
    weather = [k for k, name in enumerate(names) if name in WEATHER]
    cloudy = names.index("cloudy") if "cloudy" in names else None
    for k in np.flatnonzero(~tags.any(0)):
        last = tags & (tags.sum(0) == 1)  # the photos that are a tag's only one
        if k == cloudy:
            rows, cleared = ~last.any(1), slice(None)
        elif k in weather:
            rows, cleared = ~last[:, weather].any(1), weather
        else:
            rows, cleared = np.ones(len(tags), dtype=bool) if cloudy is None else ~tags[:, cloudy], []
        if rows.any():
            i = rng.choice(np.flatnonzero(rows))
            tags[i, cleared] = False
            tags[i, k] = True
    return tags


def _planet_noise(tags, names, rng):
    """hard's careless annotator: LABEL_NOISE of the photos get one tag besides the weather wrong (missed, or added
    to a photo that is not cloudy); a tag's last photo keeps it."""
    filed = tags.copy()
    land = [k for k, name in enumerate(names) if name not in WEATHER]
    clouded = filed[:, names.index("cloudy")] if "cloudy" in names else np.zeros(len(filed), bool)
    for i in np.flatnonzero(rng.random(len(filed)) < LABEL_NOISE):
        k = rng.choice(land)
        if filed[i, k] and filed[:, k].sum() > 1:
            filed[i, k] = False
        elif not filed[i, k] and not clouded[i]:
            filed[i, k] = True
    return filed


def _tag_draws(spec, names):
    """(the training photos' true tags, the tags their table files, the test photos' tags), each (n, tags) bool, from
    their own random stream: the check stage counts the training tags without drawing a photo."""
    rng = np.random.default_rng([spec.seed, 2])
    train = _every_tag_seen(_planet_tags(names, spec.n_train, rng), names, rng)
    test = _planet_tags(names, spec.n_test, rng)  # the same tags easy or hard: the noise has its own stream
    filed = _planet_noise(train, names, np.random.default_rng([spec.seed, 3])) if spec.difficulty == "hard" else train
    return train, filed, test


def tag_strings(tags, names):
    """Each row's tags ((n, tags) bool over `names`) as the competition writes them: space-separated, in class
    order; '' for none."""
    order = [names.index(c) for c in class_order(names)]
    return [" ".join(names[k] for k in order if row[k]) for row in tags]


def tagged_image(tags, names, difficulty, height, width, rng):
    """A photo showing its tags (a set of `names`): the ground green with primary, brown without; each other land
    tag's mark (LAND_KINDS), the covering ones first; then the weather over it: haze veils the photo, partly_cloudy
    lays a few large white blobs over it, cloudy nearly hides it. hard draws the marks the hard way (hard_image) and
    through its camera."""
    hard = difficulty == "hard"
    ground = 0 if "primary" in tags else 11
    img = _hard_leaf(height, width, ground, rng) if hard else _leaf(height, width, ground, rng)
    if hard:
        img = _hard_disease(img, "normal", rng)  # dust and specks on every photo
    land = [name for name in names if name not in WEATHER and name != "primary"]
    marks = [(LAND_KINDS[j % 9], (j // 9) % 3) for j, name in enumerate(land) if name in tags]
    for kind, roll in sorted(marks, key=lambda mark: mark[0] not in REGIONS):
        before = img.copy()
        img = _hard_disease(img, kind, rng) if hard else _draw_disease(img, kind, rng)
        if roll:  # the same mark in other colours: the pixels it changed, their channels rolled
            changed = (img != before).any(-1)
            img[changed] = np.roll(img[changed], roll, axis=-1)
    everywhere = np.ones((height, width), dtype=bool)
    white = np.array([235.0, 235.0, 240.0])
    if "haze" in tags:
        _blend(img, everywhere, np.array([190.0, 190.0, 180.0]), rng.uniform(0.3, 0.55) if hard else 0.5)
    elif "partly_cloudy" in tags:
        _spots(img, rng, white, rng.integers(2, 5), (0.12, 0.25), rng.uniform(0.6, 0.9) if hard else 0.9, width)
    elif "cloudy" in tags:
        _blend(img, everywhere, white, rng.uniform(0.75, 0.9) if hard else 0.85)
    return _photo(img, rng) if hard else Image.fromarray(np.clip(img, 0, 255).astype(np.uint8))


def _make_tagged(root, truth_path, spec, names, section):
    """make_competition for the multi-label layout: the photos, the train table of their tags (space-separated),
    the sample submission sending Planet's placeholder (its five most frequent tags) for every test photo, and the
    test photos' true tags at truth_path (image_id, label: the tags as the train table writes them)."""
    train, filed, test = _tag_draws(spec, names)
    ids_rng = np.random.default_rng([spec.seed, 1])  # the other layouts' stream of ids (planet's draw none)
    train_ids, test_ids = _ids(family(spec.layout).ids, spec.n_train, spec.n_test, ids_rng)
    rng = np.random.default_rng(spec.seed)
    images = _Images(root)
    for template, ids, tags in ((section["train_images"], train_ids, train), (section["test_images"], test_ids, test)):
        for image_id, row in zip(ids, tags):
            shown = {names[k] for k in np.flatnonzero(row)}
            image = tagged_image(shown, names, spec.difficulty, spec.height, spec.width, rng)
            images.save(template.replace("{id}", image_id), image)
    id_column, column = section["id_column"], section["label_column"]
    write_csv(pd.DataFrame({id_column: train_ids, column: tag_strings(filed, names)}), root / section["train_table"])
    placeholder = " ".join(names[:5])  # primary clear agriculture road water
    write_csv(pd.DataFrame({id_column: test_ids, column: placeholder}), root / section["sample_submission"])
    write_csv(pd.DataFrame({"image_id": test_ids, "label": tag_strings(test, names)}), truth_path)
