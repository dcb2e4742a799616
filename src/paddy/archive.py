"""Safe zip extraction: every entry must land inside the target, and a partial extraction never looks complete."""

import os
import shutil
import stat
import tempfile
import zipfile
from pathlib import Path, PurePosixPath

from paddy.errors import PaddyError


def check_zip(zip_path):
    """Return the open archive's entries after checking it is a complete zip whose entries all stay inside."""
    zip_path = Path(zip_path)
    try:
        zf = zipfile.ZipFile(zip_path)
        bad = zf.testzip()
    except (zipfile.BadZipFile, EOFError, OSError) as e:
        raise PaddyError(
            f"{zip_path} is not a complete zip archive ({e}). It may be truncated: delete it and download it again."
        ) from e
    with zf:
        if bad is not None:
            raise PaddyError(f"{zip_path} is corrupt (entry {bad} fails its CRC check): delete it and download again.")
        for info in zf.infolist():
            name = PurePosixPath(info.filename.replace("\\", "/"))
            mode = info.external_attr >> 16
            if name.is_absolute() or ".." in name.parts or (name.parts and name.parts[0].endswith(":")):
                raise PaddyError(
                    f"{zip_path} has an entry {info.filename!r} that would land outside the target folder; "
                    "refusing to extract it. Get the archive from a trusted source."
                )
            if stat.S_ISLNK(mode):
                raise PaddyError(f"{zip_path} has a symbolic link entry {info.filename!r}; refusing to extract it.")
        return zf.infolist()


def extract_zip(zip_path, dest):
    """Extract into a temp folder beside `dest`, then rename: `dest` is complete or absent, never half-written.

    An archive that wraps everything in one top folder (a hand-made zip of the competition folder) is unwrapped.
    """
    check_zip(zip_path)
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=dest.parent, prefix=f".{dest.name}."))
    try:
        with zipfile.ZipFile(zip_path) as zf:
            zf.extractall(tmp)
        root = tmp
        entries = [p for p in tmp.iterdir() if p.name not in ("__MACOSX", ".DS_Store")]
        if len(entries) == 1 and entries[0].is_dir():
            root = entries[0]
        if dest.exists():
            shutil.rmtree(dest)
        os.replace(root, dest)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return dest
