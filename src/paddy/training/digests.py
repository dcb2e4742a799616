"""Checkpoint checksums: recorded when a checkpoint is written, checked whenever one is read (TTA, `paddy predict`,
a resumed run, `paddy kaggle pull`, and the check stage for the models params.yaml trains), so a damaged file (a
truncated copy, a full disk, a bad sector) is named with the command that rebuilds it, instead of a deserialising
traceback or a silent retraining.

A finished model folder (data/models/<model>) records each split's sha256 in its meta.json, written after the
weights; the train stage swaps the folder in whole, so the two always match. A resumable checkpoint (<split>.pt)
has a file beside it, <split>.pt.sha256, written before the checkpoint is renamed into place and holding the digests
it may have: the new one and the one it replaces, so a kill between the two writes leaves a pair that still agrees.
No torch here: the check stage imports this on every repro.
"""

import hashlib
import json
from pathlib import Path

from paddy.errors import PaddyError
from paddy.files import cache_dir, file_digest, write_text

KEY = "sha256"  # meta.json: {split: sha256 of <split>.safetensors}, and {<split>.<snapshot>: ...} of its snapshots
SNAPSHOTS = "snapshots"  # meta.json: {split: [snapshot names]} (train.snapshots), each <split>.<name>.safetensors


def record(ckpt_dir, split, weights, meta):
    """meta with `weights`' sha256 added under KEY for `split`, beside the earlier splits' that ckpt_dir/meta.json
    recorded (a model's splits are written one by one)."""
    return {**meta, KEY: {**recorded(ckpt_dir, KEY), split: file_digest(weights)}}


def recorded(ckpt_dir, key):
    """What ckpt_dir/meta.json records under `key` for the splits written so far ({} before the first)."""
    try:
        return json.loads((Path(ckpt_dir) / "meta.json").read_text()).get(key, {})
    except (OSError, ValueError, AttributeError):
        return {}


def members(meta, split):
    """The weights TTA averages for `split`, each the stem of a <stem>.safetensors of the model folder: its
    snapshots (train.snapshots, in the order taken), then its final weights."""
    return [f"{split}.{name}" for name in (meta.get(SNAPSHOTS) or {}).get(split, [])] + [split]


def rebuild(ckpt_dir, model):
    """What rebuilds a finished model folder."""
    return (
        f"`dvc checkout --force {ckpt_dir}` restores the one `dvc repro` last recorded, in seconds, if DVC's cache "
        f"holds it; otherwise `dvc repro -f train@{model}` trains it again"
    )


def problem(ckpt_dir, split, meta):
    """Why `split`'s weights in ckpt_dir cannot be used (missing, or not the file training wrote), or None. A
    checkpoint from before the digests were recorded is taken as it is (its file is read and checked by loading)."""
    path = Path(ckpt_dir) / f"{split}.safetensors"
    if not path.is_file():
        return f"{path} is missing, though {Path(ckpt_dir) / 'meta.json'} lists split {split}"
    expected = (meta.get(KEY) or {}).get(split)
    if expected is None:
        return None
    found = file_digest(path)
    if found != expected:
        return (
            f"{path} is damaged: its sha256 is {found[:12]}..., not the {expected[:12]}... training recorded in "
            f"meta.json when it wrote it ({path.stat().st_size:,} bytes now: a truncated copy, a full disk or a bad "
            "sector changed it since)"
        )
    return None


def read_meta(ckpt_dir):
    """A model folder's meta.json, or a PaddyError that says what rebuilds it."""
    path = Path(ckpt_dir) / "meta.json"
    try:
        meta = json.loads(path.read_text())
        if not isinstance(meta, dict) or "splits" not in meta:
            raise ValueError("no splits")
        return meta
    except FileNotFoundError:
        why = f"{path} is missing: {ckpt_dir} holds no complete trained model"
    except (OSError, ValueError) as e:
        why = f"{path} is damaged ({e})"
    raise PaddyError(f"{why}. {rebuild(ckpt_dir, Path(ckpt_dir).name)}.")


def verify(ckpt_dir, split, meta):
    """Raise a PaddyError naming the damaged or missing weights of `split` and what rebuilds them."""
    why = problem(ckpt_dir, split, meta)
    if why is not None:
        raise PaddyError(f"{why}. {rebuild(ckpt_dir, meta.get('model', Path(ckpt_dir).name))}.")


def verify_models(models_dir, names):
    """The check stage's look at the trained models params.yaml names (data/models/<name>), before DVC would retrain
    a damaged one without a word: every split against its recorded digest. Memoised on each file's size and time
    (PADDY_CACHE/verified), so an unchanged model costs a stat, not a read."""
    for name in names:
        ckpt_dir = Path(models_dir) / name
        if not ckpt_dir.is_dir() or not any(ckpt_dir.iterdir()):
            continue  # not trained yet
        meta = read_meta(ckpt_dir)
        for split in (m for s in meta["splits"] for m in members(meta, s)):
            path = ckpt_dir / f"{split}.safetensors"
            key = _stat_key(path, (meta.get(KEY) or {}).get(split))
            if key is not None and (cache_dir("verified") / key).exists():
                continue
            verify(ckpt_dir, split, meta)
            if key is not None:
                write_text(cache_dir("verified") / key, f"{path} matched its recorded sha256\n")


def _stat_key(path, digest):
    """A key for a file whose digest matched once: its path, size, time and the digest recorded for it."""
    if digest is None or not path.is_file():
        return None
    stat = path.stat()
    blob = json.dumps([str(path.resolve()), stat.st_size, stat.st_mtime_ns, digest])
    return hashlib.sha256(blob.encode()).hexdigest()[:24]


def sidecar(path):
    return Path(f"{path}.sha256")


def record_resume(tmp, path):
    """Before a resumable checkpoint written at `tmp` is renamed to `path`: its sidecar names its digest and the
    current file's, either of which `path` may hold until the rename."""
    old = ""
    if sidecar(path).is_file():
        old = sidecar(path).read_text().split("\n", 1)[0]
    write_text(sidecar(path), f"{file_digest(tmp)}\n{old}\n")


def resume_problem(path):
    """Why the resumable checkpoint at `path` cannot be trusted (no sidecar, or a digest it does not list), or None."""
    if not sidecar(path).is_file():
        return f"{path} has no {sidecar(path).name} beside it (written by an older paddy, or it was lost)"
    allowed = [d for d in sidecar(path).read_text().split() if d]
    found = file_digest(path)
    if found not in allowed:
        return f"{path} is damaged: its sha256 is {found[:12]}..., not the one recorded when it was written"
    return None
