"""What the check stage verifies beyond params.yaml's own values, and what lets it run on every repro cheaply.

The check stage is always_changed (dvc.yaml says why): its verdict depends on the machine (how many GPUs or cores
`train.devices` may claim) and on files DVC does not track, so a cached verdict is no check. The slow part, the
model checks (timm, seconds to import), reruns only when something it reads changed: `model_checks_key`.
"""

import dataclasses
import hashlib
import json
import os
from importlib import metadata
from pathlib import Path

from paddy.errors import PaddyError
from paddy.files import cache_dir, write_text


def usable_cores():
    """The cores this process may run on (a container's or taskset's share, not the machine's count)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def check_devices(devices, path="params.yaml"):
    """Refuse `train.devices` above what this machine has: its CUDA devices (those CUDA_VISIBLE_DEVICES lets it
    see), or without CUDA its usable cores, since DDP then runs one gloo process per device."""
    if devices <= 1:
        return  # one process: the CPU, or one GPU, is always there
    import torch  # here: seconds to import, and needed only for several devices

    if torch.cuda.is_available():
        found = torch.cuda.device_count()
        visible = os.environ.get("CUDA_VISIBLE_DEVICES")
        what = f"{found} CUDA device(s)" + (f" (CUDA_VISIBLE_DEVICES={visible!r})" if visible is not None else "")
    else:
        found = usable_cores()
        what = f"no CUDA device, and {found} usable CPU core(s) for its gloo processes (one per device)"
    if devices > found:
        raise PaddyError(
            f"`train.devices` in {path} is {devices}, but this machine has {what}. Set train.devices to at most "
            f"{found} (1 trains in one process), or run on a machine with more (docs/scale.md)."
        )


def model_checks_key(settings):
    """A hash of what the model checks' verdict depends on: every setting, paddy's code, timm's and torch's
    versions, and each pretrained weights file's size and time. None, to check every time, when a model takes timm's
    own weights (`pretrained: true`: whether the hub's cache still holds them, or the hub is reachable, is the
    machine's state) or names a weights file that is not there (for the check to say so)."""
    weights = []
    for model in settings.models.values():
        if model.pretrained is True:
            return None
        if isinstance(model.pretrained, str):
            file = Path(model.pretrained).expanduser()
            if not file.is_file():
                return None
            weights.append([str(file), file.stat().st_size, file.stat().st_mtime_ns])
    digest = hashlib.sha256(json.dumps([dataclasses.asdict(settings), weights], sort_keys=True, default=str).encode())
    for package in ("timm", "torch"):
        digest.update(metadata.version(package).encode())
    for file in sorted(Path(__file__).parents[1].rglob("*.py")):
        digest.update(file.read_bytes())
    return digest.hexdigest()[:24]


def _marker(key):
    return cache_dir() / "checks" / key


def passed_before(key):
    """Whether model checks with this key passed on this machine before (PADDY_CACHE/checks/<key>)."""
    return key is not None and _marker(key).exists()


def record_pass(key):
    if key is not None:
        write_text(_marker(key), "the model checks passed with these settings, code and packages\n")
