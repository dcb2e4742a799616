"""One verified copy of each Kaggle competition zip per user, shared by every clone and every `dvc queue` worker.

`<cache>/<slug>.zip` sits beside `<slug>.zip.json`, the size and sha256 the zip had when it was verified; the zip
is reused only while both still match. A download lands under a temporary name and is renamed into place, and a
lock file makes concurrent workers wait for one download instead of each fetching a gigabyte.
"""

import json
import os
from pathlib import Path

from paddy.files import cache_dir, file_digest, write_json

ENV = "PADDY_KAGGLE_CACHE"


def default_dir():
    """$PADDY_KAGGLE_CACHE, else the cache folder's kaggle/ (paddy.files.cache_dir: ~/.cache/paddy/kaggle)."""
    if os.environ.get(ENV):
        return Path(os.environ[ENV]).expanduser()
    return cache_dir("kaggle")


def zip_path(slug, cache_dir=None):
    return Path(cache_dir or default_dir()) / f"{slug}.zip"


def record_path(zip_file):
    return Path(f"{zip_file}.json")


def read_record(zip_file):
    """{"size": ..., "sha256": ...} recorded when `zip_file` was verified, or None."""
    try:
        record = json.loads(record_path(zip_file).read_text())
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) and {"size", "sha256"} <= record.keys() else None


def sha256(path):
    return file_digest(path, "sha256")


def is_verified(zip_file):
    """True if `zip_file` has the size and sha256 recorded when it was verified (the size first: it is free)."""
    zip_file = Path(zip_file)
    record = read_record(zip_file)
    if record is None or not zip_file.is_file() or zip_file.stat().st_size != record["size"]:
        return False
    return sha256(zip_file) == record["sha256"]


def lock(zip_file):
    """Held while checking and filling the cache, so that concurrent workers download once, one at a time."""
    from filelock import FileLock  # here: the fingerprint stage, run on every repro, only reads records

    Path(zip_file).parent.mkdir(parents=True, exist_ok=True)
    return FileLock(f"{zip_file}.lock")


def store(verified_file, zip_file):
    """Move an already verified zip into the cache and record its size and sha256 (call it holding `lock`)."""
    record = {"size": Path(verified_file).stat().st_size, "sha256": sha256(verified_file)}
    os.replace(verified_file, zip_file)
    write_json(record_path(zip_file), record)
    return Path(zip_file)
