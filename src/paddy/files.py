"""Files: atomic writes (a file is either the old one or the complete new one, never half-written), the cache
folder outside the repository, and the `dvc` command."""

import hashlib
import json
import os
import shutil
import signal
import subprocess
import tempfile
from concurrent.futures import ProcessPoolExecutor
from contextlib import contextmanager
from pathlib import Path

from paddy.errors import PaddyError


@contextmanager
def atomic_path(path):
    """Yield a temporary path beside `path`; rename it over `path` only if the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        yield Path(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def write_text(path, text):
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def write_json(path, obj):
    write_text(path, json.dumps(obj, indent=2, sort_keys=False) + "\n")


def write_csv(df, path, **kwargs):
    with atomic_path(path) as tmp:
        df.to_csv(tmp, index=False, **kwargs)


def replace_dir(src, dest):
    """Move folder `src` to `dest`, replacing the folder there: the old one is renamed aside first and removed last,
    so `dest` holds the old folder or the whole new one, never a mix (absent only between two renames)."""
    dest = Path(dest)
    old = dest.with_name(f".{dest.name}.old")
    shutil.rmtree(old, ignore_errors=True)
    if dest.exists():
        os.replace(dest, old)
    os.replace(src, dest)
    shutil.rmtree(old, ignore_errors=True)


@contextmanager
def built_beside(dest):
    """Yield a fresh folder beside `dest` (<dest>.partial) to write a stage's output folder into; once the block
    succeeds it replaces `dest` whole (replace_dir). An error, Ctrl-C or a kill leave `dest` as it was (dvc.yaml
    marks such outputs persist: DVC then leaves them in place while the stage runs)."""
    dest = Path(dest)
    partial = dest.with_name(f"{dest.name}.partial")
    shutil.rmtree(partial, ignore_errors=True)  # a killed run's
    partial.mkdir(parents=True)
    try:
        yield partial
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    replace_dir(partial, dest)


@contextmanager
def process_pool(workers):
    """A ProcessPoolExecutor whose workers ignore Ctrl-C and SIGTERM (a terminal or `dvc queue kill` signals every
    process: each would print its own traceback, or die under the pool) and whose queued jobs are dropped when the
    block fails or is interrupted, instead of run to the end first; the jobs under way finish."""
    pool = ProcessPoolExecutor(workers, initializer=_ignore_stops)
    try:
        yield pool
    except BaseException:
        pool.shutdown(wait=True, cancel_futures=True)
        raise
    pool.shutdown()


def _ignore_stops():
    for sig in (signal.SIGINT, signal.SIGTERM):  # the parent stops: it drops the queue and waits for these
        signal.signal(sig, signal.SIG_IGN)


def file_digest(path, algorithm="sha256"):
    """The hex digest of a file's bytes (hashlib's `algorithm`), read in blocks: a zip may be gigabytes."""
    digest = hashlib.new(algorithm)
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def cache_dir(*parts):
    """The cache folder (or `parts` below it): $PADDY_CACHE, else $XDG_CACHE_HOME/paddy, else ~/.cache/paddy. Item
    arrays, the model checks' passes, the Kaggle zip and the GPU locks live there, outside the repository."""
    if os.environ.get("PADDY_CACHE"):
        root = Path(os.environ["PADDY_CACHE"]).expanduser()
    else:
        root = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "paddy"
    return root.joinpath(*parts)


def run_dvc(*args):
    """`dvc ARGS` in the current folder; its standard output, or a PaddyError when dvc is missing or fails."""
    cmd = ["dvc", *args]
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, check=False)
    except FileNotFoundError:
        raise PaddyError("`dvc` is not on PATH: install the project (`pip install -e .`) and retry.") from None
    if out.returncode != 0:
        raise PaddyError(
            f"`{' '.join(cmd)}` failed: {out.stderr.strip()[:400]}. Run paddy from the repository root (a git repo "
            "with at least one commit and `dvc init` done)."
        )
    return out.stdout
