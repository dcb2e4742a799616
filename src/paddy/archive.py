"""Safe zip extraction: every entry must land inside the target, and a partial extraction never looks complete."""

import shutil
import stat
import tempfile
import zipfile
from pathlib import Path, PurePosixPath

from paddy.errors import PaddyError
from paddy.files import replace_dir

ZIP_SIGNATURES = (b"PK\x03\x04", b"PK\x05\x06", b"PK\x07\x08")  # a first entry, an empty archive, a split one
IGNORED = ("__MACOSX", ".DS_Store")  # what macOS adds to a zip it makes


def check_zip(zip_path, crc=True):
    """Return the open archive's entries after checking it is a complete zip whose entries all stay inside.

    crc=False skips reading every entry to test its CRC (a gigabyte for the competition): the listing alone, for a
    check that runs on every repro."""
    zip_path = Path(zip_path)
    try:
        zf = zipfile.ZipFile(zip_path)
        bad = zf.testzip() if crc else None
    except OSError as e:
        raise PaddyError(f"{zip_path} cannot be read ({e}). Check that it exists and that you may read it.") from e
    except (zipfile.BadZipFile, EOFError) as e:
        with open(zip_path, "rb") as f:
            head = f.read(4)
        if head not in ZIP_SIGNATURES:  # random bytes, an HTML error page, a renamed file: not truncation
            raise PaddyError(
                f"{zip_path} is not a zip archive at all: it does not start with a zip signature (first bytes "
                f"{head!r}). Check that it is the competition's .zip, then download or copy it again."
            ) from e
        raise PaddyError(
            f"{zip_path} is not a complete zip archive ({e}): it starts like one but is cut short or damaged, "
            "probably by an interrupted download or copy. Delete it and download or copy it again."
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


def extract_zip(zip_path, dest, check=None):
    """Extract into a temp folder beside `dest`, then rename: `dest` is complete or as it was, never half-written.

    An archive that wraps everything in one top folder (a hand-made zip of the competition folder) is unwrapped.
    check(folder), when given, runs on the extracted folder before it replaces `dest`: an archive it refuses leaves
    the previous `dest` as it was. Returns what check returned.
    """
    check_zip(zip_path)
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=dest.parent, prefix=f".{dest.name}."))
    try:
        with zipfile.ZipFile(zip_path) as zf:
            zf.extractall(tmp)
        root = tmp
        entries = [p for p in tmp.iterdir() if p.name not in IGNORED]
        if len(entries) == 1 and entries[0].is_dir():
            root = entries[0]
        checked = _check_as_zip(check, root, zip_path)
        replace_dir(root, dest)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return checked


def _check_as_zip(check, folder, zip_path):
    """check(folder), its error messages naming paths inside the zip rather than the temporary folder."""
    if check is None:
        return None
    try:
        return check(folder)
    except PaddyError as e:
        raise PaddyError(str(e).replace(str(folder), str(zip_path))) from None
