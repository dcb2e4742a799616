"""Never lose a run, never reuse a stale one: real `dvc` runs on a shrunk copy of the repository (slow).

A bad setting or source fails in `check` before DVC deletes any output; what only a later stage can find (a damaged
zip entry, too few rows to cross-validate, Ctrl-C) leaves that stage's last good outputs in place (persist: true,
built beside and swapped in); an edit to a user's own source folder reruns download and only what changed after it.
"""

import hashlib
import os
import shlex
import shutil
import signal
import subprocess
import time
import zipfile
from pathlib import Path

import pytest
import test_pipeline
import yaml
from helpers.pipeline import sh, venv_env

pytestmark = pytest.mark.slow
repo = test_pipeline.repo  # a module-scoped fixture: this module's own shrunk copy of the repository

# Every output of the last good run: the git-tracked ones (cache: false), which `dvc checkout` cannot restore, and
# the cached ones, which the next stages and `paddy submit` read.
OUTPUTS = ["submission.csv", "metrics", "plots", "dvclive", "data/raw", "data/truth.csv", "data/models", "data/preds"]


def stages_run(out):
    return [line.split("'")[1] for line in out.splitlines() if line.startswith("Running stage")]


def snapshot(repo):
    """{path: md5} of every output file (a run's scratch folders, *.partial, aside)."""
    files = {}
    for name in OUTPUTS:
        for p in [repo / name] if (repo / name).is_file() else sorted((repo / name).rglob("*")):
            if p.is_file() and not any(part.endswith(".partial") for part in p.parts):
                files[str(p.relative_to(repo))] = hashlib.md5(p.read_bytes()).hexdigest()
    assert "submission.csv" in files and "data/models/vit/meta.json" in files and "data/raw/train.csv" in files
    return files


def restore_params(repo):
    """params.yaml as committed. Not `git checkout`: `dvc exp run -S models.vit.size=[200,200]` leaves the file the
    same length with a time git takes for unchanged, and git then restores nothing."""
    committed = subprocess.run(["git", "show", "HEAD:params.yaml"], cwd=repo, capture_output=True, text=True)
    (repo / "params.yaml").write_text(committed.stdout)


def exp_run(settings):
    return "dvc exp run " + " ".join(f"-S {shlex.quote(s)}" for s in settings)


@pytest.mark.parametrize(
    "settings, message",
    [
        (["models.vit.weight=-1"], "error: `models.vit.weight` in params.yaml is -1; it must be a number >= 0."),
        (["models.resnet.arch=test_resnett"], "error: `models.resnet.arch` in params.yaml is 'test_resnett', which"),
        (["ensemble.weights=best"], "error: `ensemble.weights` in params.yaml is 'best'; it must be params"),
        # DVC's run-cache ignores every key named `size`: it used to restore the check's verdict for [160, 160]
        (["models.vit.size=[200,200]"], "is test_vit, a fixed-size model whose position embeddings (or windows) timm"),
        (["models.vit.weight=0", "models.resnet.weight=0"], "error: Every `models.<name>.weight` in params.yaml is 0"),
        (["train.devices=1000"], "error: `train.devices` in params.yaml is 1000, but this machine has"),
        (["report.top_losses=-1"], "error: `report.top_losses` in params.yaml is -1; it must be an integer at least 0"),
        (["data.synthetic.difficulty=medium"], "error: `data.synthetic.difficulty` in params.yaml is 'medium'; it"),
        (["kaggle.accelerator=tpu"], "error: `kaggle.accelerator` in params.yaml is 'tpu'; it must be one of t4x2"),
        # issue 24: settings that cannot make sense, refused before DVC deletes anything
        (["cv.n_splits=1000"], "error: `cv.n_splits` in params.yaml is 1000; it must be an integer at least 1 and at"),
        (["models.resnet.size=[7,7]"], "is test_resnet, which shrinks its input 32 times before its head"),
        (["cv.scheme=kfold", "cv.n_splits=5"], "training images in data.source synthetic: stratified k-fold needs"),
    ],
    ids=[
        "ensemble-weight",
        "arch",
        "ensemble-weights",
        "fixed-size",
        "weights-all-zero",
        "devices",
        "top-losses",
        "difficulty",
        "accelerator",
        "n-splits-bags",
        "below-total-stride",
        "kfold-small-label",
    ],
)
def test_a_bad_setting_fails_in_check_before_anything_is_deleted(repo, settings, message):
    if not (repo / "submission.csv").exists():
        sh("dvc repro", repo)
    before = snapshot(repo)
    out = sh(exp_run(settings), repo, ok=False)
    assert message in out and "Traceback" not in out, out
    assert stages_run(out) == ["check"], out
    assert snapshot(repo) == before
    restore_params(repo)
    out = sh("dvc repro", repo)  # the good settings again: nothing after the check reruns
    assert set(stages_run(out)) <= {"check", "fingerprint"}, out


