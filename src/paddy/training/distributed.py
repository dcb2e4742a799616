"""One model on several processes: PyTorch's DistributedDataParallel, launched by torchrun (docs/scale.md).

`train.devices: N` (N > 1) makes the train stage start itself again under `python -m torch.distributed.run` with N
processes on this machine (relaunch); each process (a rank) trains the same model on its share of every optimizer
step's batch, and DDP averages the gradients. Rank 0 alone validates, logs and writes checkpoints and outputs.

Per-machine settings are environment variables, not params (they say where a run happens, not what it computes):

- `PADDY_TORCHRUN_ARGS`: torchrun's rendezvous flags for several machines, e.g. `--nnodes 2 --node-rank 0
  --rdzv-backend c10d --rdzv-endpoint host0:29400 --rdzv-id paddy`. Unset: `--standalone` (one machine).
"""

import contextlib
import datetime
import os
import shlex
import signal
import subprocess
import sys

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel

from paddy.errors import PaddyError
from paddy.training.gpus import claim_devices, visible_gpus

ARGS_ENV = "PADDY_TORCHRUN_ARGS"
# Set by relaunch once it holds the GPUs for every rank: the ranks must not claim them again (a second flock on a
# GPU the launcher holds would wait forever).
CLAIMED_ENV = "PADDY_GPUS_CLAIMED"
# Rank 0 validates while the others wait at a barrier: longer than the default 10 minutes on a large validation set.
TIMEOUT = datetime.timedelta(minutes=60)

_state = {"control": None}


def wanted(devices):
    """Whether the train stage runs under torchrun: several devices here, or rendezvous flags for several machines
    (one device each is several processes too)."""
    return devices > 1 or bool(os.environ.get(ARGS_ENV, "").strip())


def launched():
    """True in a process torchrun started."""
    return "LOCAL_RANK" in os.environ and "WORLD_SIZE" in os.environ


def torchrun_command(devices, argv, extra=None):
    """The command that runs `argv` (a script and its arguments) as `devices` processes on this machine."""
    extra = shlex.split(os.environ.get(ARGS_ENV, "")) if extra is None else list(extra)
    return [sys.executable, "-m", "torch.distributed.run", *(extra or ["--standalone"]), "--nproc_per_node",
            str(devices), *argv]  # fmt: skip


def relaunch(devices, argv):
    """Run `argv` under torchrun with `devices` processes and return its exit status.

    On CUDA this process claims the `devices` GPUs first, all or none (paddy.training.gpus), and holds them while the
    ranks
    run: torchrun's children see only those GPUs (CUDA_VISIBLE_DEVICES) and rank i uses the i-th. SIGTERM and SIGINT
    are passed on to torchrun, which passes them to every rank; the ranks stop together at a step boundary after
    rank 0 writes a checkpoint.
    """
    env = dict(os.environ)
    keys = visible_gpus()
    if keys:
        indices = [d.index for d in claim_devices(devices, gpus=keys)]
        listed = [v.strip() for v in os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",") if v.strip()]
        env["CUDA_VISIBLE_DEVICES"] = ",".join(listed[i] if i < len(listed) else str(i) for i in indices)
        env[CLAIMED_ENV] = "1"
    cmd = torchrun_command(devices, argv)
    print(f"train.devices={devices}: {shlex.join(cmd)}", file=sys.stderr, flush=True)
    proc, received = subprocess.Popen(cmd, env=env), []

    def forward(signum, frame):
        received.append(signum)
        proc.send_signal(signum)

    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, forward)
    status = proc.wait()
    return 130 if received and status != 0 else status  # stopped as one process would be (torchrun says 1)


def rank_device():
    """This rank's device: the GPU numbered LOCAL_RANK among those it sees (claimed here unless the launcher holds
    it), or the CPU without CUDA."""
    local = int(os.environ["LOCAL_RANK"])
    if not torch.cuda.is_available():
        return torch.device("cpu")
    keys = visible_gpus()
    if local >= len(keys):
        raise PaddyError(
            f"Rank with LOCAL_RANK={local} sees {len(keys)} GPUs (CUDA_VISIBLE_DEVICES="
            f"{os.environ.get('CUDA_VISIBLE_DEVICES', 'unset')}): start at most {len(keys)} processes per machine "
            "(train.devices, or torchrun's --nproc_per_node)."
        )
    if os.environ.get(CLAIMED_ENV) != "1":  # started by a torchrun of the user's: claim this rank's GPU itself
        claim_devices(1, gpus=[keys[local]])
    device = torch.device("cuda", local)
    torch.cuda.set_device(device)
    return device


def init(device):
    """Join the process group: NCCL on CUDA, gloo on the CPU. Control messages (stop flags, barriers, the resumed
    state) go over gloo in both cases, so they never wait on the GPU's queue."""
    if not launched() or dist.is_initialized():
        return
    backend = "nccl" if device.type == "cuda" else "gloo"
    dist.init_process_group(backend, timeout=TIMEOUT)
    _state["control"] = dist.new_group(backend="gloo", timeout=TIMEOUT) if backend == "nccl" else dist.group.WORLD


def cleanup():
    if dist.is_initialized():
        dist.destroy_process_group()
    _state["control"] = None


def world_size():
    return dist.get_world_size() if dist.is_initialized() else 1


def local_world_size():
    """Processes of this run on this machine."""
    return int(os.environ.get("LOCAL_WORLD_SIZE", 1)) if dist.is_initialized() else 1


def rank():
    return dist.get_rank() if dist.is_initialized() else 0


def is_main():
    return rank() == 0


def wrap(model):
    """The model under DDP (or itself, alone). Wrap again after changing which parameters require gradients: DDP
    registers only those that do when it is built. Drop the old wrapper (assign the new one over it): its gradient
    hooks go with it (tests/training/test_ddp.py checks that it reduces nothing more)."""
    if world_size() == 1:
        return model
    device = next(model.parameters()).device
    return DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)


def unwrap(model):
    return model.module if isinstance(model, DistributedDataParallel) else model


def no_sync(model):
    """A context factory for micro-batches whose gradients stay local (all but a step's last), or None alone."""
    return model.no_sync if isinstance(model, DistributedDataParallel) else None


def all_reduce_sum(tensor):
    """The sum over ranks (in place); the tensor itself alone."""
    if world_size() > 1:
        dist.all_reduce(tensor)
    return tensor


def any_rank(flag):
    """True on every rank when `flag` is true on any: ranks agree to stop at the same step."""
    if world_size() == 1:
        return bool(flag)
    t = torch.tensor([1 if flag else 0])
    dist.all_reduce(t, op=dist.ReduceOp.MAX, group=_state["control"])
    return bool(t.item())


def barrier():
    if world_size() > 1:
        dist.barrier(group=_state["control"])


def broadcast(obj):
    """Rank 0's `obj` on every rank (pickled: keep tensors on the CPU)."""
    if world_size() == 1:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0, group=_state["control"])
    return box[0]


@contextlib.contextmanager
def process_group(device):
    """init .. cleanup around the body, when launched by torchrun."""
    init(device)
    try:
        yield
    finally:
        cleanup()
