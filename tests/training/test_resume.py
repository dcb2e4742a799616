"""Never lose a run: a real train@MODEL process killed with SIGKILL (or stopped with SIGTERM) continues from its
checkpoint to exactly the weights, metrics and learning curves of an uninterrupted run; finished folds are not
trained again; a changed setting never resumes a stale run; out of memory halves the micro-batch and goes on."""

import json
import os
import signal
import subprocess
import sys
import time

import pandas as pd
import pytest
import torch
import yaml
from helpers.data import prepared_work
from helpers.pipeline import ROOT
from helpers.settings import shrunk_params
from helpers.training import train

from paddy.errors import PaddyError
from paddy.settings import parse_settings
from paddy.training.checkpoints import run_key

CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def workspace(competition, tmp_path_factory):
    """A prepared competition, two bags, and params for a 1 frozen + 2 unfrozen epoch run of 3 steps an epoch."""
    work = tmp_path_factory.mktemp("resume")
    prepared_work(competition, work, n_splits=2)
    params = shrunk_params()
    params["train"].update(epochs=2, frozen_epochs=1, lr_mult=10, eval_batch=32)
    params["train"]["checkpoint_minutes"] = 1e-9  # a checkpoint after every step: kills land anywhere
    params["models"] = {"resnet": params["models"]["resnet"]}
    (work / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    return work


def train_command(work, run):
    return [
        sys.executable, str(ROOT / "stages" / "train.py"), "resnet", str(work / "prepared"), str(work / "split.csv"),
        str(work / run / "models"), str(work / run / "live"), "--resume-dir", str(work / run / "resume"),
    ]  # fmt: skip


def run_to_end(work, run):
    out = subprocess.run(train_command(work, run), cwd=work, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
    return out.stdout + out.stderr


def outcome(work, run):
    """The weights of every split, the final metrics, and the learning curves' values (not their timestamps)."""
    weights = {p.name: p.read_bytes() for p in sorted((work / run / "models").glob("*.safetensors"))}
    metrics = json.loads((work / run / "live" / "metrics.json").read_text())
    timing = ("time", "images_per_s", "timestamp")
    metrics = {k: v for k, v in metrics.items() if not any(t in k for t in timing)}
    curves = {}
    for tsv in sorted((work / run / "live" / "plots" / "metrics").rglob("*.tsv")):
        if not any(t in tsv.name for t in timing):
            curves[str(tsv.relative_to(work / run))] = pd.read_csv(tsv, sep="\t").drop(
                columns="timestamp", errors="ignore"
            )
    return weights, metrics, curves


@pytest.fixture(scope="module")
def reference(workspace):
    run_to_end(workspace, "reference")
    assert not (workspace / "reference" / "resume").exists()  # removed once every split is written
    return outcome(workspace, "reference")


def same(a, b):
    (wa, ma, ca), (wb, mb, cb) = a, b
    assert wa.keys() == wb.keys() and all(wa[k] == wb[k] for k in wa)  # byte for byte
    assert ma == mb
    assert ca.keys() == cb.keys() and all(ca[k].equals(cb[k]) for k in ca)


@pytest.mark.parametrize("kill_after", ["v0.pt", "v1.pt"])
def test_killed_run_resumes_to_the_uninterrupted_result(workspace, reference, kill_after):
    """SIGKILL as soon as split 0 (or split 1) has a checkpoint: anywhere in an epoch, a phase or a fold."""
    run = f"killed_{kill_after[:2]}"
    proc = subprocess.Popen(
        train_command(workspace, run), cwd=workspace, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    deadline = time.time() + 300
    while not list((workspace / run / "resume").glob(f"*/{kill_after}")) and time.time() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL
    log = run_to_end(workspace, run)
    assert "resumed at epoch" in log
    if kill_after == "v1.pt":
        assert "v0.pt: finished earlier" in log  # the finished fold is restored, not trained again
    same(outcome(workspace, run), reference)


def test_sigterm_stops_cleanly_and_says_how_to_resume(workspace, reference):
    run = "terminated"
    proc = subprocess.Popen(
        train_command(workspace, run), cwd=workspace, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    deadline = time.time() + 300
    while not list((workspace / run / "resume").glob("*/v0.pt")) and time.time() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err[-2000:]
    assert "SIGTERM" in err and "dvc repro train@resnet" in err and "Traceback" not in err
    run_to_end(workspace, run)
    same(outcome(workspace, run), reference)


def test_a_changed_setting_never_resumes_a_stale_run(workspace, tmp_path):
    params = yaml.safe_load((workspace / "params.yaml").read_text())
    settings = {"train": params["train"], "model": params["models"]["resnet"]}
    changed = {"train": dict(params["train"], lr=0.02), "model": params["models"]["resnet"]}
    assert run_key(settings) != run_key(changed) and run_key(settings) == run_key(json.loads(json.dumps(settings)))
    from paddy.training.checkpoints import run_dir

    old = run_dir(tmp_path, settings)
    (old / "v0.pt").write_bytes(b"a checkpoint of the old settings")
    new = run_dir(tmp_path, changed)
    assert new != old and not old.exists() and not (new / "v0.pt").exists()


def test_out_of_memory_halves_the_micro_batch_and_goes_on(workspace, monkeypatch, capsys):
    """An out-of-memory error in a step (injected: any forward of more than 4 images) halves the micro-batch and
    reruns the step: the same effective batch, so the same optimization as a run at micro-batch 4 from the start."""
    params = yaml.safe_load((workspace / "params.yaml").read_text())
    params["train"].update(frozen_epochs=0, epochs=1)
    params["models"]["resnet"].update(arch="test_vit", head="timm", item_size=160, size=160)  # no BatchNorm
    params["profile"]["min_micro_batch"] = 2
    import paddy.training.step

    def run(name, micro):
        return train(parse_settings(params), workspace, workspace / name, (micro, 32))

    expected = run("oom_reference", 4)
    real = paddy.training.step.target_loss

    def loss_or_oom(logits, targets, *rest):
        if len(logits) > 4:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return real(logits, targets, *rest)

    monkeypatch.setattr(paddy.training.step, "target_loss", loss_or_oom)
    got = run("oom", 16)
    assert [r["micro_batch"] for r in got] == [4, 4]
    assert "micro-batch 16 -> 8" in got[0]["events"][0] and "micro-batch 8 -> 4" in got[0]["events"][1]
    assert "out of memory at epoch 1 step 1" in capsys.readouterr().out
    for a, b in zip(expected, got):
        assert a["train_loss"] == pytest.approx(b["train_loss"], rel=1e-5)
        assert a["valid_loss"] == pytest.approx(b["valid_loss"], rel=1e-4)
    params["profile"]["min_micro_batch"] = 8
    with pytest.raises(PaddyError, match="halving it would go below profile.min_micro_batch"):
        run("oom_floor", 8)
    assert os.environ.get("PADDY_CACHE")  # the item cache of the test session, not the user's
