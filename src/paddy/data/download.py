"""Where the competition comes from (`data.source`): generated, downloaded from Kaggle, or a folder/.zip on disk."""

import shutil
import tempfile
from pathlib import Path

import pandas as pd

from paddy.archive import extract_zip
from paddy.data.competition import check_layout, target_columns
from paddy.data.fingerprint import source_path
from paddy.data.listing import Listing, expand_archives
from paddy.data.synthetic import check_description, columns, make_competition, train_label_counts
from paddy.errors import PaddyError
from paddy.files import replace_dir, write_csv
from paddy.kaggle.api import fetch_zip

TRUTH_COLUMNS = ["image_id", "label"]


def fetch_competition(data, comp, raw_dir, truth_path):
    """Lay the competition out at `raw_dir`; write the test set's true labels to `truth_path` when known.

    `comp` (CompetitionSettings) describes it: the new folder is checked against it before it replaces raw_dir, so
    a refused one leaves the last good competition in place. Archives at its top that stand for a folder (train.zip)
    are extracted (paddy.data.listing). Returns check_layout's (train rows, sample, test rows, classes). Without
    known test labels (Kaggle, or a user's own copy) the truth file holds only its header, so the ensemble knows
    there is nothing to score against.
    """
    raw_dir, truth_path = Path(raw_dir), Path(truth_path)
    raw_dir.parent.mkdir(parents=True, exist_ok=True)

    def check(folder):
        expand_archives(folder)
        return check_layout(folder, comp)

    source = str(data.source)
    if source == "synthetic":
        truth_tmp = truth_path.with_name(f".{truth_path.name}.new")
        tables = _build_dir(raw_dir, lambda tmp: make_competition(tmp, truth_tmp, data.synthetic), check)
        truth_tmp.replace(truth_path)
        return tables
    if source == "kaggle":
        tables = download_competition(data.competition, raw_dir, check)
    else:
        path = source_path(source)
        if path.is_dir():  # the check stage has held it against the section; the copy is checked again, whole

            def check_copy(folder):  # a refusal names the user's folder, not the copy's scratch place
                try:
                    return check(folder)
                except PaddyError as e:
                    raise PaddyError(str(e).replace(str(folder), str(path))) from None

            tables = _build_dir(raw_dir, lambda tmp: shutil.copytree(path, tmp), check_copy)
        else:
            tables = extract_zip(path, raw_dir, check=check)  # checked before it replaces raw_dir
    write_csv(pd.DataFrame(columns=TRUTH_COLUMNS), truth_path)
    return tables


def download_competition(slug, dest, check, client=None, cache_dir=None):
    """Make `dest` the competition folder: download `<slug>.zip` into the cache (once), verify, extract, check.

    Returns what check(folder) returns. `dest` is the complete, checked competition, or left as it was: never a
    partial extraction. The cache (`cache_dir`, default paddy.kaggle.cache.default_dir(): one per user, outside
    every workspace) is kept between runs, clones and queue workers, so none of them downloads again.
    """
    dest = Path(dest)
    zip_path = fetch_zip(slug, client=client, cache_dir=cache_dir)
    try:
        return extract_zip(zip_path, dest, check=check)  # checked before it replaces `dest`
    except PaddyError as e:
        raise PaddyError(
            f"{zip_path} does not hold the competition as expected: {e} If Kaggle changed the files, delete "
            f"{zip_path} and download again; if the competition section does not describe them, `paddy init {slug}`."
        ) from None


def check_source(data, comp):
    """What download would refuse in `data.source` against the description `comp`, found before DVC runs download
    (the check stage), cheaply: a folder's listing and CSVs, a zip's listing and CSVs (entries that would land
    outside it included), not one image decoded. A generated competition's layout is the generator's own
    (synthetic.check_description); Kaggle's zip is checked when downloaded (before it replaces data/raw). Returns
    (the training images per label, the train table's other columns: the targets a model may add), or None where
    unknown before download (Kaggle)."""
    source = str(data.source)
    if source == "synthetic":
        check_description(data.synthetic, comp)
        return train_label_counts(data.synthetic), list(columns(data.synthetic.layout))
    if source == "kaggle":
        return None
    path = source_path(source)
    train = check_layout(Listing.of(path), comp)[0]
    return train["label"].value_counts(), target_columns(train)


def _build_dir(dest, fill, check):
    """fill(path) writes a new folder at `path` beside `dest`; check(path) holds it against the description; it
    replaces `dest` only once complete and checked, so an interrupted or refused run never leaves half a
    competition. Returns what check returned."""
    tmp = Path(tempfile.mkdtemp(dir=dest.parent, prefix=f".{dest.name}."))
    try:
        fill(tmp / "competition")
        checked = check(tmp / "competition")
        replace_dir(tmp / "competition", dest)
        return checked
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
