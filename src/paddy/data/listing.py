"""What a competition folder or zip holds, read cheaply: every file's path and, on demand, a CSV; no image decoded.

`paddy init` infers a competition's description from a Listing and the check stage holds the description against
one, before any stage deletes an output. A folder is one walk; a zip its central directory. An archive inside
(`train.zip` beside no `train/` folder, as Kaggle ships dogs-vs-cats and aerial-cactus; `train_labels.csv.zip`)
stands for what it holds: the folder `train/` or the file `train_labels.csv`. download extracts them the same way
(expand_archives), so what the description says of the listing holds for data/raw.
"""

import hashlib
import io
import json
import os
import shutil
import tempfile
import zipfile
from pathlib import Path, PurePosixPath

import pandas as pd

from paddy.archive import IGNORED, check_zip
from paddy.errors import PaddyError
from paddy.files import cache_dir, write_json

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp")


def is_image(name):
    return name.lower().endswith(IMAGE_SUFFIXES) and not PurePosixPath(name).name.startswith(".")


def _inner_target(name):
    """The folder or file an archive at the competition's top level stands for: train.zip -> train,
    train_labels.csv.zip -> train_labels.csv; None for anything else."""
    return name[: -len(".zip")] if "/" not in name and name.lower().endswith(".zip") else None


def _unwrap(names, top):
    """An archive's entry names as they land in the folder `top`: a single wrapping folder of that name (a zip of
    train/ itself) is dropped."""
    firsts = {n.split("/", 1)[0] for n in names}
    if firsts == {top} and all("/" in n for n in names):
        return {n: n.split("/", 1)[1] for n in names}
    return {n: n for n in names}


def read_text_csv(source, where):
    """A CSV (a path or a file object) with every value as text: ids keep their leading zeros, `NA` or `None` stay
    labels, empty cells stay empty; an unreadable one is a PaddyError naming `where`."""
    try:
        return pd.read_csv(source, dtype=str, keep_default_na=False)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as e:
        raise PaddyError(
            f"{where} is not a readable CSV ({type(e).__name__}: {e}). Restore the competition's own file (download "
            "it again, or point `data.source` at an intact copy)."
        ) from None


def _archive_entries(zf, target):
    """{path in the listing: entry name} of an inner archive standing for `target` (a folder, or one CSV)."""
    names = [i.filename for i in zf.infolist() if not i.is_dir()]
    names = [n for n in names if not any(p in IGNORED for p in n.split("/"))]
    if target.lower().endswith(".csv"):  # a zipped table: the CSV it holds
        return {target: names[0]} if names else {}
    return {f"{target}/{new}": old for old, new in _unwrap(names, target).items()}


