"""The real train -> TTA -> ensemble path on a tiny competition: fast enough for the default test run."""

import numpy as np
import pandas as pd
import pytest
import torch
from helpers.data import prepared_work
from helpers.training import train

from paddy.data.prepare import read_labels
from paddy.predict.ensemble import build_ensemble
from paddy.predict.tables import write_table
from paddy.predict.tta import predict_model
from paddy.settings import parse_settings
from paddy.training.checkpoints import load_checkpoint
from paddy.training.run import checkpoint_run

CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def prepared(competition, tmp_path_factory):
    out = tmp_path_factory.mktemp("prep")
    return out, prepared_work(competition, out)


def test_train_tta_ensemble(prepared, competition, params, tmp_path):
    out, index = prepared
    raw, truth = competition
    train_rows = index[index.split == "train"]
    epochs = []
    params["models"].pop("vit")  # one model keeps this fast; the ensemble still weighs it
    on_epoch = lambda s, e, m: epochs.append((s, e, m))  # noqa: E731
    results = train(parse_settings(params), out, tmp_path / "models" / "resnet", (8, 24), on_epoch=on_epoch)
    assert len(results) == 1 and [(s, e) for s, e, _ in epochs] == [(0, 0)]
    assert {"train_loss", "valid_loss", "valid_acc", "train_time_s", "images_per_s"} <= set(results[0])
    model, meta = load_checkpoint(tmp_path / "models" / "resnet", "v0")
    assert meta["labels"] == read_labels(out / "prepared") and (meta["micro_batch"], meta["eval_batch"]) == (8, 24)
    assert meta["head"] == "fastai" and isinstance(model, torch.nn.Sequential)

    test, oof = predict_model(
        checkpoint_run(
            parse_settings(params), tmp_path / "models" / "resnet", CPU, out / "prepared", out / "split.csv"
        ),
        tmp_path / "models" / "resnet",
    )
    assert len(test) == 12 and len(oof) == 12  # 20% of 60 validate
    assert np.allclose(test.probs.sum(1), 1, atol=1e-4)
    for kind, table in (("test", test), ("oof", oof)):
        write_table(tmp_path / "preds" / "resnet", kind, table.ids, table.probs, table.classes)
    sample = pd.read_csv(raw / "sample_submission.csv", dtype=str)
    sub, metrics, confusion = build_ensemble(
        {name: model.weight for name, model in parse_settings(params).models.items()},
        meta["labels"],
        sample,
        tmp_path / "preds",
        (train_rows[["image_id", "label"]], pd.read_csv(truth, dtype=str)),
        parse_settings(params),
    )
    assert sub.image_id.tolist() == sample.image_id.tolist()
    assert set(metrics["oof_acc"]) == {"resnet", "ensemble"} and 0 <= metrics["test_acc"]["ensemble"] <= 1
    assert len(confusion) == 12


def test_training_and_tta_are_deterministic_on_cpu(prepared, params, tmp_path):
    out, index = prepared
    runs = []
    for name in ("a", "b"):
        res = train(parse_settings(params), out, tmp_path / name)
        test, _ = predict_model(
            checkpoint_run(parse_settings(params), tmp_path / name, CPU, out / "prepared", out / "split.csv"),
            tmp_path / name,
        )
        runs.append((res[0]["valid_loss"], res[0]["train_loss"], np.asarray(test.probs)))
    assert runs[0][:2] == runs[1][:2] and (runs[0][2] == runs[1][2]).all()


def test_fine_tune_freezes_the_body_then_trains_everything_with_a_fresh_adam(prepared, params, tmp_path):
    """frozen_epochs: the head and the body's norm layers change, nothing else; then every layer trains, and Adam
    starts the unfrozen phase afresh (fastai clears the optimizer state on unfreeze)."""
    out, _ = prepared
    params["train"].update(frozen_epochs=1, epochs=1, lr_mult=100)
    snapshots, adam_steps = {}, []

    def on_step(split, epoch, step, model, optimizer):
        state = {k: v.clone() for k, v in model.state_dict().items()}
        snapshots.setdefault(epoch, []).append(state)
        if step == 0:
            adam_steps.append(int(optimizer.state[next(model[1].parameters())]["step"]))

    train(parse_settings(params), out, tmp_path / "m", on_step=on_step)
    final = load_checkpoint(tmp_path / "m", "v0")[0].state_dict()
    frozen_start, frozen_end = snapshots[0][0], snapshots[0][-1]  # after the frozen epoch's first and last steps
    changed = {k for k in final if not torch.equal(frozen_start[k], frozen_end[k]) and "num_batches" not in k}
    body = {k for k in changed if k.startswith("0.")}
    norms = {f"0.{n}." for n, m in load_checkpoint(tmp_path / "m", "v0")[0][0].named_modules()
             if isinstance(m, torch.nn.BatchNorm2d)}  # fmt: skip
    assert body and all(any(k.startswith(n) for n in norms) for k in body), body  # the body's norm layers only
    assert any(k.startswith("1.") for k in changed)  # the head learned
    assert "0.model.conv1.0.weight" not in changed
    assert not torch.equal(final["0.model.conv1.0.weight"], frozen_end["0.model.conv1.0.weight"])  # then the body
    assert adam_steps == [1, 1]  # the first step of each phase is Adam's first