def test_a_typo_written_into_params_yaml_fails_in_check(repo):
    """`dvc exp run -S` refuses an unknown key itself; an edit of the file did not, and was silently ignored."""
    if not (repo / "submission.csv").exists():
        sh("dvc repro", repo)
    before = snapshot(repo)
    params = yaml.safe_load((repo / "params.yaml").read_text())
    params["train"]["epoch"] = 3  # beside `epochs`
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    out = sh("dvc repro", repo, ok=False)
    assert "error: `train.epoch` in params.yaml is not a setting paddy knows (did you mean `train.epochs`?)" in out
    assert stages_run(out) == ["check"] and snapshot(repo) == before, out
    restore_params(repo)


def test_the_check_runs_after_every_edit_whatever_the_run_cache_holds(repo):
    """DVC's run-cache key leaves out every key named `size`, so it restored the check after a models.resnet.size
    edit, and the model trained unchecked. always_changed: the check runs, and its model checks run again."""
    if not (repo / "submission.csv").exists():
        sh("dvc repro", repo)
    unchanged = "models: settings, code and packages as when they last passed their checks"
    out = sh("dvc repro check", repo)
    assert stages_run(out) == ["check"] and unchanged in out, out  # nothing changed: the cheap path
    params = yaml.safe_load((repo / "params.yaml").read_text())
    params["models"]["resnet"]["size"] = [40, 32]
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    out = sh("dvc repro check", repo)
    assert stages_run(out) == ["check"] and "is cached" not in out and unchanged not in out, out
    restore_params(repo)


def test_a_bad_source_fails_in_check_before_data_raw_is_deleted(repo, tmp_path):
    """An empty folder, a train.csv without its label column, a zip with an entry outside, ids that name no image, a
    label column with gaps, a probabilities form whose columns are not the classes: each used to fail in download
    (or later) after DVC had deleted data/raw, and `paddy submit` failed after that. The check names the file, what
    it found and the setting to write."""
    if not (repo / "submission.csv").exists():
        sh("dvc repro", repo)
    (tmp_path / "empty").mkdir()

    def copy(name, edit=None):
        folder = shutil.copytree(repo / "data/raw", tmp_path / name)
        if edit:
            (folder / "train.csv").write_text(edit((folder / "train.csv").read_text()))
        return folder

    unlabelled = copy("unlabelled", lambda text: text.replace("image_id,label,", "image_id,disease,", 1))
    elsewhere = copy("elsewhere", lambda text: text.replace("\n1", "\nx1"))  # every id names no image
    gaps = copy("gaps")
    lines = (gaps / "train.csv").read_text().splitlines()
    image_id, _, *rest = lines[3].split(",")
    lines[3] = ",".join([image_id, "", *rest])  # line 4 has no label
    (gaps / "train.csv").write_text("\n".join(lines) + "\n")
    with zipfile.ZipFile(tmp_path / "evil.zip", "w") as zf:
        for p in sorted((repo / "data/raw").rglob("*")):
            zf.write(p, str(p.relative_to(repo / "data/raw")))
        zf.writestr("../evil", "outside")
    form = ["competition.form=probabilities", "competition.metric=log_loss"]
    cases = {
        (tmp_path / "empty",): f"error: {tmp_path / 'empty'} has no train.csv (the train table",
        (unlabelled,): f"error: {unlabelled / 'train.csv'} has columns",
        (tmp_path / "evil.zip",): f"error: {tmp_path / 'evil.zip'} has an entry '../evil' that would land outside",
        (elsewhere,): "error: None of the 80 training image ('train_images/{label}/{id}', `competition.train_images`)",
        (gaps,): f"error: {gaps / 'train.csv'} has a row with no label (line 4",
        (copy("form"), *form): "sample_submission.csv's columns after its ids are not the classes of the training data",
    }
    before = snapshot(repo)
    for (source, *more), message in cases.items():
        out = sh(exp_run([f"data.source={source}", *more]), repo, ok=False)
        assert message in out and "Traceback" not in out, out
        assert stages_run(out) == ["check"] and snapshot(repo) == before, out
        restore_params(repo)


