"""download, prepare and tta killed midway (SIGKILL, a real process): nothing they leave reads as a whole output, and
running them again completes to the same outputs as an uninterrupted run (slow: real stages on a tiny competition)."""

import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import yaml
from helpers.pipeline import run_script
from helpers.processes import in_main

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow

STAGES = {  # stage -> (command after `python`, the outputs it writes, a sign it is under way in folder `run`)
    "download": (
        ["stages/download.py", "{run}/raw", "{run}/truth.csv"],
        ["raw/train.csv", "truth.csv"],
        lambda run, pid: run.exists(),  # its scratch folder: the competition is being generated
    ),
    "prepare": (
        ["stages/prepare.py", "ref/raw", "{run}/prepared"],
        ["prepared/index.csv"],
        lambda run, pid: any((run / "prepared.partial").rglob("*.jpg")),  # resized images are arriving, beside
    ),
    "tta": (
        ["stages/tta.py", "ref/prepared", "ref/split.csv", "ref/models/resnet", "{run}/preds"],
        ["preds/test_probs.npy", "preds/oof_probs.npy"],
        # nothing shows until the end: killed half a second into main(), loading its checkpoint or in its passes
        # (a fixed 5 s from the start once landed after its outputs were written, on its way out)
        lambda run, pid: in_main(pid) and time.sleep(0.5) is None,
    ),
}


def stage(work, name, run, check=True):
    args = [a.format(run=run) for a in STAGES[name][0]]
    out = run_script(*args, cwd=work, timeout=900)
    assert not check or out.returncode == 0, out.stderr[-2000:]
    return out


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    work = tmp_path_factory.mktemp("kill")
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params["data"]["synthetic"].update(n_train=300, n_test=120, width=96, height=128)
    params["train"].update(epochs=1, effective_batch=16, eval_batch=8, workers=0)
    params["tta"]["n"] = 20  # passes enough to be inside them half a second into main(), on a fast CPU too
    params["models"] = {"resnet": dict(params["models"]["resnet"], micro_batch=8)}
    (work / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    stage(work, "download", "ref")
    stage(work, "prepare", "ref")
    assert run_script("stages/split.py", "ref/prepared", "ref/split.csv", cwd=work).returncode == 0
    train = ("resnet", "ref/prepared", "ref/split.csv", "ref/models/resnet", "ref/live")
    assert run_script("stages/train.py", *train, cwd=work, timeout=900).returncode == 0
    stage(work, "tta", "ref")
    return work


@pytest.mark.parametrize("name", list(STAGES))
def test_killed_stage_leaves_nothing_whole_and_reruns_to_the_same_output(work, name):
    command, outputs, started = STAGES[name]
    run = f"killed_{name}"
    args = [a.format(run=run) for a in command]
    proc = subprocess.Popen([sys.executable, str(ROOT / args[0]), *args[1:]], cwd=work,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None and not started(work / run, proc.pid):
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    if proc.returncode == -signal.SIGKILL:  # killed midway: nothing it writes at the end may look whole
        assert not all((work / run / out).exists() for out in outputs), f"{name} left complete-looking outputs"
    stage(work, name, run)
    for out in outputs:
        ours, ref = work / run / out, work / "ref" / out
        if out.endswith(".csv") and "raw" not in out:
            a, b = pd.read_csv(ours), pd.read_csv(ref)
            if "path" in a:  # prepare: the index names its own folder's files
                a, b = a.drop(columns="path"), b.drop(columns="path")
            pd.testing.assert_frame_equal(a, b)
        else:
            assert ours.read_bytes() == ref.read_bytes()
