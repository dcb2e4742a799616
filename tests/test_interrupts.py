"""Ctrl-C (SIGINT) or SIGTERM in any stage: one paragraph saying which stage stopped, what it kept and how to go on,
exit 130, no traceback; a stage that writes outputs keeps the last good ones (built beside them and swapped in whole),
as train does. The stage runs are real processes on a tiny competition (slow)."""

import hashlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from helpers.pipeline import run_script
from helpers.processes import in_main

from paddy import errors
from paddy.data.synthetic import make_competition
from paddy.files import built_beside, process_pool

ROOT = Path(__file__).resolve().parents[1]


def tree(root):
    root = Path(root)
    return {str(p.relative_to(root)): hashlib.md5(p.read_bytes()).hexdigest() for p in root.rglob("*") if p.is_file()}


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_a_stopped_stage_says_which_what_it_kept_and_how_to_go_on(capsys, monkeypatch, sig):
    monkeypatch.setattr(sys, "argv", ["stages/tta.py"])
    before = signal.getsignal(signal.SIGTERM)

    @errors.exit_on_error
    def main():
        errors.say_on_interrupt("tta@vit", "data/preds/vit is still the last complete one.")
        os.kill(os.getpid(), sig)
        time.sleep(5)

    try:
        with pytest.raises(SystemExit) as exit_:
            main()
    finally:
        signal.signal(signal.SIGTERM, before)
    assert exit_.value.code == 130
    err = capsys.readouterr().err
    kept = "data/preds/vit is still the last complete one. Run `dvc repro` again to go on."
    assert f"tta@vit stopped by {sig.name} after 0.0 min. {kept}" in err and "Traceback" not in err


def test_an_output_built_beside_replaces_the_last_only_when_whole(tmp_path):
    dest = tmp_path / "preds"
    dest.mkdir()
    (dest / "old.csv").write_text("last good")
    with pytest.raises(KeyboardInterrupt):
        with built_beside(dest) as out:
            (out / "new.csv").write_text("half")
            raise KeyboardInterrupt
    assert tree(dest) == {"old.csv": hashlib.md5(b"last good").hexdigest()}
    assert not (tmp_path / "preds.partial").exists()
    with built_beside(dest) as out:
        (out / "new.csv").write_text("whole")
    assert sorted(p.name for p in dest.iterdir()) == ["new.csv"] and not (tmp_path / "preds.partial").exists()


def _slow_square(x):
    time.sleep(0.2)
    return x * x


def test_an_interrupted_pool_drops_its_queue_instead_of_running_it(tmp_path):
    start = time.monotonic()
    with pytest.raises(KeyboardInterrupt):
        with process_pool(2) as pool:
            for i, _ in enumerate(pool.map(_slow_square, range(200))):  # 20 s of work queued
                if i == 3:
                    raise KeyboardInterrupt
    assert time.monotonic() - start < 5


# ---------------------------------------------------------------------------------------------------------------------
# Real stages, stopped midway with SIGINT as a terminal's Ctrl-C sends it


def under_way(pid, partial):
    """Whether the stage is mid-work: prepare has written its first resized image into <output>.partial; TTA (which
    writes only at its end) has been in main() for 0.3 s, loading its checkpoints or running its passes."""
    if not in_main(pid):
        return False
    if partial.name == "prepared.partial":
        return partial.is_dir() and any(p.is_file() for p in partial.rglob("*.jpg"))
    time.sleep(0.3)
    return True


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    """A tiny competition through download, prepare, split, train and tta: every stage's last good outputs."""
    work = tmp_path_factory.mktemp("interrupts")
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params["data"]["synthetic"].update(n_train=200, n_test=100, width=96, height=128)
    params["train"].update(epochs=1, effective_batch=16, eval_batch=8, workers=0)
    params["prepare"]["workers"] = 1
    params["tta"]["n"] = 1
    params["models"] = {"resnet": dict(params["models"]["resnet"], micro_batch=8)}
    (work / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    for script, *args in [
        ("stages/download.py", "data/raw", "data/truth.csv"),
        ("stages/prepare.py", "data/raw", "data/prepared"),
        ("stages/split.py", "data/prepared", "data/split.csv"),
        ("stages/train.py", "resnet", "data/prepared", "data/split.csv", "data/models/resnet", "dvclive/resnet"),
        ("stages/tta.py", "data/prepared", "data/split.csv", "data/models/resnet", "data/preds/resnet"),
    ]:
        out = run_script(script, *args, cwd=work, timeout=900)
        assert out.returncode == 0, out.stderr[-2000:]
    return work


@pytest.mark.slow
@pytest.mark.parametrize(
    "stage, args, output, said",
    [
        ("prepare", ["big-raw", "data/prepared"], "data/prepared", "prepare stopped by SIGINT after "),
        (
            "tta",
            ["data/prepared", "data/split.csv", "data/models/resnet", "data/preds/resnet"],
            "data/preds/resnet",
            "tta@resnet stopped by SIGINT after ",
        ),
    ],
)
def test_ctrl_c_keeps_the_last_output_and_says_so(work, stage, args, output, said):
    before = tree(work / output)
    params = yaml.safe_load((work / "params.yaml").read_text())
    params["tta"]["n"] = 50  # long enough to be stopped midway (the last good output was made with 1)
    (work / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    if stage == "prepare" and not (work / "big-raw").exists():
        # 300 images resize in 0.1 s on a fast CPU, over before any fixed wait: 3,000 give seconds to be stopped in
        make_competition(work / "big-raw", work / "big-truth.csv", n_train=3000, n_test=20, width=96, height=128)
    proc = subprocess.Popen([sys.executable, str(ROOT / f"stages/{stage}.py"), *args], cwd=work,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip
    deadline = time.time() + 120
    while not under_way(proc.pid, work / f"{output}.partial") and proc.poll() is None and time.time() < deadline:
        time.sleep(0.01)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err[-3000:]
    assert said in err and f"{output} is still the last complete one" in err and "Run `dvc repro` again" in err
    assert "Traceback" not in err, err[-3000:]
    assert tree(work / output) == before and not (work / f"{output}.partial").exists()
