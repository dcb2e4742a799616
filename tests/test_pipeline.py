"""The whole DVC pipeline, as a user runs it, on a shrunk copy of the repository (slow: minutes on 2 cores)."""

import json
from pathlib import Path

import pandas as pd
import pytest
from conftest import copy_pipeline, sh

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def repo(tmp_path_factory):
    repo = tmp_path_factory.mktemp("repo")
    copy_pipeline(repo)
    return repo


def test_repro_writes_a_valid_submission_then_has_nothing_to_do(repo):
    sh("dvc repro", repo)
    sub = pd.read_csv(repo / "submission.csv")
    sample = pd.read_csv(repo / "data" / "raw" / "sample_submission.csv")
    assert sub.image_id.tolist() == sample.image_id.tolist() and sub.label.notna().all()
    out = sh("dvc repro", repo)
    ran = [line for line in out.splitlines() if line.startswith("Running stage")]
    # always_changed: the check (its model checks skipped: nothing changed) and the source's fingerprint; nothing else
    assert ran == ["Running stage 'check':", "Running stage 'fingerprint':"], out
    assert "Stage 'download' didn't change, skipping" in out
    # Every plot is an image the page embeds: nothing to load from the network.
    sh("dvc plots show", repo)
    page = (repo / "dvc_plots" / "index.html").read_text()
    assert "<script" not in page and page.count("<img") == 5, page  # learning curves, memory (x2 models), confusion
    sh("git add -A && git -c user.name=t -c user.email=t@t commit -qm run", repo)


def test_changing_a_weight_reruns_only_the_ensemble(repo):
    out = sh("dvc exp run -S models.vit.weight=1", repo)
    ran = [line for line in out.splitlines() if line.startswith("Running stage")]
    assert ran == ["Running stage 'check':", "Running stage 'fingerprint':", "Running stage 'ensemble':"], out
    shown = sh("dvc exp show --md --no-pager", repo)
    assert "oof_acc.ensemble" in shown and "dvclive/vit/metrics.json:valid_acc" in shown
    header = shown.splitlines()[0]  # no memory profile, no per-split copies, no batch sizes among the metrics
    assert not any(word in header for word in ("metrics/profile", "peak_gb", "split0/", ":micro_batch")), header


def test_fitted_weights_rerun_only_the_ensemble_and_beat_the_params_weights(repo):
    out = sh("dvc exp run -S ensemble.weights=fit", repo)
    ran = [line for line in out.splitlines() if line.startswith("Running stage")]
    assert ran == ["Running stage 'check':", "Running stage 'fingerprint':", "Running stage 'ensemble':"], out
    metrics = json.loads((repo / "metrics" / "ensemble.json").read_text())
    fit, par = metrics["fit"], metrics["params"]
    assert fit["oof_loss"] <= par["oof_loss"] and metrics["weights"] == fit["weights"]
    losses = {name: loss for name, loss in metrics["oof_loss"].items() if name != "ensemble"}
    weaker = max(losses, key=losses.get)
    assert fit["weights"][weaker] < par["weights"][weaker], metrics
    assert fit["cv_loss"] > 0 and 0 <= fit["cv_acc"] <= 1
    shown = sh("dvc exp show --md --no-pager", repo)
    assert "fit.cv_loss" in shown and "params.oof_loss" in shown and "ensemble.weights" in shown