def test_a_failure_only_download_can_find_keeps_the_last_competition(repo, tmp_path):
    """A damaged image entry (its CRC) shows only on extraction, which the check does not do: download fails, and
    data/raw, whose stage persists its outputs, is the last good competition still."""
    if not (repo / "submission.csv").exists():
        sh("dvc repro", repo)
    damaged = tmp_path / "damaged.zip"
    with zipfile.ZipFile(damaged, "w", zipfile.ZIP_STORED) as zf:
        for p in sorted((repo / "data/raw").rglob("*")):
            zf.write(p, str(p.relative_to(repo / "data/raw")))
    blob = bytearray(damaged.read_bytes())
    at = blob.index(b"\xff\xd8\xff")  # the first JPEG's data (stored, not compressed)
    blob[at + 100 : at + 110] = bytes(10)
    damaged.write_bytes(blob)
    before = snapshot(repo)
    out = sh(exp_run([f"data.source={damaged}"]), repo, ok=False)
    assert "fails its CRC check" in out and "Traceback" not in out, out
    assert stages_run(out) == ["check", "fingerprint", "download"] and snapshot(repo) == before, out
    restore_params(repo)
    out = sh("dvc repro", repo)
    assert set(stages_run(out)) <= {"check", "fingerprint"}, out


def test_a_failure_only_the_ensemble_can_find_keeps_the_last_submission(repo):
    """Too few out-of-fold rows for ensemble.cv_folds is known only from the predictions: the ensemble fails, and
    submission.csv and its metrics stay the last good run's."""
    if not (repo / "submission.csv").exists():
        sh("dvc repro", repo)
    before = snapshot(repo)
    out = sh(exp_run(["ensemble.cv_folds=50"]), repo, ok=False)  # at most 100 (check), more than the 16 rows
    assert "`ensemble.cv_folds` is 50 but there are only" in out and "Traceback" not in out, out
    assert stages_run(out) == ["check", "fingerprint", "ensemble"] and snapshot(repo) == before, out
    restore_params(repo)
    out = sh("dvc repro", repo)
    assert set(stages_run(out)) <= {"check", "fingerprint"}, out


def test_ctrl_c_during_training_keeps_the_last_model_and_its_metrics(repo, tmp_path):
    """SIGINT to dvc's process group, as Ctrl-C in a terminal sends it, once training has a checkpoint: the stage
    stops, says so, and data/models/resnet and dvclive/resnet are the last finished run's, byte for byte."""
    if not (repo / "submission.csv").exists():
        sh("dvc repro", repo)
    before = snapshot(repo)
    params = yaml.safe_load((repo / "params.yaml").read_text())
    params["train"]["epochs"] = 30
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    log = tmp_path / "repro.log"
    with open(log, "w") as f:
        proc = subprocess.Popen(["dvc", "repro"], cwd=repo, env=venv_env(), stdout=f, stderr=subprocess.STDOUT,
                                start_new_session=True)  # fmt: skip
    deadline = time.time() + 600
    while not list((repo / "data/resume/resnet").glob("*/v0.pt")) and time.time() < deadline:
        time.sleep(0.2)
    os.killpg(proc.pid, signal.SIGINT)
    assert proc.wait(timeout=300) != 0
    out = log.read_text()
    assert "SIGINT" in out and "data/models/resnet and dvclive/resnet are still the last finished run's" in out, out
    assert snapshot(repo) == before
    restore_params(repo)
    out = sh("dvc repro", repo)  # the previous settings: their model is there, nothing to train
    assert set(stages_run(out)) <= {"check", "fingerprint"}, out


