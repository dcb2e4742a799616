"""The real train -> TTA -> ensemble path on a tiny competition: fast enough for the default test run."""

import shutil

import pandas as pd
import pytest
import torch

from paddy.checkpoint import load_checkpoint
from paddy.ensemble import build_ensemble
from paddy.fileio import write_csv
from paddy.fit import train_model
from paddy.prepare import prepare_competition, read_labels
from paddy.split import make_splits
from paddy.train import fine_tune
from paddy.tta import predict_model

CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def prepared(competition, tmp_path_factory):
    raw, truth = competition
    out = tmp_path_factory.mktemp("prep")
    index, _ = prepare_competition(raw, out / "prepared", max_size=64, workers=1)
    return out, index


def test_train_tta_ensemble(prepared, competition, params, tmp_path):
    out, index = prepared
    raw, truth = competition
    train = index[index.split == "train"]
    write_csv(make_splits(train, "bag", 1, 0.2, 0), tmp_path / "split.csv")
    epochs = []
    params["models"].pop("vit")  # one model keeps this fast; the ensemble still weighs it
    results = train_model(
        "resnet",
        params,
        out / "prepared",
        tmp_path / "split.csv",
        tmp_path / "models" / "resnet",
        8,
        CPU,
        "fp32",
        on_epoch=lambda s, e, m: epochs.append((s, e, m)),
    )
    assert len(results) == 1 and [(s, e) for s, e, _ in epochs] == [(0, 0)]
    assert {"train_loss", "valid_loss", "valid_acc", "train_time_s"} <= set(results[0])
    model, meta = load_checkpoint(tmp_path / "models" / "resnet", "v0")
    assert meta["labels"] == read_labels(out / "prepared") and meta["micro_batch"] == 8

    test, oof = predict_model(
        params, index, out / "prepared", tmp_path / "split.csv", tmp_path / "models" / "resnet", CPU, "fp32"
    )
    assert len(test) == 12 and len(oof) == 12  # 20% of 60 validate
    assert test.iloc[:, 1:].sum(axis=1).round(4).eq(1).all()
    preds = tmp_path / "preds" / "resnet"
    preds.mkdir(parents=True)
    test.to_csv(preds / "test_probs.csv", index=False)
    oof.to_csv(preds / "oof_probs.csv", index=False)
    sample = pd.read_csv(raw / "sample_submission.csv", dtype=str)
    sub, metrics, confusion = build_ensemble(
        params["models"],
        meta["labels"],
        sample,
        tmp_path / "preds",
        train[["image_id", "label"]],
        pd.read_csv(truth, dtype=str),
        fallback_label="normal",
    )
    assert sub.image_id.tolist() == sample.image_id.tolist()
    assert set(metrics["oof_acc"]) == {"resnet", "ensemble"} and 0 <= metrics["test_acc"]["ensemble"] <= 1
    assert len(confusion) == 12


def test_training_is_deterministic_on_cpu(prepared, params, tmp_path):
    out, index = prepared
    write_csv(make_splits(index[index.split == "train"], "bag", 1, 0.2, 0), tmp_path / "split.csv")
    runs = []
    for name in ("a", "b"):
        res = train_model("resnet", params, out / "prepared", tmp_path / "split.csv", tmp_path / name, 8, CPU, "fp32")
        runs.append(res[0]["valid_loss"])
    assert runs[0] == runs[1]


def test_fine_tune_freezes_the_body_first(prepared, params, tmp_path):
    """frozen_epochs: only the head changes; then every layer trains, earliest at lr/2/lr_mult."""
    import timm

    from paddy.data import ImageDataset, create_loader, create_transforms
    from paddy.models import discriminative_param_groups

    out, index = prepared
    torch.manual_seed(0)
    model = timm.create_model("test_vit", num_classes=10)
    cfg = params["models"]["vit"]
    train_tf, eval_tf = create_transforms(model, cfg, params["train"])
    train = index[index.split == "train"]
    ds = ImageDataset(out / "prepared", train.path[:32], [0] * 32, cfg["item_size"], cfg["item_method"], train_tf)
    loader = create_loader(ds, 16, shuffle=True, drop_last=True)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    cfg_train = dict(params["train"], frozen_epochs=1, epochs=1, lr_mult=100)
    seen = []

    def on_epoch(e, m):
        changed = {k for k, v in model.state_dict().items() if not torch.equal(v, before[k])}
        seen.append(changed)

    fine_tune(model, loader, create_loader(ds, 16), cfg_train, 8, CPU, on_epoch=on_epoch)
    assert seen[0] == {"head.weight", "head.bias"}  # frozen epoch: the head only
    assert "patch_embed.proj.weight" in seen[1]  # then the body too
    scales = sorted({g["lr_scale"] for g in discriminative_param_groups(model, 0.01, 100)})
    assert scales[0] == pytest.approx(0.01) and scales[-1] == 1.0
    shutil.rmtree(tmp_path, ignore_errors=True)
