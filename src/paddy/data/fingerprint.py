"""A cheap fingerprint of what `data.source` holds now, so that download reruns exactly when the source changed.

DVC cannot track a source it is not given as a path: Kaggle, or a user's folder or zip anywhere on disk. The
fingerprint stage runs on every `dvc repro` (always_changed) and writes this to data/source.json; download depends
on that file, so it reruns when the fingerprint changes, and only then. File sizes and modification times, not
contents, keep that fast even for the 14,000 files of the real competition.
"""

import dataclasses
import hashlib
import os
from pathlib import Path

from paddy.errors import PaddyError
from paddy.kaggle import cache as kaggle_cache


def source_path(source):
    """The folder or .zip that `data.source` names (when not synthetic or kaggle); a clear error if it is neither."""
    path = Path(source).expanduser()
    if not path.exists():
        raise PaddyError(
            f"`data.source` is {source!r}, which is neither synthetic, kaggle, nor an existing folder or .zip "
            f"(looked for {path.resolve()}). Give the path of the competition folder or zip, relative to the "
            "repository root or absolute."
        )
    if not path.is_dir() and path.suffix.lower() != ".zip":
        raise PaddyError(f"`data.source` {source!r} is a file but not a .zip: give a folder or a .zip archive.")
    return path


def fingerprint(data, cache_dir=None):
    """A JSON-able dict that changes whenever the competition `data` (DataSettings) would lay out changes."""
    source = str(data.source)
    if source == "synthetic":
        return {"source": source, "synthetic": dataclasses.asdict(data.synthetic)}
    if source == "kaggle":
        # The record written when the cached zip was verified: no need to hash a gigabyte on every repro.
        record = kaggle_cache.read_record(kaggle_cache.zip_path(data.competition, cache_dir))
        return {"source": source, "competition": data.competition, "zip_sha256": record and record["sha256"]}
    path = source_path(source)
    if path.is_file():
        stat = path.stat()
        return {"source": source, "size": stat.st_size, "mtime_ns": stat.st_mtime_ns}
    digest, count = hashlib.sha256(), 0
    for folder, dirs, files in os.walk(path):
        dirs.sort()
        for name in sorted(files):
            file = Path(folder, name)
            stat = file.stat()
            digest.update(f"{file.relative_to(path).as_posix()}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
            count += 1
    return {"source": source, "files": count, "digest": digest.hexdigest()}
