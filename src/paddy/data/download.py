"""Where the competition comes from (`data.source`): generated, downloaded from Kaggle, or a folder/.zip on disk."""

import dataclasses
import shutil
import tempfile
from pathlib import Path

import pandas as pd

from paddy.archive import check_listing, extract_zip
from paddy.data.competition import SAMPLE_CSV, TRAIN_CSV, check_layout
from paddy.data.fingerprint import source_path
from paddy.data.synthetic import make_competition
from paddy.errors import PaddyError
from paddy.files import replace_dir, write_csv
from paddy.kaggle.api import fetch_zip

TRUTH_COLUMNS = ["image_id", "label"]


def fetch_competition(data, raw_dir, truth_path):
    """Lay the competition out at `raw_dir`; write the test set's true labels to `truth_path` when known.

    Returns (train, sample) from the layout check. Without known test labels (Kaggle, or a user's own copy) the
    truth file holds only its header, so the ensemble knows there is nothing to score against.
    """
    raw_dir, truth_path = Path(raw_dir), Path(truth_path)
    raw_dir.parent.mkdir(parents=True, exist_ok=True)
    source = str(data.source)
    if source == "synthetic":
        synthetic = dataclasses.asdict(data.synthetic)
        _build_dir(raw_dir, lambda tmp: make_competition(tmp, truth_path, **synthetic))
        return check_layout(raw_dir)
    if source == "kaggle":
        tables = download_competition(data.competition, raw_dir)  # checks the layout itself
    else:
        path = source_path(source)
        if path.is_dir():
            tables = check_layout(path)  # refuse before copying anything
            _build_dir(raw_dir, lambda tmp: shutil.copytree(path, tmp))
        else:
            tables = extract_zip(path, raw_dir, check=check_layout)  # checked before it replaces raw_dir
    write_csv(pd.DataFrame(columns=TRUTH_COLUMNS), truth_path)
    return tables


def download_competition(slug, dest, client=None, cache_dir=None):
    """Make `dest` the competition folder: download `<slug>.zip` into the cache (once), verify, extract, check.

    Returns (train_df, sample_df) from `check_layout`. `dest` is the complete, checked competition, or left as it
    was: never a partial extraction. The cache (`cache_dir`, default paddy.kaggle.cache.default_dir(): one per user,
    outside every workspace) is kept between runs, clones and queue workers, so none of them downloads again.
    """
    dest = Path(dest)
    zip_path = fetch_zip(slug, client=client, cache_dir=cache_dir)
    try:
        return extract_zip(zip_path, dest, check=check_layout)  # checked before it replaces `dest`
    except PaddyError as e:
        raise PaddyError(
            f"{zip_path} does not hold the competition as expected: {e} If Kaggle changed the files, delete "
            f"{zip_path} and download again."
        ) from None


def check_source(data):
    """What download would refuse in `data.source`, found before DVC runs download (the check stage), cheaply: a
    folder's CSVs and folders, a zip's listing and CSVs (entries that would land outside it included), not every
    image. Kaggle's zip is checked when downloaded (before it replaces data/raw); a generated one needs no check."""
    source = str(data.source)
    if source in ("synthetic", "kaggle"):
        return
    path = source_path(source)
    if path.is_dir():
        check_layout(path)
    else:
        check_listing(path, check_layout, files=(TRAIN_CSV, SAMPLE_CSV))


def _build_dir(dest, fill):
    """fill(path) writes a new folder at `path` beside `dest`; it replaces `dest` only once complete, so an
    interrupted run never leaves half a competition."""
    tmp = Path(tempfile.mkdtemp(dir=dest.parent, prefix=f".{dest.name}."))
    try:
        fill(tmp / "competition")
        replace_dir(tmp / "competition", dest)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
