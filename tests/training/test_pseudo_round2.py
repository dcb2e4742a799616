"""Pseudo-labels' second round (paddy.training.model_data.with_pseudo, the pseudo stage): each split trains on its
training rows and its own pseudo-labelled test images, validates on its validation rows alone; the stage switched
off only says so, without torch; on, it trains, predicts and mixes round 2, and a kill mid-round-2 resumes to the
uninterrupted result."""

import json
import runpy
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from helpers.data import prepared_work
from helpers.pipeline import ROOT
from helpers.settings import shrunk_params

from paddy.files import write_json
from paddy.predict.pseudo import pseudo_labels, split_test_kind
from paddy.predict.tables import write_table
from paddy.predict.tta import predict_model
from paddy.settings import parse_settings
from paddy.training.checkpoints import read_meta
from paddy.training.model_data import create_model_data, with_pseudo
from paddy.training.run import checkpoint_run

CPU = torch.device("cpu")
SPLITS = ["v0", "v1"]


@pytest.fixture(scope="module")
def workspace(competition, tmp_path_factory):
    """A prepared competition of two bags, params of one model (a checkpoint after every step, its micro-batch
    the memory profile's), and a round 1 to pseudo-label from: its probability tables (the true class made likely,
    so confident rows are mostly right), ensemble weights and submission."""
    work = tmp_path_factory.mktemp("pseudo")
    index = prepared_work(competition, work, n_splits=2)
    params = shrunk_params()
    params["train"].update(checkpoint_minutes=1e-9, eval_batch=32)
    params["models"] = {"resnet": {**params["models"]["resnet"], "micro_batch": "auto"}}
    params["pseudo"].update(enabled=True, max_error=0.3)
    (work / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    labels = json.loads((work / "prepared" / "labels.json").read_text())
    truth = pd.read_csv(competition[1], dtype=str)
    split = pd.read_csv(work / "split.csv", dtype={"image_id": str})
    rng = np.random.default_rng(0)

    def table(kind, ids, actual):
        logits = rng.normal(size=(len(ids), len(labels)))
        logits[np.arange(len(ids)), pd.Index(labels).get_indexer(actual)] += rng.uniform(0, 6, len(ids))
        p = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
        write_table(work / "preds" / "resnet", kind, ids, p, labels)

    valid = split[split[SPLITS].sum(axis=1) > 0]
    table("oof", valid.image_id.to_numpy(), valid.label)
    test = index[index.split == "test"].merge(truth, on="image_id", suffixes=("_", ""))
    for kind in ["test"] + [split_test_kind(s, SPLITS) for s in SPLITS]:
        table(kind, test.image_id.to_numpy(), test.label)
    write_json(work / "ensemble.json", {"weights": {"resnet": 1.0}, "metric": "accuracy"})
    shutil.copy(competition[0] / "sample_submission.csv", work / "submission.csv")
    write_json(work / "profile" / "resnet.batches.json", {"micro_batch": 8, "device": "estimate"})  # its choice
    return work


def test_round_two_trains_on_the_pseudo_rows_and_validates_on_the_table_alone(workspace):
    settings = parse_settings(yaml.safe_load((workspace / "params.yaml").read_text()))
    data = create_model_data(
        settings.models["resnet"], settings.train, workspace / "prepared", workspace / "split.csv", CPU
    )
    labels = data.vocab["label"]
    kept = pseudo_labels(workspace / "preds", workspace / "ensemble.json", labels, SPLITS, 0.2)
    assert set(kept.split) == set(SPLITS) and kept.image_id.nunique() < len(kept)  # some images kept by both
    round2 = with_pseudo(data, kept)
    _, test_loader = data.test_loader(64)
    test_ids = data.index[(data.index.split == "test") & data.index.ok].image_id.tolist()
    test_items = next(iter(test_loader))[0]
    for split in SPLITS:
        train, valid = data.rows(split)
        train2, valid2 = round2.rows(split)
        assert np.array_equal(valid2, valid) and np.array_equal(train2[: len(train)], train)
        extra = train2[len(train) :]
        mine = kept[kept.split == split]
        assert len(extra) == len(mine) and (extra >= len(data.table)).all()  # never a validation row
        items, targets = next(iter(round2.loader(extra, 64)))
        assert targets.tolist() == [labels.index(c) for c in mine.label]
        expected = test_items[[test_ids.index(i) for i in mine.image_id]]
        assert torch.equal(items, expected)  # each pseudo row is its test image
        table_items, table_targets = next(iter(round2.loader(train, 64)))
        assert torch.equal(table_targets, torch.as_tensor(data.targets[train]))
        assert torch.equal(table_items, next(iter(data.loader(train, 64)))[0])


def stage_command(work, run, resume="resume"):
    return [
        sys.executable, str(ROOT / "stages" / "pseudo.py"), str(work / "prepared"), str(work / "split.csv"),
        str(work / "preds"), str(work / "ensemble.json"), str(work / "truth.csv"), str(work / "raw"),
        str(work / "submission.csv"), str(work / run / "pseudo"), str(work / run / "pseudo.json"),
        "--profile-dir", str(work / "profile"), "--resume-dir", str(work / run / resume),
    ]  # fmt: skip


@pytest.fixture(scope="module")
def stage_work(workspace, competition):
    """The workspace with the competition's folder and truth where the stage's command names them."""
    if not (workspace / "raw").exists():
        shutil.copytree(competition[0], workspace / "raw")
        shutil.copy(competition[1], workspace / "truth.csv")
    return workspace


def run_to_end(work, run):
    out = subprocess.run(stage_command(work, run), cwd=work, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    return out.stdout + out.stderr


def test_switched_off_it_writes_its_note_without_torch(stage_work, tmp_path):
    params = yaml.safe_load((stage_work / "params.yaml").read_text())
    params["pseudo"]["enabled"] = False
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    argv = stage_command(stage_work, tmp_path)[1:]
    code = (
        f"import sys, runpy; sys.argv = {argv!r}\n"
        "try:\n    runpy.run_path(sys.argv[0], run_name='__main__')\nfinally:\n    print('torch' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and out.stdout.strip().endswith("False"), out.stdout + out.stderr
    assert json.loads((tmp_path / "pseudo.json").read_text()) == {"enabled": False}
    assert pd.read_csv(tmp_path / "pseudo" / "labels.csv").empty


@pytest.fixture(scope="module")
def reference(stage_work):
    run_to_end(stage_work, "reference")
    assert not (stage_work / "reference" / "resume").exists()  # removed once round 2 is written
    return stage_work / "reference"


def test_round_two_trains_predicts_and_mixes(stage_work, reference):
    metrics = json.loads((reference / "pseudo.json").read_text())
    labels = json.loads((stage_work / "prepared" / "labels.json").read_text())
    t = metrics["threshold"]
    kept = pd.read_csv(reference / "pseudo" / "labels.csv", dtype=str)
    assert kept.drop(columns="confidence").equals(
        pseudo_labels(stage_work / "preds", stage_work / "ensemble.json", labels, SPLITS, t)
        .drop(columns="confidence")
        .astype(str)
    )
    truth = pd.read_csv(stage_work / "truth.csv", dtype=str).set_index("image_id").label
    wrong = kept[kept.image_id.map(truth) != kept.label]
    assert metrics["kept"]["total"] == len(kept) > 0 and metrics["wrong"]["total"] == len(wrong)
    assert metrics["expected_error"] <= 0.3 and metrics["threshold_from"].startswith("auto")
    for split in SPLITS:
        assert (reference / "pseudo" / "models" / "resnet" / f"{split}.safetensors").is_file()
    assert (
        read_meta(reference / "pseudo" / "models" / "resnet")["micro_batch"] == 8
    )  # params say auto: the memory profile's
    sub = pd.read_csv(reference / "pseudo" / "submission.csv")
    sample = pd.read_csv(stage_work / "raw" / "sample_submission.csv")
    assert sub.iloc[:, 0].tolist() == sample.iloc[:, 0].tolist() and sub.label.isin(labels).all()
    round2 = json.loads((reference / "pseudo" / "ensemble.json").read_text())
    oof = pd.read_csv(reference / "pseudo" / "preds" / "resnet" / "oof_ids.csv", dtype=str).image_id
    assert set(oof) <= set(pd.read_csv(stage_work / "split.csv", dtype=str).image_id)  # no test image validates
    assert "ensemble" in round2["oof_score"]


def weights(run):
    return {p.name: p.read_bytes() for p in sorted((run / "pseudo" / "models" / "resnet").glob("*.safetensors"))}


def test_a_kill_in_round_two_resumes_to_the_uninterrupted_result(stage_work, reference):
    run = stage_work / "killed"
    proc = subprocess.Popen(stage_command(stage_work, "killed"), cwd=stage_work, stdout=subprocess.DEVNULL)
    deadline = time.time() + 300
    while not list((run / "resume" / "resnet").glob("*/v1.pt")) and time.time() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL and not (run / "pseudo.json").exists()
    log = run_to_end(stage_work, "killed")
    assert "v0.pt: finished earlier" in log and "resumed at epoch" in log
    assert weights(run) == weights(reference) and len(weights(run)) == 2


def test_the_tta_tables_of_each_split_average_to_the_test_table(stage_work, reference):
    """The tta stage's test_<split> tables, which each split's pseudo-labels come from, are its own models' passes:
    their mean is the test table (here of round 2's two-split model)."""
    settings = parse_settings(yaml.safe_load((stage_work / "params.yaml").read_text()))
    ckpt = reference / "pseudo" / "models" / "resnet"
    run = checkpoint_run(settings, ckpt, CPU, stage_work / "prepared", stage_work / "split.csv")
    test, _, per_split = predict_model(run, ckpt, each_split=True)
    assert list(per_split) == SPLITS and all(np.array_equal(t.ids, test.ids) for t in per_split.values())
    assert not np.allclose(per_split["v0"].probs, per_split["v1"].probs)
    assert np.allclose((per_split["v0"].probs + per_split["v1"].probs) / 2, test.probs, atol=1e-6)
    written = pd.read_csv(reference / "pseudo" / "preds" / "resnet" / "test_ids.csv", dtype=str).image_id
    assert np.allclose(np.load(reference / "pseudo" / "preds" / "resnet" / "test_probs.npy"), test.probs)
    assert written.tolist() == list(test.ids)


def test_nothing_confident_enough_makes_round_two_round_one(stage_work, tmp_path, monkeypatch):
    params = yaml.safe_load((stage_work / "params.yaml").read_text())
    params["pseudo"]["threshold"] = 0.999999  # above every mixed probability of the fixture's tables
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    round1 = {"weights": {"resnet": 1.0}, "metric": "accuracy", "oof_score": {"ensemble": 0.25}}
    write_json(tmp_path / "ensemble.json", round1)
    argv = stage_command(stage_work, tmp_path)[2:]
    argv[3] = str(tmp_path / "ensemble.json")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "argv", ["stages/pseudo.py", *argv])
    previous = signal.getsignal(signal.SIGTERM)  # the stage's main() installs its own
    try:
        runpy.run_path(str(ROOT / "stages" / "pseudo.py"), run_name="__main__")  # in this process: no training
    finally:
        signal.signal(signal.SIGTERM, previous)
    metrics = json.loads((tmp_path / "pseudo.json").read_text())
    assert metrics["kept"]["total"] == 0 and metrics["oof_score"] == {"round1": 0.25, "round2": 0.25}
    out = tmp_path / "pseudo"
    assert (out / "submission.csv").read_bytes() == (stage_work / "submission.csv").read_bytes()
    assert json.loads((out / "ensemble.json").read_text()) == round1 and not (out / "models").exists()
