"""A model's checkpoints: the finished one per fold/bag (safetensors weights plus meta.json, what rebuilds the
model) and the resumable one of a run in progress.

DVC deletes a stage's outputs before it runs the stage again, so the resumable checkpoints live beside them, in the
folder given to the train stage (data/resume/<model>/<key>/<split>.pt, git-ignored, not a DVC output), keyed by
everything that made the run, so a changed setting, dataset or code never resumes a stale one. A finished split
keeps its weights and metrics only, so a rerun after a kill restores it instead of training it again. The train
stage removes the folder once every split is done and the outputs are written.
"""

import dataclasses
import hashlib
import json
import pickle
import shutil
import time
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from paddy.errors import PaddyError
from paddy.files import atomic_path, file_digest, write_json
from paddy.settings import ModelSettings
from paddy.training import digests, distributed
from paddy.training.models import create_model, input_normalization


def save_checkpoint(model, meta, out_dir, split, snapshots=None):
    """split's final weights into out_dir, and its snapshots ({name: (path, sha256)}, Snapshots.files: train.snapshots'
    members, checked against the digests taken when they were written, copied from the resume folder); meta.json
    records every file's sha256 and, under `snapshots`, each split's snapshot names (paddy.training.digests.members)."""
    out_dir = Path(out_dir)
    found = {}
    for name, (path, digest) in (snapshots or {}).items():
        found[name] = _copy_snapshot(path, out_dir / f"{split}.{name}.safetensors", digest)
    _write_weights(model, out_dir / f"{split}.safetensors")
    # its sha256, checked whenever it is read (paddy.training.digests)
    meta = digests.record(out_dir, split, out_dir / f"{split}.safetensors", meta)
    if found:
        earlier = digests.recorded(out_dir, digests.SNAPSHOTS)
        meta[digests.KEY].update({f"{split}.{name}": digest for name, digest in found.items()})
        meta[digests.SNAPSHOTS] = {**earlier, split: list(found)}
    write_json(out_dir / "meta.json", meta)


def _write_weights(model, path):
    # safetensors refuses non-contiguous tensors, and channels_last weights are not contiguous in its sense
    state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    with atomic_path(path) as tmp:
        save_file(state, str(tmp))


def _copy_snapshot(source, target, digest):
    """A snapshot taken during training, into the model folder, if it is the file that was written; its digest."""
    found = file_digest(source) if Path(source).is_file() else None
    if found != digest:
        raise PaddyError(
            f"{source} is {'missing' if found is None else 'damaged'}: the snapshot ensemble's member written at the "
            f"end of its cycle is not there as written. Delete {Path(source).parent} (the run's resume folder) and "
            "train again: the run starts over."
        )
    if Path(source) != Path(target):
        with atomic_path(target) as tmp:
            shutil.copyfile(source, tmp)
    return digest


def read_meta(ckpt_dir):
    """A model folder's meta.json; a PaddyError saying what rebuilds it when it is missing or damaged."""
    return digests.read_meta(ckpt_dir)


def model_settings(meta):
    """The ModelSettings a checkpoint's model was trained with, from its meta.json (sizes as (height, width))."""
    sizes = {k: _pair(meta[k]) for k in ("size", "item_size")}
    return ModelSettings(
        name=meta["model"],
        arch=meta["arch"],
        pretrained=False,
        head=meta["head"],
        targets=tuple(meta["targets"]),
        item_method=meta["item_method"],
        micro_batch=meta["micro_batch"],
        weight=0,
        **sizes,
    )


def _pair(size):
    return tuple(size) if isinstance(size, list) else (size, size)


def checkpoint_normalization(meta):
    """The input normalisation the checkpoint's model was trained with. Checkpoints from before it was recorded
    were always normalised with the architecture's mean/std."""
    if "normalization" in meta:
        return meta["normalization"]
    return input_normalization(meta["arch"], True)


def load_checkpoint(ckpt_dir, split, device="cpu"):
    """Rebuild the model from meta.json (no pretrained download: the weights are ours) and load split's weights,
    checked against the sha256 recorded when they were written."""
    meta = read_meta(ckpt_dir)
    digests.verify(ckpt_dir, split, meta)
    outputs = sum(len(classes) for classes in meta["targets"].values())
    # at the size it was trained (last) at: a fixed-size model's position embeddings have that shape
    model = create_model(meta["arch"], outputs, pretrained=False, head=meta["head"], size=_pair(meta["size"]))
    path = Path(ckpt_dir) / f"{split}.safetensors"
    try:
        state = load_file(str(path), device=str(device))
    except (SafetensorError, OSError) as e:  # a checkpoint from before the digests, damaged
        raise PaddyError(f"{path} is damaged ({e}). {digests.rebuild(ckpt_dir, meta['model'])}.") from None
    model.load_state_dict(state)
    return model.to(device).eval(), meta


@dataclasses.dataclass
class Progress:
    """Where a run stands, besides its tensors: what a resume needs and what the logs show."""

    micro_batch: int  # halved on an out-of-memory error, then kept
    epoch: int = 0  # the next epoch to run, frozen ones included
    step: int = 0  # the next optimizer step of that epoch
    loss_sum: float = 0.0  # this epoch's summed training loss so far
    seen: int = 0  # and its samples
    skipped: int = 0  # and its optimizer steps that fp16's grad scaler skipped (a gradient overflowed)
    seconds: float = 0.0  # this epoch's training time so far
    history: list = dataclasses.field(default_factory=list)  # every finished epoch's metrics
    events: list = dataclasses.field(default_factory=list)  # out-of-memory fallbacks, resumes
    snapshots: dict = dataclasses.field(default_factory=dict)  # train.snapshots taken so far: name -> sha256


