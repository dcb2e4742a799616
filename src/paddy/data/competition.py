"""The competition's layout on disk, as Kaggle ships it, and the checks that catch a malformed copy early.

train.csv                 image_id,label[,variety,age]
train_images/<label>/<image_id>
test_images/<image_id>
sample_submission.csv     image_id,label  (the row order a submission must keep)
"""

from pathlib import Path

import pandas as pd

from paddy.errors import PaddyError

# The real competition's classes (train.csv's labels) and test images (sample_submission.csv's ids, in its order):
# a label outside these is not the competition's, nor a submission for other ids (paddy.data.synthetic's, say).
SLUG = "paddy-disease-classification"
LABELS = (
    "bacterial_leaf_blight",
    "bacterial_leaf_streak",
    "bacterial_panicle_blight",
    "blast",
    "brown_spot",
    "dead_heart",
    "downy_mildew",
    "hispa",
    "normal",
    "tungro",
)
TEST_IDS = tuple(f"{i}.jpg" for i in range(200001, 203470))

TRAIN_CSV = "train.csv"
SAMPLE_CSV = "sample_submission.csv"
TRAIN_DIR = "train_images"
TEST_DIR = "test_images"


def _read_csv(path, required, what):
    path = Path(path)
    if not path.is_file():
        raise PaddyError(
            f"{path} is missing: a competition folder needs {what}. Check `data.source`, or re-download the data."
        )
    try:
        df = pd.read_csv(path, dtype={"image_id": str, "label": str})
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as e:
        raise PaddyError(f"{path} is not a readable CSV ({type(e).__name__}: {e}). Re-download or repair it.") from e
    missing = [c for c in required if c not in df.columns]
    if missing:
        raise PaddyError(
            f"{path} has columns {list(df.columns)} but needs {', '.join(required)} (missing {', '.join(missing)}). "
            "Check that this is the competition's file and that its header row is intact."
        )
    if df["image_id"].isna().any():
        raise PaddyError(f"{path} has rows with no image_id (first at row {int(df['image_id'].isna().argmax()) + 2}).")
    dupes = df["image_id"][df["image_id"].duplicated()]
    if len(dupes):
        raise PaddyError(
            f"{path} lists image_id {dupes.iloc[0]!r} more than once (again at line {dupes.index[0] + 2}; "
            f"{len(dupes)} repeated row(s) in all): each image needs exactly one row. Delete the repeated rows, or "
            "restore the competition's own file (download it again, or point `data.source` at an intact copy)."
        )
    return df


def read_train_csv(root):
    df = _read_csv(Path(root) / TRAIN_CSV, ("image_id", "label"), "train.csv with columns image_id,label,...")
    if df["label"].isna().any():
        row = int(df["label"].isna().argmax()) + 2
        raise PaddyError(f"{Path(root) / TRAIN_CSV} has rows with no label (first at line {row}).")
    return df


def read_sample_submission(root):
    return _read_csv(Path(root) / SAMPLE_CSV, ("image_id", "label"), "sample_submission.csv with image_id,label")


def check_layout(root):
    """Raise a PaddyError naming the first thing that is not laid out like the competition; return the tables."""
    root = Path(root)
    if not root.is_dir():
        raise PaddyError(f"{root} is not a folder: a competition needs train.csv, train_images/, test_images/ there.")
    for d in (TRAIN_DIR, TEST_DIR):
        if not (root / d).is_dir():
            raise PaddyError(
                f"{root / d} is missing: a competition folder holds train.csv, {TRAIN_DIR}/<label>/<image_id>, "
                f"{TEST_DIR}/<image_id> and {SAMPLE_CSV}. Point `data.source` at the folder that contains them."
            )
    train = read_train_csv(root)
    sample = read_sample_submission(root)
    labels = set(train["label"])
    strays = sorted(p.name for p in (root / TRAIN_DIR).iterdir() if p.is_dir() and p.name not in labels)
    if strays:
        raise PaddyError(
            f"{root / TRAIN_DIR} has label folder(s) {', '.join(strays)} that no row of {root / TRAIN_CSV} uses "
            f"(its labels: {', '.join(sorted(labels))}). Add their rows to train.csv or remove the folders."
        )
    return train, sample
