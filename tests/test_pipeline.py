"""The whole DVC pipeline, as a user runs it, on a shrunk copy of the repository (slow: minutes on 2 cores)."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow


def run(cmd, cwd):
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")
    out = subprocess.run(cmd, cwd=cwd, env=env, shell=True, capture_output=True, text=True, timeout=900)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    return out.stdout + out.stderr


def copy_pipeline(repo):
    """The pipeline's definition, params and code, without data or DVC's cache: a repository to run dvc in."""
    for name in ("dvc.yaml", "params.yaml", ".dvcignore", ".gitignore"):
        shutil.copy(ROOT / name, repo / name)
    for name in ("stages", "src", ".dvc"):
        shutil.copytree(ROOT / name, repo / name, ignore=shutil.ignore_patterns("tmp", "cache", "__pycache__"))


@pytest.fixture(scope="module")
def repo(tmp_path_factory):
    repo = tmp_path_factory.mktemp("repo")
    copy_pipeline(repo)
    params = yaml.safe_load((repo / "params.yaml").read_text())
    params["data"]["synthetic"].update(n_train=80, n_test=16, width=48, height=64)
    params["train"].update(epochs=1, effective_batch=16)
    params["tta"]["n"] = 1
    for m in params["models"].values():
        m["micro_batch"] = 8
    params["models"]["resnet"].update(item_size=[64, 48], size=[48, 32])
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    run("git init -q && git add -A && git -c user.name=t -c user.email=t@t commit -qm init", repo)
    return repo


def test_repro_writes_a_valid_submission_then_has_nothing_to_do(repo):
    run("dvc repro", repo)
    sub = pd.read_csv(repo / "submission.csv")
    sample = pd.read_csv(repo / "data" / "raw" / "sample_submission.csv")
    assert sub.image_id.tolist() == sample.image_id.tolist() and sub.label.notna().all()
    out = run("dvc repro", repo)
    ran = [line for line in out.splitlines() if line.startswith("Running stage")]
    # always_changed: the check (its model checks skipped: nothing changed) and the source's fingerprint; nothing else
    assert ran == ["Running stage 'check':", "Running stage 'fingerprint':"], out
    assert "Stage 'download' didn't change, skipping" in out
    # Every plot is an image the page embeds: nothing to load from the network.
    run("dvc plots show", repo)
    page = (repo / "dvc_plots" / "index.html").read_text()
    assert "<script" not in page and page.count("<img") == 5, page  # learning curves, memory (x2 models), confusion
    run("git add -A && git -c user.name=t -c user.email=t@t commit -qm run", repo)


def test_changing_a_weight_reruns_only_the_ensemble(repo):
    out = run("dvc exp run -S models.vit.weight=1", repo)
    ran = [line for line in out.splitlines() if line.startswith("Running stage")]
    assert ran == ["Running stage 'check':", "Running stage 'fingerprint':", "Running stage 'ensemble':"], out
    shown = run("dvc exp show --md --no-pager", repo)
    assert "oof_acc.ensemble" in shown and "dvclive/vit/metrics.json:valid_acc" in shown
    header = shown.splitlines()[0]  # no memory profile, no per-split copies, no batch sizes among the metrics
    assert not any(word in header for word in ("metrics/profile", "peak_gb", "split0/", ":micro_batch")), header


def test_fitted_weights_rerun_only_the_ensemble_and_beat_the_params_weights(repo):
    out = run("dvc exp run -S ensemble.weights=fit", repo)
    ran = [line for line in out.splitlines() if line.startswith("Running stage")]
    assert ran == ["Running stage 'check':", "Running stage 'fingerprint':", "Running stage 'ensemble':"], out
    metrics = json.loads((repo / "metrics" / "ensemble.json").read_text())
    fit, par = metrics["fit"], metrics["params"]
    assert fit["oof_loss"] <= par["oof_loss"] and metrics["weights"] == fit["weights"]
    losses = {name: loss for name, loss in metrics["oof_loss"].items() if name != "ensemble"}
    weaker = max(losses, key=losses.get)
    assert fit["weights"][weaker] < par["weights"][weaker], metrics
    assert fit["cv_loss"] > 0 and 0 <= fit["cv_acc"] <= 1
    shown = run("dvc exp show --md --no-pager", repo)
    assert "fit.cv_loss" in shown and "params.oof_loss" in shown and "ensemble.weights" in shown
