"""The whole DVC pipeline, as a user runs it, on a shrunk copy of the repository (slow: minutes on 2 cores)."""

import json
from pathlib import Path

import pandas as pd
import pytest
from helpers.pipeline import copy_finished_run, sh

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def repo(tmp_path_factory, finished_run):
    """This module's own copy of the session's finished run (its tests change params and rerun)."""
    return copy_finished_run(finished_run, tmp_path_factory.mktemp("repo"))


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
    # learning curves and memory (x2 models); the report's 5 pictures and each top loss on its own
    top_losses = len(list((repo / "plots" / "report" / "top_losses").glob("*.png")))
    assert top_losses == 16 and "<script" not in page and page.count("<img") == 4 + 5 + top_losses, page
    # The report's figures are the ensemble's: its confusion counts are the ensemble stage's pairs of labels.
    pairs = pd.read_csv(repo / "metrics" / "confusion.csv").value_counts().to_dict()
    counts = pd.read_csv(repo / "metrics" / "report" / "confusion.csv").set_index("actual")
    assert {(a, p): n for (a, p), n in counts.stack().items() if n} == pairs
    sh("git add -A && git -c user.name=t -c user.email=t@t commit -qm run", repo)


def test_changing_a_weight_reruns_only_the_ensemble_and_its_report(repo):
    out = sh("dvc exp run -S models.vit.weight=1", repo)
    ran = [line for line in out.splitlines() if line.startswith("Running stage")]
    expected = ["Running stage 'check':", "Running stage 'fingerprint':", "Running stage 'ensemble':"]
    assert ran == expected + ["Running stage 'pseudo':", "Running stage 'report':"], out  # pseudo: off, a second
    shown = sh("dvc exp show --md --no-pager", repo)
    assert "oof_acc.ensemble" in shown and "dvclive/vit/metrics.json:valid_acc" in shown
    header = shown.splitlines()[0]  # no memory profile, no per-split copies, no batch sizes among the metrics
    assert not any(word in header for word in ("metrics/profile", "peak_gb", "split0/", ":micro_batch")), header


def test_fitted_weights_rerun_only_the_ensemble_and_beat_the_params_weights(repo):
    out = sh("dvc exp run -S ensemble.weights=fit", repo)
    ran = [line for line in out.splitlines() if line.startswith("Running stage")]
    expected = ["Running stage 'check':", "Running stage 'fingerprint':", "Running stage 'ensemble':"]
    assert ran == expected + ["Running stage 'pseudo':", "Running stage 'report':"], out  # pseudo: off, a second
    metrics = json.loads((repo / "metrics" / "ensemble.json").read_text())
    fit, par = metrics["fit"], metrics["params"]
    assert fit["oof_loss"] <= par["oof_loss"] and metrics["weights"] == fit["weights"]
    losses = {name: loss for name, loss in metrics["oof_loss"].items() if name != "ensemble"}
    weaker = max(losses, key=losses.get)
    assert fit["weights"][weaker] < par["weights"][weaker], metrics
    assert fit["cv_loss"] > 0 and 0 <= fit["cv_acc"] <= 1
    shown = sh("dvc exp show --md --no-pager", repo)
    assert "fit.cv_loss" in shown and "params.oof_loss" in shown and "ensemble.weights" in shown


def test_a_report_setting_reruns_the_report_alone(repo):
    """`report.*` edits rerun the report and nothing it reads: the ensemble's outputs stay byte for byte, and `dvc exp
    show` lists the per-class recall."""
    sh("dvc repro", repo)  # up to date with the workspace's params, whatever the tests before left there
    kept = ["submission.csv", "metrics/ensemble.json", "metrics/confusion.csv"]
    before = {name: (repo / name).read_bytes() for name in kept}
    out = sh("dvc exp run -S report.top_losses=4", repo)
    ran = [line for line in out.splitlines() if line.startswith("Running stage")]
    assert ran == ["Running stage 'check':", "Running stage 'fingerprint':", "Running stage 'report':"], out
    assert {name: (repo / name).read_bytes() for name in kept} == before
    assert len(list((repo / "plots" / "report" / "top_losses").glob("*.png"))) == 4
    shown = sh("dvc exp show --md --no-pager --keep 'recall' --drop '.*'", repo)
    assert "recall.ensemble.blast" in shown, shown


