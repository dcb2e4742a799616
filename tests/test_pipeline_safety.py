"""Never lose a run, never reuse a stale one: real `dvc` runs on a shrunk copy of the repository (slow).

A bad setting fails in `check` before DVC deletes any output; an edit to a user's own source folder reruns
download and only what changed after it.
"""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import test_pipeline
import yaml

pytestmark = pytest.mark.slow
repo = test_pipeline.repo  # a module-scoped fixture: this module's own shrunk copy of the repository
run = test_pipeline.run

# What `dvc checkout` cannot restore: git-tracked outputs (cache: false) of the stages a bad setting would rerun.
KEPT = [
    "submission.csv",
    "metrics/ensemble.json",
    "metrics/confusion.csv",
    "metrics/profile/resnet.json",
    "metrics/profile/vit.json",
]


def fails(cmd, cwd):
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")
    out = subprocess.run(cmd, cwd=cwd, env=env, shell=True, capture_output=True, text=True, timeout=900)
    assert out.returncode != 0, out.stdout[-3000:]
    return out.stdout + out.stderr


def stages_run(out):
    return [line.split("'")[1] for line in out.splitlines() if line.startswith("Running stage")]


def snapshot(repo):
    return {path: (repo / path).read_bytes() for path in KEPT}


@pytest.mark.parametrize(
    "setting, message",
    [
        ("models.vit.weight=-1", "error: `models.vit.weight` in params.yaml is -1; it must be a number >= 0."),
        ("models.resnet.arch=test_resnett", "error: `models.resnet.arch` in params.yaml is 'test_resnett', which timm"),
        ("ensemble.weights=best", "error: `ensemble.weights` in params.yaml is 'best'; it must be params"),
    ],
    ids=["ensemble-weight", "arch", "ensemble-weights"],
)
def test_a_bad_setting_fails_in_check_before_anything_is_deleted(repo, setting, message):
    if not (repo / "submission.csv").exists():
        run("dvc repro", repo)
    before = snapshot(repo)
    out = fails(f"dvc exp run -S {setting}", repo)
    assert message in out and "Traceback" not in out, out
    assert stages_run(out) == ["check"], out
    assert snapshot(repo) == before
    run("git checkout params.yaml", repo)
    out = run("dvc repro", repo)  # the good settings again: nothing after the check (or its run-cache) reruns
    assert set(stages_run(out)) <= {"check", "fingerprint"}, out


def test_editing_a_folder_source_reruns_download_and_only_what_changed(repo, tmp_path):
    if not (repo / "submission.csv").exists():
        run("dvc repro", repo)
    source = shutil.copytree(repo / "data/raw", tmp_path / "my-competition")  # a user's own copy, outside
    params = yaml.safe_load((repo / "params.yaml").read_text())
    params["data"]["source"] = str(source)
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    assert "download" in stages_run(run("dvc repro", repo))
    assert stages_run(run("dvc repro", repo)) == ["fingerprint"]  # nothing changed: nothing after it reruns

    with open(source / "train.csv", "a") as f:
        f.write("\n")  # an edit that changes the file, not the competition
    assert stages_run(run("dvc repro", repo)) == ["fingerprint", "download", "prepare"]


def test_a_new_profile_headroom_reruns_the_profiles_and_no_training(repo):
    if not (repo / "submission.csv").exists():
        run("dvc repro", repo)
    params = yaml.safe_load((repo / "params.yaml").read_text())
    params["profile"]["headroom"] = 0.3  # the micro-batches are explicit: train takes nothing from the profile
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    ran = stages_run(run("dvc repro", repo))
    assert {"profile@resnet", "profile@vit"} <= set(ran), ran
    assert not [s for s in ran if s.startswith(("train@", "tta@"))] and "ensemble" not in ran, ran
    run("git checkout params.yaml", repo)
    run("dvc repro", repo)
