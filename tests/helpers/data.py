"""Test data: a work folder prepared from the shared tiny competition (the `competition` fixture), zips in memory."""

import io
import zipfile

from helpers.settings import default_competition
from paddy.data.prepare import prepare_competition
from paddy.data.split import make_splits
from paddy.files import write_csv


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