# Issue 27's techniques at once: progressive resizing (half size, then full), recipe sgdr (two one-epoch cycles per
# stage) with a snapshot, mixup, CutMix and label smoothing, weight averaging (SWA), and pseudo-labels
TECHNIQUES = (
    "-S train.recipe=sgdr -S train.cycle_len=1 -S train.cycle_mult=1 -S train.epochs=2 -S train.snapshots=true "
    "-S 'train.progressive.scales=[0.5]' -S 'train.progressive.epochs=[2]' -S train.mixup=0.4 -S train.cutmix=1.0 "
    "-S train.label_smoothing=0.1 -S train.swa_epochs=1"
)


def test_every_technique_trains_under_dvc_exp_run_and_pseudo_labels_a_second_round(repo):
    """`dvc exp run -S ...` with every technique of docs/techniques.md on (then the EMA in SWA's place, which it
    refuses beside): profiled at both sizes, trained, TTA'd with each split's snapshot, ensembled, then the pseudo
    stage trains round 2 of both models on the training rows and the kept test images, and the report counts them."""
    sh("dvc repro", repo)  # up to date with the workspace's params, whatever the tests before left there
    out = sh(f"dvc exp run {TECHNIQUES} -S pseudo.enabled=true -S pseudo.threshold=0.1", repo)  # every image kept
    ran = [line for line in out.splitlines() if line.startswith("Running stage")]
    expected = ["check", "fingerprint", "profile@resnet", "profile@vit", "train@resnet", "train@vit", "tta@resnet",
                "tta@vit", "ensemble", "pseudo", "report"]  # fmt: skip
    assert sorted(ran) == sorted(f"Running stage '{name}':" for name in expected), out
    for name in ("resnet", "vit"):
        profile = json.loads((repo / "data" / "profile" / f"{name}.json").read_text())
        assert len(profile["sizes"]) == 2 and profile["sizes"][-1] == profile["size"], profile
        meta = json.loads((repo / "data" / "models" / name / "meta.json").read_text())
        assert (
            meta["snapshots"] == {"v0": ["snapshot1"]}
            and (repo / "data" / "models" / name / "v0.snapshot1.safetensors").exists()
        )
        run = json.loads((repo / "dvclive" / name / "run.json").read_text())
        assert len(run["splits"]) == 1 and 0 <= run["splits"][0]["valid_acc"] <= 1
        epochs = (repo / "dvclive" / name / "plots" / "metrics" / "split0" / "valid_acc.tsv").read_text().splitlines()
        assert len(epochs) == 1 + 2 + 2, epochs  # a header, then two epochs at half size and two at the full size
    metrics = json.loads((repo / "metrics" / "pseudo.json").read_text())
    labels = pd.read_csv(repo / "data" / "pseudo" / "labels.csv")
    truth = pd.read_csv(repo / "data" / "truth.csv").set_index("image_id").label
    assert metrics["enabled"] and metrics["threshold"] == 0.1 and metrics["kept"]["total"] == len(labels) == 16
    assert metrics["wrong"]["total"] == int((labels.image_id.map(truth) != labels.label).sum())
    assert set(metrics["oof_score"]) == {"round1", "round2"} and set(metrics["test_score"]) == {"round1", "round2"}
    sub = pd.read_csv(repo / "data" / "pseudo" / "submission.csv")
    sample = pd.read_csv(repo / "data" / "raw" / "sample_submission.csv")
    assert sub.image_id.tolist() == sample.image_id.tolist() and sub.label.notna().all()
    report = json.loads((repo / "metrics" / "report.json").read_text())
    assert report["pseudo_kept"] == metrics["kept"] and report["pseudo_wrong"] == metrics["wrong"]
    assert not (repo / "data" / "resume" / "pseudo").exists()  # round 2 finished: its checkpoints are gone
    shown = sh("dvc exp show --md --no-pager --keep 'kept.total|round2' --drop '.*'", repo)
    assert "kept.total" in shown, shown
    sh("dvc exp run -S train.swa_epochs=0 -S train.ema=true -S pseudo.enabled=false", repo)
    assert json.loads((repo / "metrics" / "pseudo.json").read_text()) == {"enabled": False}
    for name in ("resnet", "vit"):
        assert json.loads((repo / "data" / "profile" / f"{name}.json").read_text())["sizes"]
        assert 0 <= json.loads((repo / "dvclive" / name / "metrics.json").read_text())["valid_acc"] <= 1
