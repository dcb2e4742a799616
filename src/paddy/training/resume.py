"""Checkpoints to resume an interrupted training run, kept where DVC does not delete them and keyed by everything
that made the run, so a changed setting, dataset or code never resumes a stale one.

DVC deletes a stage's outputs before it runs the stage again, so these live beside them, in the folder given to the
train stage (data/resume/<model>/<key>/<split>.pt, git-ignored, not a DVC output). A finished split keeps its
weights and metrics only, so a rerun after a kill restores it instead of training it again. The train stage removes
the folder once every split is done and the outputs are written.
"""

import dataclasses
import hashlib
import json
import shutil
import time
from pathlib import Path

import torch

from paddy.files import atomic_path, write_json
from paddy.training import distributed


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

    def save(self, progress, model, optimizer=None, scaler=None):
        """model: the plain model, never its DDP wrapper (whose keys start with `module.`). Rank 0 alone writes."""
        if not distributed.is_main():
            return
        state = {"progress": dataclasses.asdict(progress), "model": model.state_dict()}
        if optimizer is not None:
            state["optimizer"] = optimizer.state_dict()
        if scaler is not None:
            state["scaler"] = scaler.state_dict()
        with atomic_path(self.path) as tmp:
            torch.save(state, tmp)
        self.last = time.monotonic()

    def load(self, model, optimizer, scaler=None):
        """Restore the tensors into model, optimizer and scaler; the Progress, or None when there is nothing.
        Under DDP rank 0 reads the file and sends it to the others: they need not share its disk."""
        from paddy.training.loop import Progress

        device = next(model.parameters()).device
        if distributed.world_size() > 1:
            state = None
            if distributed.is_main() and self.path.exists():
                state = torch.load(self.path, map_location="cpu", weights_only=False)
            state = distributed.broadcast(state)
        else:
            state = torch.load(self.path, map_location=device, weights_only=False) if self.path.exists() else None
        if state is None:
            return None
        model.load_state_dict(state["model"])
        if "optimizer" in state:
            optimizer.load_state_dict(state["optimizer"])
        if scaler is not None and "scaler" in state:
            scaler.load_state_dict(state["scaler"])
        progress = Progress(**state["progress"])
        done = "optimizer" not in state
        note = f"{self.path}: {'finished earlier' if done else 'resumed'} at epoch {progress.epoch + 1 - done}"
        if not done:
            note += f", step {progress.step + 1}"
        if distributed.is_main():
            print(note, flush=True)
        progress.events.append(note)
        return progress
