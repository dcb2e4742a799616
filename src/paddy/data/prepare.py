"""Pre-resize every image once (fastai's resize_images), report the bad ones, and write one index table."""

import hashlib
import json
from pathlib import Path

import pandas as pd
from PIL import Image

from paddy.console import progress
from paddy.data.competition import class_order, label_classes, read_competition, target_columns
from paddy.data.images import MAX_PIXELS, BadImage, read_image
from paddy.errors import PaddyError
from paddy.files import atomic_path, process_pool, write_csv, write_json

INDEX = "index.csv"
BAD_FILES = "bad_files.csv"
LABELS = "labels.json"
TARGETS = "targets.json"
MIN_SIDE = 16  # pixels: a smaller image is a thumbnail or a broken export, and is left out


def resize_image(src, dst, max_size, max_pixels=MAX_PIXELS):
    """Shrink so the longest side is at most max_size; return (width, height, md5 of the file written) or raise
    ValueError(reason: what is wrong and the rule it breaks). The image is read as a viewer shows it
    (paddy.data.images: upright, 8-bit RGB; above `max_pixels`, truncated or corrupt it is refused with its reason).
    The md5 keys the item cache (paddy.data.items): new content, new items."""
    src = Path(src)
    if not src.exists():
        raise ValueError("missing: listed in the CSV but not on disk")
    if src.stat().st_size == 0:
        raise ValueError("zero bytes")

    def accept(im):
        # MPO: a phone's or camera's JPEG with more pictures after the first, which is the photo
        if src.suffix.lower() in (".jpg", ".jpeg") and im.format not in ("JPEG", "MPO"):
            raise BadImage(
                f"a {im.format} file named {src.suffix}: its name says JPEG, so this is another file under an "
                "image's name (convert it to JPEG and rename it if it belongs)"
            )
        if min(im.size) < MIN_SIDE:
            raise BadImage(
                f"{im.size[0]}x{im.size[1]} pixels: under the {MIN_SIDE} pixels a side an image needs to show "
                "anything (a thumbnail or a broken export)"
            )

    im = read_image(src, max_pixels, draft=(max_size, max_size), accept=accept)
    im.thumbnail((max_size, max_size), Image.Resampling.BICUBIC)
    with atomic_path(dst) as tmp:
        im.save(tmp, format="JPEG", quality=95)
        md5 = hashlib.md5(tmp.read_bytes()).hexdigest()
    return (*im.size, md5)


def _resize_job(job):
    src, dst, max_size, max_pixels = job
    try:
        return resize_image(src, dst, max_size, max_pixels), None
    except ValueError as e:
        return None, str(e)


def prepared_path(split, image_id):
    """Where prepare writes an image: images/<split>/<id>, a JPEG, so .jpg is added to an id without it."""
    suffix = "" if image_id.lower().endswith((".jpg", ".jpeg")) else ".jpg"
    return f"images/{split}/{image_id}{suffix}"


def prepare_competition(raw_dir, out_dir, comp, max_size, workers=2, max_pixels=MAX_PIXELS):
    """Resize the competition at raw_dir (described by comp, CompetitionSettings) into out_dir/images/{train,test}/
    and write index.csv, bad_files.csv, labels.json (the classes) and targets.json (each target's classes: label,
    then the train table's other columns)."""
    raw_dir, out_dir = Path(raw_dir), Path(out_dir)
    train, test, classes = read_competition(raw_dir, comp)
    rows = pd.concat([train.assign(split="train"), test.assign(split="test")], ignore_index=True)
    rows["path"] = [prepared_path(s, i) for s, i in zip(rows.split, rows.image_id)]
    jobs = [(src, out_dir / path, max_size, max_pixels) for src, path in zip(rows.src, rows.path)]
    with process_pool(workers) as pool:
        results = list(progress(pool.map(_resize_job, jobs, chunksize=32), "resize", total=len(jobs), unit="img"))
    rows["width"] = [r[0][0] if r[0] else 0 for r in results]
    rows["height"] = [r[0][1] if r[0] else 0 for r in results]
    rows["md5"] = [r[0][2] if r[0] else "" for r in results]
    rows["ok"] = [r[1] is None for r in results]
    bad = rows.loc[~rows.ok, ["image_id", "split"]].assign(
        file=[str(s) for s in rows.src[~rows.ok]], reason=[r[1] for r in results if r[1]]
    )
    for b in bad.itertuples():
        print(f"left out {b.file}: {b.reason}")
    training = rows[rows.split == "train"]
    if not training.ok.any():
        raise PaddyError(
            f"Every training image of {raw_dir} was left out ({int((~training.ok).sum())} bad files, listed above): "
            "nothing to train on. Check the source's images, and `competition.train_images` in params.yaml."
        )
    multi = comp.multi_label  # form tags: the classes are every tag seen
    emptied = sorted(set(label_classes(training.label, multi)) - set(label_classes(training.label[training.ok], multi)))
    if emptied:  # no model could learn it, and a submission sending a column per class would lack its column
        more = f", and of {len(emptied) - 1} more class(es)" if len(emptied) > 1 else ""
        raise PaddyError(
            f"Every training image of the class {emptied[0]!r} was left out (listed above){more}: no model can "
            "learn a class without images. Repair or replace its images in the competition folder."
        )
    index = rows.drop(columns="src").loc[rows.ok | (rows.split == "test")]  # a test row needs a prediction anyway
    write_csv(index, out_dir / INDEX)
    write_csv(bad, out_dir / BAD_FILES)
    kept = index[(index.split == "train") & index.ok]
    classes = label_classes(kept["label"], multi)
    write_json(out_dir / LABELS, classes)
    vocab = {"label": classes} | {c: class_order(kept[c]) for c in target_columns(kept)}
    write_json(out_dir / TARGETS, vocab)
    return index, bad


def read_labels(prepared_dir):
    """The classes in output order (labels.json)."""
    path = Path(prepared_dir) / LABELS
    if not path.exists():
        raise PaddyError(f"{path} does not exist: run `dvc repro prepare` first (it writes the classes).")
    return json.loads(path.read_text())


def read_targets(prepared_dir):
    """{target: its classes in output order}: label (the competition's), then the train table's other categorical
    columns (Paddy's variety and age). The head's size is the sum over a model's targets."""
    path = Path(prepared_dir) / TARGETS
    if not path.exists():
        raise PaddyError(f"{path} does not exist: run `dvc repro prepare` first (it writes the target classes).")
    vocab = json.loads(path.read_text())
    if not isinstance(vocab, dict) or not vocab.get("label"):
        raise PaddyError(f"{path} must map each target to its classes, label first; rerun `dvc repro -f prepare`.")
    return vocab


def read_index(prepared_dir):
    """index.csv: ids, labels and every target column as text, as prepare wrote them."""
    text = dict.fromkeys(("image_id", "label", "md5", "path", "split", *read_targets(prepared_dir)), str)
    return pd.read_csv(Path(prepared_dir) / INDEX, dtype=text, keep_default_na=False)