def test_editing_a_folder_source_reruns_download_and_only_what_changed(repo, tmp_path):
    if not (repo / "submission.csv").exists():
        sh("dvc repro", repo)
    source = shutil.copytree(repo / "data/raw", tmp_path / "my-competition")  # a user's own copy, outside
    params = yaml.safe_load((repo / "params.yaml").read_text())
    params["data"]["source"] = str(source)
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    assert "download" in stages_run(sh("dvc repro", repo))
    assert stages_run(sh("dvc repro", repo)) == ["check", "fingerprint"]  # nothing changed: nothing after them

    with open(source / "train.csv", "a") as f:
        f.write("\n")  # an edit that changes the file, not the competition
    assert stages_run(sh("dvc repro", repo)) == ["check", "fingerprint", "download", "prepare"]


def test_a_new_profile_headroom_reruns_the_profiles_and_no_training(repo):
    if not (repo / "submission.csv").exists():
        sh("dvc repro", repo)
    params = yaml.safe_load((repo / "params.yaml").read_text())
    params["profile"]["headroom"] = 0.3  # the micro-batches are explicit: train takes nothing from the profile
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    ran = stages_run(sh("dvc repro", repo))
    assert {"profile@resnet", "profile@vit"} <= set(ran), ran
    assert not [s for s in ran if s.startswith(("train@", "tta@"))] and "ensemble" not in ran, ran
    restore_params(repo)
    sh("dvc repro", repo)


# ---------------------------------------------------------------------------------------------------------------------
# Issue 24: damaged files, diverging runs, Ctrl-C in any stage


def test_a_damaged_checkpoint_is_named_by_the_check_and_predict_instead_of_retrained(repo):
    """`truncate -s 1000 data/models/resnet/v0.safetensors`: `paddy predict` printed a SafetensorError traceback and
    `dvc repro` retrained for minutes without a word. Both name the file and the fix; `dvc checkout` is the fix."""
    if not (repo / "submission.csv").exists():
        sh("dvc repro", repo)
    before = snapshot(repo)
    photo = sorted((repo / "data/raw/test_images").iterdir())[0]
    sh("truncate -s 1000 data/models/resnet/v0.safetensors", repo)
    try:
        out = sh(f"paddy predict {photo} --out predictions.csv", repo, ok=False)
        assert "error: data/models/resnet/v0.safetensors is damaged: its sha256 is " in out and "Traceback" not in out
        out = sh("dvc repro", repo, ok=False)
        assert stages_run(out) == ["check"] and "Traceback" not in out, out
        assert "error: data/models/resnet/v0.safetensors is damaged" in out
        assert "`dvc checkout --force data/models/resnet` restores the one `dvc repro` last recorded" in out
    finally:
        sh("dvc checkout --force data/models/resnet", repo)  # the fix it names: seconds, no training
    assert snapshot(repo) == before
    assert set(stages_run(sh("dvc repro", repo))) <= {"check", "fingerprint"}