class Listing:
    """The files of a competition (posix paths relative to its top, the inner archives expanded) and a way to read
    one."""

    def __init__(self, where, files, read):
        self.where, self.files, self._read, self._tables = str(where), set(files), read, {}

    @classmethod
    def of(cls, path):
        """The listing of a folder or a .zip. The entries of an archive inside a zip are remembered in the cache
        (keyed by the zip's size and time): reading them means decompressing the archive, once, not on every check."""
        path = Path(path)
        if path.is_dir():
            files = set()
            for folder, dirs, names in os.walk(path):
                dirs[:] = [d for d in dirs if d not in IGNORED]
                rel = Path(folder).relative_to(path).as_posix()
                files.update(n if rel == "." else f"{rel}/{n}" for n in names if n not in IGNORED)

            def read(rel):
                return (path / rel).read_bytes()

            def open_archive(rel):
                check_zip(path / rel, crc=False)  # entries that would land outside are refused
                return zipfile.ZipFile(path / rel)

            def entries(name, target):
                with open_archive(name) as zf:
                    return _archive_entries(zf, target)

        else:
            infos = check_zip(path, crc=False)
            names = [i.filename.replace("\\", "/") for i in infos if not i.is_dir()]
            names = [n for n in names if not any(p in IGNORED for p in n.split("/"))]
            tops = {n.split("/", 1)[0] for n in names}
            wrap = next(iter(tops)) + "/" if len(tops) == 1 and all("/" in n for n in names) else ""
            entry = {n[len(wrap) :]: n for n in names}  # the listing's path -> the entry's name
            files = set(entry)

            def read(rel):
                with zipfile.ZipFile(path) as zf:
                    return zf.read(entry[rel])

            opened = {}

            def open_archive(rel):
                # An archive inside the zip is copied to a temporary file once (Kaggle's train.zip can be half a
                # gigabyte: not into memory) and read from there, entry by entry.
                if rel not in opened:
                    copy = tempfile.TemporaryFile()
                    with zipfile.ZipFile(path) as zf, zf.open(entry[rel]) as src:
                        shutil.copyfileobj(src, copy)
                    opened[rel] = copy
                opened[rel].seek(0)
                return zipfile.ZipFile(opened[rel])

            def entries(name, target):
                stat = path.stat()
                key = f"{path.resolve()}|{stat.st_size}|{stat.st_mtime_ns}|{entry[name]}|{target}"
                memo = cache_dir("listings", hashlib.sha256(key.encode()).hexdigest()[:24] + ".json")
                if memo.exists():
                    return json.loads(memo.read_text())
                with open_archive(name) as zf:
                    found = _archive_entries(zf, target)
                write_json(memo, found)
                return found

        members = {}  # path in the listing -> (the inner archive's listing path, its entry)
        for name in sorted(files):
            target = _inner_target(name)
            if target is None or target in files or any(f.startswith(f"{target}/") for f in files):
                continue
            members.update({rel: (name, e) for rel, e in entries(name, target).items()})
        stood_for = {archive for archive, _ in members.values()}

        def read_any(rel):
            if rel not in members:
                return read(rel)
            archive, member = members[rel]
            with open_archive(archive) as zf:
                return zf.read(member)

        return cls(path, (files - stood_for) | set(members), read_any)

    def exists(self, rel):
        return rel in self.files

    def csv(self, rel, what="a table"):
        """The CSV at `rel`, every value as text (ids keep their leading zeros, empty cells stay empty); read once,
        then remembered (a caller must not change it)."""
        if rel not in self.files:
            raise PaddyError(f"{self.where} has no {rel} ({what}). {self.tops_line()}")
        if rel not in self._tables:
            self._tables[rel] = read_text_csv(io.BytesIO(self._read(rel)), f"{self.where}/{rel}")
        return self._tables[rel]

    def tops_line(self):
        """One sentence of what the top level holds, for an error message."""
        tops = {f.split("/", 1)[0] + ("/" if "/" in f else "") for f in self.files}
        tops = sorted(tops)
        shown = ", ".join(tops[:12]) + (f" and {len(tops) - 12} more" if len(tops) > 12 else "")
        return f"Its top level holds {shown or 'nothing'}."


def expand_archives(root):
    """Extract each archive at the top of the competition folder `root` that stands for a folder or file not there
    (train.zip -> train/, train_labels.csv.zip -> train_labels.csv), then remove it, as Listing reads them; an
    archive beside the folder it holds is only removed (the folder is there). Returns the names extracted."""
    root = Path(root)
    done = []
    for archive in sorted(p for p in root.iterdir() if p.is_file() and _inner_target(p.name)):
        target = root / _inner_target(archive.name)
        if not target.exists():
            check_zip(archive)  # complete, every entry inside
            with zipfile.ZipFile(archive) as zf:
                for rel, entry in _archive_entries(zf, target.name).items():
                    dest = root / rel
                    dest.parent.mkdir(parents=True, exist_ok=True)
                    with zf.open(entry) as src, open(dest, "wb") as out:
                        shutil.copyfileobj(src, out)
            done.append(archive.name)
        archive.unlink()
    return done