class Snapshots:
    """One split's snapshot ensemble (train.snapshots): the weights at the end of each of recipe sgdr's cycles but
    the last, each written as <split>.<name>.safetensors into `folder` when it is taken: the run's resume folder,
    so that a run resumed after a kill keeps those taken before it (save_checkpoint copies them into the model
    folder once the split is done), or the model folder itself when nothing resumes. The resumable checkpoint's
    Progress records each one's sha256."""

    def __init__(self, folder, split):
        self.folder, self.split = Path(folder), split

    def take(self, name, model, progress):
        """Write the model's weights as snapshot `name` (rank 0) and record it in `progress`."""
        if distributed.is_main():
            path = self.folder / f"{self.split}.{name}.safetensors"
            _write_weights(model, path)
            progress.snapshots[name] = file_digest(path)

    def files(self, progress):
        """{name: (path, sha256 recorded when it was written)} of those `progress` took, in the order taken."""
        return {name: (self.folder / f"{self.split}.{name}.safetensors", d) for name, d in progress.snapshots.items()}


def run_key(settings):
    """A short hash of the settings (JSON-serialisable) and of the paddy source code that trains with them."""
    code = hashlib.sha256()
    for path in sorted(Path(__file__).parents[1].rglob("*.py")):
        code.update(path.read_bytes())
    blob = json.dumps(settings, sort_keys=True, default=str) + code.hexdigest()
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def run_dir(resume_dir, settings):
    """The folder of this run's checkpoints; other runs' folders of the same model are stale and removed."""
    root, key = Path(resume_dir), run_key(settings)
    if root.exists():
        for other in root.iterdir():
            if other.name != key:
                shutil.rmtree(other, ignore_errors=True)
    write_json(root / key / "settings.json", settings)
    return root / key


class Checkpoint:
    """One split's checkpoint file: saved atomically after every epoch and every `minutes` within one."""

    def __init__(self, path, minutes):
        self.path, self.interval = Path(path), minutes * 60
        self.last = time.monotonic()

    def due(self):
        return time.monotonic() - self.last >= self.interval

    def save(self, progress, model, optimizer=None, scaler=None, ema=None, average=None):
        """model: the plain model, never its DDP wrapper (whose keys start with `module.`). Rank 0 alone writes.
        ema: the weights' moving average (timm's ModelEmaV3, train.ema), its copy of the weights. average:
        train.swa_epochs' paddy.training.swa.WeightAverage, whose state is kept once it has one."""
        if not distributed.is_main():
            return
        state = {"progress": dataclasses.asdict(progress), "model": model.state_dict()}
        if optimizer is not None:
            state["optimizer"] = optimizer.state_dict()
        if scaler is not None:
            state["scaler"] = scaler.state_dict()
        if ema is not None:
            state["ema"] = ema.module.state_dict()
        if average is not None and average.started:
            state["average"] = average.state_dict()
        with atomic_path(self.path) as tmp:
            torch.save(state, tmp)
            digests.record_resume(tmp, self.path)  # checked by load
        self.last = time.monotonic()

    def load(self, model, optimizer, scaler=None, ema=None, average=None, before=None):
        """Restore the tensors into model, optimizer, scaler, ema and average (the weight average, as save's); the
        Progress, or None when there is nothing. A finished split's checkpoint holds its final weights only (the
        average's, with an ema): the ema takes them. before(progress), where given, runs first: it puts the model
        (and the ema's) in the shape the saved tensors have (progressive resizing's stage). Under DDP rank 0 reads
        the file and sends it to the others: they need not share its disk."""
        device = next(model.parameters()).device
        if distributed.world_size() > 1:
            state = self._read("cpu") if distributed.is_main() else None
            state = distributed.broadcast(state)
        else:
            state = self._read(device)
        if state is None:
            return None
        progress = Progress(**state["progress"])
        if before is not None:
            before(progress)
        model.load_state_dict(state["model"])
        if "optimizer" in state:
            optimizer.load_state_dict(state["optimizer"])
        if scaler is not None and "scaler" in state:
            scaler.load_state_dict(state["scaler"])
        if ema is not None and "ema" in state:
            ema.module.load_state_dict(state["ema"])
        elif ema is not None:
            ema.set(model)
        if average is not None and "average" in state:
            average.load_state_dict(state["average"])
        done = "optimizer" not in state
        note = f"{self.path}: {'finished earlier' if done else 'resumed'} at epoch {progress.epoch + 1 - done}"
        if not done:
            note += f", step {progress.step + 1}"
        if distributed.is_main():
            print(note, flush=True)
        progress.events.append(note)
        return progress

    def _read(self, device):
        """The saved state, or None: no checkpoint, or a damaged one (said, and removed: the split starts over)."""
        if not self.path.exists():
            return None
        why = digests.resume_problem(self.path)
        if why is None:
            try:
                return torch.load(self.path, map_location=device, weights_only=False)
            except (RuntimeError, OSError, EOFError, pickle.UnpicklingError) as e:
                why = f"{self.path} cannot be read ({str(e).splitlines()[0][:160]})"
        print(f"{why}: it is left out, and this split trains from its start.", flush=True)
        self.path.unlink(missing_ok=True)
        digests.sidecar(self.path).unlink(missing_ok=True)
        return None