def test_a_diverging_run_stops_at_its_first_nan_and_the_last_model_stays(repo):
    """`train.lr=10`, the largest rate the check allows: the vit's loss is NaN after a few epochs. It used to train on
    for every epoch, replace data/models/vit, and the ensemble died on NaN probabilities."""
    if not (repo / "submission.csv").exists():
        sh("dvc repro", repo)
    before = snapshot(repo)
    out = sh(exp_run(["train.lr=10", "train.epochs=12"]) + " train@vit", repo, ok=False)
    assert "error: vit, split v0, diverged: the training loss is nan at epoch " in out and "Traceback" not in out, out
    assert "data/models/vit and dvclive/vit are still the last finished run's. Try a lower `train.lr` (now 10)" in out
    epoch = int(out.split("the training loss is nan at epoch ")[1].split(",")[0])
    assert f"vit split 0 epoch {epoch}/12" not in out and epoch < 12, out  # stopped in the epoch of the first NaN
    assert stages_run(out)[-1] == "train@vit" and snapshot(repo) == before, out
    restore_params(repo)
    assert set(stages_run(sh("dvc repro", repo))) <= {"check", "fingerprint"}


def _stage_pid(script):
    """The pid of the running `python stages/<script>` whose main() has begun (its SIGTERM handler is set), or None."""
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            args = cmdline.read_bytes().split(b"\0")
            status = (cmdline.parent / "status").read_text()
        except OSError:
            continue
        if any(a.endswith(f"stages/{script}".encode()) for a in args):
            caught = int(next(line.split()[1] for line in status.splitlines() if line.startswith("SigCgt:")), 16)
            if caught & (1 << (signal.SIGTERM - 1)):
                return int(cmdline.parent.name)
    return None


def test_ctrl_c_during_tta_keeps_its_last_predictions_and_says_so(repo, tmp_path):
    """SIGINT to dvc's process group mid-TTA: data/preds/<model> used to be gone (DVC deletes a stage's outputs before
    it runs), and nothing was said."""
    if not (repo / "submission.csv").exists():
        sh("dvc repro", repo)
    before = snapshot(repo)
    params = yaml.safe_load((repo / "params.yaml").read_text())
    params["tta"]["n"] = 100  # TTA reruns, long enough to be stopped
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    log = tmp_path / "repro.log"
    with open(log, "w") as f:
        proc = subprocess.Popen(["dvc", "repro"], cwd=repo, env=venv_env(), stdout=f, stderr=subprocess.STDOUT,
                                start_new_session=True)  # fmt: skip
    deadline = time.time() + 600
    while _stage_pid("tta.py") is None and proc.poll() is None and time.time() < deadline:
        time.sleep(0.1)
    time.sleep(0.3)  # in main(): loading its checkpoints or running its passes (all 100 took under 1 s on one CPU)
    os.killpg(proc.pid, signal.SIGINT)
    assert proc.wait(timeout=300) != 0
    out = log.read_text()
    assert "stopped by SIGINT after " in out and "is still the last complete one. Run `dvc repro` again" in out, out
    assert "Traceback" not in out and snapshot(repo) == before, out
    restore_params(repo)
    assert set(stages_run(sh("dvc repro", repo))) <= {"check", "fingerprint"}


def test_a_decompression_bomb_in_a_folder_source_is_left_out_with_its_reason(repo, tmp_path):
    """A 20000x20000 PNG among a folder source's photos: prepare died with three tracebacks (DecompressionBombError),
    after data/raw was replaced and with data/prepared half-written."""
    from PIL import Image

    if not (repo / "submission.csv").exists():
        sh("dvc repro", repo)
    before = snapshot(repo)
    source = shutil.copytree(repo / "data/raw", tmp_path / "with-bomb")
    victim = sorted((source / "test_images").iterdir())[0]
    Image.new("1", (20000, 20000)).save(victim, format="PNG")  # 48 KB on disk, 400 million pixels
    out = sh(f"dvc exp run --temp -S data.source={source} prepare", repo)
    reason = "too many pixels: 20000x20000 is 400,000,000, above prepare.max_pixels (200,000,000)"
    assert f"left out data/raw/test_images/{victim.name}: {reason}" in out, out  # and listed in bad_files.csv
    assert "Traceback" not in out and "DecompressionBomb" not in out, out
    assert snapshot(repo) == before
