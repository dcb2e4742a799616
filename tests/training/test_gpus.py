"""The GPU claim, on a CPU with a faked GPU count: one process per GPU, a dead holder's GPU free again at once."""

import os
import signal
import subprocess
import sys
import threading
import time

import pytest
import torch
from helpers.pipeline import ROOT

from paddy.errors import PaddyError
from paddy.training.gpus import claim_device, claim_devices, release_devices, visible_gpus

HOLD = """
import sys, time
from paddy.training.gpus import claim_devices
device, = claim_devices(1, gpus=sys.argv[1].split(","), locks=sys.argv[2])
print(device, flush=True)
time.sleep(600)
"""


@pytest.fixture(autouse=True)
def release():
    yield
    release_devices()


@pytest.fixture
def holder(tmp_path):
    """Start a process that claims one of the given GPUs and holds it; yields (process, its device)."""
    procs = []

    def start(gpus, locks):
        env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT / "src"), os.environ.get("PYTHONPATH", "")]))
        proc = subprocess.Popen(
            [sys.executable, "-c", HOLD, ",".join(gpus), str(locks)], stdout=subprocess.PIPE, text=True, env=env
        )
        procs.append(proc)
        return proc, proc.stdout.readline().strip()

    yield start
    for proc in procs:
        proc.kill()
        proc.wait()


def test_two_claims_get_two_gpus_and_a_third_waits_then_fails_at_its_timeout(tmp_path):
    gpus = visible_gpus(count=2)
    first = claim_devices(1, gpus=gpus, locks=tmp_path)
    second = claim_devices(1, gpus=gpus, locks=tmp_path)
    assert {str(first[0]), str(second[0])} == {"cuda:0", "cuda:1"}
    start = time.monotonic()
    with pytest.raises(PaddyError, match=f"No free GPU.*all 2 visible GPUs are claimed.*pid {os.getpid()}"):
        claim_devices(1, gpus=gpus, locks=tmp_path, timeout=0.5, poll_s=0.05)
    assert time.monotonic() - start >= 0.5


def test_a_gpu_killed_with_sigkill_is_free_again_and_a_waiting_claim_gets_it(tmp_path, holder):
    gpus = ["GPU-a", "GPU-b"]
    proc, held = holder(gpus, tmp_path)
    assert held == "cuda:0"
    assert claim_devices(1, gpus=gpus, locks=tmp_path) == [torch.device("cuda", 1)]
    assert f"pid {proc.pid}" in (tmp_path / "GPU-a.lock").read_text()  # who holds it, for humans

    got = []
    waiter = threading.Thread(target=lambda: got.extend(claim_devices(1, gpus=gpus, locks=tmp_path, poll_s=0.05)))
    waiter.start()
    time.sleep(0.5)
    assert waiter.is_alive() and not got, "the third claim must wait while both GPUs are held"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    waiter.join(timeout=30)
    assert got == [torch.device("cuda", 0)]


def test_claims_are_all_or_none(tmp_path):
    gpus = ["GPU-a", "GPU-b", "GPU-c"]
    claim_devices(1, gpus=gpus, locks=tmp_path)
    assert claim_devices(2, gpus=gpus, locks=tmp_path) == [torch.device("cuda", 1), torch.device("cuda", 2)]
    release_devices()
    claim_devices(1, gpus=gpus[:1], locks=tmp_path)
    claim_devices(1, gpus=gpus[1:2], locks=tmp_path)  # GPU-a and GPU-b held: one GPU is free but two are asked for
    with pytest.raises(PaddyError, match="No free GPU"):
        claim_devices(2, gpus=gpus, locks=tmp_path, timeout=0)
    assert claim_devices(1, gpus=gpus, locks=tmp_path) == [torch.device("cuda", 2)], "the failed claim kept a GPU"
    with pytest.raises(PaddyError, match="3 GPUs asked for but this process sees 2"):
        claim_devices(3, gpus=gpus[:2], locks=tmp_path)


def test_cuda_visible_devices_limits_the_candidates_and_keys_the_physical_gpu(tmp_path, monkeypatch):
    # Physical GPU 1 seen alone: torch calls it cuda:0, and its lock must be GPU 1's, not GPU 0's.
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "1")
    only_one = visible_gpus(count=1)
    assert claim_devices(1, gpus=only_one, locks=tmp_path) == [torch.device("cuda", 0)]
    with pytest.raises(PaddyError, match="all 1 visible GPUs are claimed"):
        claim_devices(1, gpus=only_one, locks=tmp_path, timeout=0)
    # A process that sees both GPUs gets physical GPU 0, the free one.
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES")
    both = visible_gpus(count=2)
    assert claim_devices(1, gpus=both, locks=tmp_path) == [torch.device("cuda", 0)]
    with pytest.raises(PaddyError, match="No free GPU"):
        claim_devices(1, gpus=both, locks=tmp_path, timeout=0)
    # UUIDs name the physical GPU whatever CUDA_VISIBLE_DEVICES says.
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3,2")
    assert visible_gpus(count=2, uuid_of=lambda i: ["d3", "c2"][i]) == ["GPU-d3", "GPU-c2"]


def test_without_cuda_the_device_is_the_cpu_and_nothing_is_locked(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setenv("PADDY_GPU_LOCK_DIR", str(tmp_path / "locks"))
    assert claim_device() == torch.device("cpu")
    assert not (tmp_path / "locks").exists()


def test_lock_folder_and_timeout_come_from_the_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("PADDY_GPU_LOCK_DIR", str(tmp_path / "shared"))
    monkeypatch.setenv("PADDY_GPU_TIMEOUT", "0")
    claim_devices(1, gpus=["GPU-a"])
    assert (tmp_path / "shared" / "GPU-a.lock").exists()
    with pytest.raises(PaddyError, match="No free GPU after 0 s"):
        claim_devices(1, gpus=["GPU-a"])
    monkeypatch.setenv("PADDY_GPU_TIMEOUT", "soon")
    with pytest.raises(PaddyError, match="PADDY_GPU_TIMEOUT='soon' is not a number of seconds"):
        claim_devices(1, gpus=["GPU-a"])


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_a_real_gpu_is_claimed_by_its_uuid_and_made_current(tmp_path, monkeypatch):
    monkeypatch.setenv("PADDY_GPU_LOCK_DIR", str(tmp_path))
    device = claim_device()
    assert device.type == "cuda" and torch.cuda.current_device() == device.index
    uuid = str(torch.cuda.get_device_properties(device).uuid).removeprefix("GPU-")
    assert (tmp_path / f"GPU-{uuid}.lock").exists()
