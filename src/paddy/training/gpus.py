"""Claim a GPU for this process, so `dvc queue start -j N` on an N-GPU machine trains one experiment per GPU.

DVC runs queued experiments side by side but does not assign devices. Each stage that uses a GPU claims one here:
an exclusive `flock` on a lock file per physical GPU, in a folder every process on the machine shares. The lock
lives with an open file descriptor, so the kernel drops it when the process ends, however it ends (kill -9
included); there is no stale lock to clean up. The pid and experiment written into the file are for humans only.

Per-machine settings (environment variables, not params.yaml: they change where and when a run happens, never its
results, and a params.yaml key under `train` would rerun training when changed):

- `CUDA_VISIBLE_DEVICES`: the GPUs torch sees are the only candidates.
- `PADDY_GPU_LOCK_DIR`: the shared lock folder (default `$XDG_CACHE_HOME/paddy/gpu-locks`, i.e.
  `~/.cache/paddy/gpu-locks`). Several users on one machine must point it at one folder they can all write.
- `PADDY_GPU_TIMEOUT`: seconds to wait for a free GPU (default: no limit; 0 fails at once).

When every GPU is taken the claim waits rather than doubling up: two trainings on one GPU risk running out of memory
and make timings and the memory profile meaningless, and falling back to the CPU would silently change precision and
speed. A queue with more workers than GPUs then simply runs as many at a time as there are GPUs.
"""

import fcntl
import os
import random
import socket
import sys
import time
from pathlib import Path

import torch

from paddy.errors import PaddyError
from paddy.files import cache_dir

LOCK_DIR_ENV = "PADDY_GPU_LOCK_DIR"
TIMEOUT_ENV = "PADDY_GPU_TIMEOUT"

# Open lock files. A flock belongs to the open file, which children forked meanwhile (DataLoader workers) share: the GPU
# is free again once every process holding it has exited or closed it.
_held = []


def visible_gpus(count=None, uuid_of=None):
    """Stable keys of the GPUs torch sees, in torch's order: the key of cuda:i is entry i.

    torch numbers GPUs from 0 within CUDA_VISIBLE_DEVICES, so the index alone would make two processes with
    different CUDA_VISIBLE_DEVICES collide or miss each other. The GPU's UUID names the physical device; without one,
    the CUDA_VISIBLE_DEVICES entry (or the index when it is unset) with the host name does. `count` and `uuid_of` fake
    the CUDA probe in tests.
    """
    if count is None:
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        uuid_of = uuid_of or _cuda_uuid
    uuid_of = uuid_of or (lambda i: None)
    visible = [v.strip() for v in os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",") if v.strip()]
    keys = []
    for i in range(count):
        uuid = uuid_of(i)
        physical = visible[i] if i < len(visible) else str(i)
        keys.append(f"GPU-{uuid}" if uuid else f"{socket.gethostname()}-{physical}")
    return keys


def _cuda_uuid(i):
    uuid = getattr(torch.cuda.get_device_properties(i), "uuid", None)  # absent on some builds (ROCm, old torch)
    return str(uuid).removeprefix("GPU-") if uuid else None


def lock_dir():
    return Path(os.environ.get(LOCK_DIR_ENV) or cache_dir("gpu-locks"))


def wait_timeout():
    value = os.environ.get(TIMEOUT_ENV, "").strip()
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        seconds = -1
    if seconds < 0:
        raise PaddyError(
            f"{TIMEOUT_ENV}={value!r} is not a number of seconds: unset it to wait for a free GPU as long as it takes, "
            "set 0 to fail at once when every GPU is busy, or a number of seconds to wait at most."
        )
    return seconds


def claim_device():
    """The device this process should use: a free GPU, claimed until the process exits, or the CPU without CUDA."""
    return claim_devices(1)[0]


def claim_devices(n=1, gpus=None, locks=None, timeout=None, poll_s=2.0, log_every_s=60.0):
    """Claim n GPUs together (all or none, so two jobs each holding half of what they need never wait on each other).

    gpus: the keys of the GPUs to choose from, as visible_gpus() gives them (the default probes torch, and makes the
    first claimed GPU the current CUDA device so nothing else lands on cuda:0). locks: the lock folder (default
    lock_dir()). timeout: seconds to wait when every GPU is busy (default wait_timeout(); None waits forever).
    """
    probed = gpus is None
    gpus = visible_gpus() if probed else list(gpus)
    if not gpus:
        return [torch.device("cpu")] * n
    if n > len(gpus):
        raise PaddyError(
            f"{n} GPUs asked for but this process sees {len(gpus)} (CUDA_VISIBLE_DEVICES="
            f"{os.environ.get('CUDA_VISIBLE_DEVICES', 'unset')}): ask for fewer, or make more GPUs visible."
        )
    locks = Path(locks) if locks is not None else lock_dir()
    timeout = wait_timeout() if timeout is None else timeout
    locks.mkdir(parents=True, exist_ok=True)
    start, last_log = time.monotonic(), None
    while True:
        indices = _try_claim(gpus, n, locks)
        if indices:
            break
        waited = time.monotonic() - start
        busy = "; ".join(f"cuda:{i}: {_holder(locks, key)}" for i, key in enumerate(gpus))
        if timeout is not None and waited >= timeout:
            raise PaddyError(
                f"No free GPU after {waited:.0f} s: all {len(gpus)} visible GPUs are claimed ({busy}). Wait for one "
                f"of those runs, raise or unset {TIMEOUT_ENV} to wait longer, or check the locks in {locks}."
            )
        if last_log is None or time.monotonic() - last_log >= log_every_s:
            print(f"waiting for {n} free GPU(s), {waited:.0f} s so far: {busy}", file=sys.stderr, flush=True)
            last_log = time.monotonic()
        time.sleep(poll_s * random.uniform(0.5, 1.5))  # jitter: two all-or-none claims do not retry in lockstep
    devices = [torch.device("cuda", i) for i in indices]
    if probed:
        torch.cuda.set_device(devices[0])
    print(f"claimed {', '.join(f'{d} ({gpus[d.index]})' for d in devices)}; locks in {locks}", file=sys.stderr)
    return devices


def release_devices():
    """Free every GPU this process claimed (exiting does the same)."""
    while _held:
        _held.pop().close()


def _try_claim(gpus, n, locks):
    taken = []
    for i, key in enumerate(gpus):
        f = _open_lock(locks / f"{key}.lock")
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            f.close()
            continue
        taken.append((i, f))
        if len(taken) == n:
            break
    if len(taken) < n:
        for _, f in taken:
            f.close()
        return []
    for _, f in taken:
        _held.append(f)
        try:
            f.truncate(0)
            f.write(_whoami() + "\n")
            f.flush()
        except OSError:
            pass  # another user's lock file, opened read-only: the note is for humans, the flock is what counts
    return [i for i, _ in taken]


def _open_lock(path):
    # Lock files are never deleted: removing one while another process waits on it would let two hold "the" lock.
    try:
        return open(path, "a+")
    except PermissionError:
        return open(path)  # flock needs no write access


def _whoami():
    exp = os.environ.get("DVC_EXP_NAME") or "-"
    stage = os.environ.get("DVC_STAGE") or " ".join(sys.argv[:2])
    return f"pid {os.getpid()} on {socket.gethostname()}, experiment {exp}, {stage}, since {time.strftime('%H:%M:%S')}"


def _holder(locks, key):
    try:
        return (locks / f"{key}.lock").read_text().strip() or "a process starting up"
    except OSError as e:
        return f"lock file unreadable ({e.strerror})"
