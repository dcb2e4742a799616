"""`paddy predict`: new photos through the same preprocessing, models, TTA and ensemble weights as the test set.

One tiny trained pipeline (two test_resnet models of 1 epoch over two bags, one also predicting the variety, with
TTA of one augmented pass), built once for the module by the library's own functions, laid out as `dvc repro`
leaves it."""

import json
import shutil
from dataclasses import replace

import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from helpers.data import prepared_work
from helpers.pipeline import copy_finished_run, sh
from helpers.settings import shrunk_params
from helpers.training import train
from PIL import Image

import paddy.training.run
from paddy.commands import main
from paddy.data.competition import read_sample_submission
from paddy.errors import PaddyError
from paddy.files import write_csv, write_json
from paddy.predict.photos import (
    Predictions,
    check_out,
    find_photos,
    photo_thresholds,
    predict_photos,
    prepare_photos,
    tag_lines,
    tag_table,
    top_table,
)
from paddy.predict.tables import Stack, read_table, read_tables, write_table
from paddy.predict.tta import predict_model
from paddy.settings import load_settings, parse_settings
from paddy.training.run import checkpoint_run

CPU = torch.device("cpu")
WEIGHTS = {"resnet": 0.25, "crop": 0.75}


def tiny_params():
    p = shrunk_params()
    p["tta"].update(n=1, beta=0.25)
    resnet = p["models"]["resnet"]
    p["models"] = {
        "resnet": dict(resnet, targets=["label", "variety"]),
        "crop": dict(resnet, item_size=[40, 40], item_method="crop", size=[32, 32]),
    }
    return p


@pytest.fixture(scope="module")
def pipeline(competition, tmp_path_factory):
    """A workspace after `dvc repro`: params.yaml, data/prepared, data/split.csv, data/models/<model>,
    data/preds/<model>/test_probs.npy (written as the tta stage writes it) and metrics/ensemble.json."""
    work = tmp_path_factory.mktemp("work")
    params = tiny_params()
    (work / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    assert params["prepare"]["max_size"] == 64  # what prepared_work pre-resizes to
    prepared_work(competition, work / "data", n_splits=2)
    settings = parse_settings(params)
    prepared, split = work / "data" / "prepared", work / "data" / "split.csv"
    for name in params["models"]:
        ckpt = work / "data" / "models" / name
        train(settings, work / "data", ckpt, (8, 5), name)  # eval batch 5: 12 test images in 3
        test, _ = predict_model(checkpoint_run(settings, ckpt, CPU, prepared, split), ckpt)
        write_table(work / "data" / "preds" / name, "test", test.ids, test.probs, test.classes)
    write_json(work / "metrics" / "ensemble.json", {"weights": WEIGHTS})
    return work, settings


def test_photos_get_the_probabilities_of_the_pipelines_test_set(pipeline, competition, monkeypatch):
    """The raw test images, in the test set's order: each model's TTA probabilities are the tta stage's
    test table, and their mix is the ensemble's, exactly, augmented passes included (their draws are seeded per
    batch position, which the same order and eval batch reproduce)."""
    work, settings = pipeline
    monkeypatch.chdir(work)
    sample = read_sample_submission(competition[0], load_settings().competition)
    files = [competition[0] / "test_images" / i for i in sample.image_id]
    pred = predict_photos(files, settings, CPU)
    assert pred.errors == {} and list(pred.models) == list(WEIGHTS)
    tables = {name: read_table(work / "data" / "preds", name, "test") for name in WEIGHTS}
    for name, table in tables.items():
        labels = table.classes
        assert table.ids.tolist() == sample.image_id.tolist()
        np.testing.assert_allclose(pred.models[name][labels].to_numpy(float), table.probs, atol=1e-7, rtol=0)
    expected = Stack(tables, tables["resnet"].ids).mix(list(WEIGHTS.values()))
    np.testing.assert_allclose(pred.labels[labels].to_numpy(float), expected, atol=1e-7, rtol=0)
    assert pred.labels.image_id.tolist() == [str(f) for f in files]
    # the variety: the one model that predicts it, a distribution over the competition's varieties
    variety = pred.others["variety"]
    varieties = variety.columns[1:]
    assert len(varieties) >= 2 and np.allclose(variety[varieties].sum(axis=1), 1, atol=1e-5)


def test_without_tta_a_photo_gets_its_test_probabilities_whatever_the_other_photos(pipeline, competition):
    """The plain pass alone (tta.n 0) depends on nothing but the photo: the test images in reverse order, and one
    alone, get the test set's probabilities."""
    work, settings = pipeline
    plain = parse_settings({**tiny_params(), "tta": {"n": 0, "beta": 0.25}})
    prepared, split, ckpt = work / "data" / "prepared", work / "data" / "split.csv", work / "data" / "models" / "crop"
    test, _ = predict_model(checkpoint_run(plain, ckpt, CPU, prepared, split), ckpt)
    files = [competition[0] / "test_images" / i for i in test.ids[::-1]]
    models = work / "data" / "models"
    only = ["crop"]
    pred = predict_photos(files, plain, CPU, models, work / "metrics" / "ensemble.json", only)
    labels = test.classes
    np.testing.assert_allclose(pred.labels[labels].to_numpy(float), test.probs[::-1], atol=1e-5, rtol=0)
    one = predict_photos(files[:1], plain, CPU, models, work / "metrics" / "ensemble.json", only)
    np.testing.assert_allclose(one.labels[labels].to_numpy(float), test.probs[-1:], atol=1e-5, rtol=0)
    assert pred.others == {}  # crop predicts no variety


@pytest.fixture
def photos(pipeline, competition, tmp_path):
    """A folder of three test photos (one in a subfolder), a corrupt .jpg and a text file beside them, and a loose
    photo as a large PNG."""
    test_dir = competition[0] / "test_images"
    ids = sorted(p.name for p in test_dir.iterdir())[:4]
    folder = tmp_path / "field"
    (folder / "day2").mkdir(parents=True)
    shutil.copy(test_dir / ids[0], folder / ids[0])
    shutil.copy(test_dir / ids[1], folder / ids[1])
    shutil.copy(test_dir / ids[2], folder / "day2" / ids[2])
    (folder / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    (folder / "notes.txt").write_text("taken at dawn")
    with Image.open(test_dir / ids[3]) as im:
        im.resize((600, 800)).save(tmp_path / "loose.png")
    return folder, tmp_path / "loose.png"


def test_predict_writes_top_labels_and_variety_and_lists_unreadable_photos(pipeline, photos, monkeypatch, capsys):
    work, settings = pipeline
    folder, loose = photos
    monkeypatch.chdir(work)
    missing = folder.parent / "gone.jpg"
    assert main(["predict", str(folder), str(loose), str(missing), "--top", "2", "--out", "out/preds.csv"]) == 0
    out = pd.read_csv(work / "out" / "preds.csv", keep_default_na=False)
    columns = ["path", "label_1", "prob_1", "label_2", "prob_2", "variety", "variety_prob", "error"]
    assert list(out.columns) == columns
    in_folder = sorted([*folder.glob("*.jpg"), *folder.glob("day2/*.jpg")])  # the text file left out
    assert len(in_folder) == 4 and out.path.tolist() == [str(p) for p in [*in_folder, loose, missing]]
    bad = out[out.error != ""]
    assert bad.path.tolist() == [str(folder / "broken.jpg"), str(missing)]
    assert (bad.label_1 == "").all() and "not found" in bad.error.iloc[1]
    good = out[out.error == ""]
    assert len(good) == 4 and (good.prob_1.astype(float) >= good.prob_2.astype(float)).all()
    assert (good.label_1 != good.label_2).all() and (good.variety_prob.astype(float) > 0).all()
    err = capsys.readouterr().err
    assert "broken.jpg" in err and "gone.jpg" in err

    # The table is the library's predictions, ranked: the same photos, the same probabilities
    pred = predict_photos([folder, loose, missing], settings, CPU)
    labels = np.asarray(pred.labels.columns[1:])
    p = pred.labels[labels].to_numpy(float)
    assert good.label_1.tolist() == labels[p.argmax(1)].tolist()
    np.testing.assert_allclose(good.prob_1.astype(float), p.max(1), atol=1e-6)
    assert top_table(pred, 2).path.tolist() == out.path.tolist()

    # A rerun may overwrite its own table, never another file
    (work / "submission.csv").write_text("image_id,label\n1.jpg,blast\n")
    assert main(["predict", str(loose), "--out", "out/preds.csv", "--top", "1"]) == 0
    assert pd.read_csv(work / "out" / "preds.csv").columns.tolist()[:3] == ["path", "label_1", "prob_1"]
    assert main(["predict", str(loose), "--out", "submission.csv"]) == 2
    assert (work / "submission.csv").read_text() == "image_id,label\n1.jpg,blast\n"
    # Only unreadable photos: they are listed, and the exit status says nothing was predicted
    assert main(["predict", str(missing), "--out", "out/none.csv"]) == 1
    assert pd.read_csv(work / "out" / "none.csv").error.notna().all()
    assert "submission.csv" in capsys.readouterr().err


def test_find_photos_keeps_named_files_and_searches_folders(tmp_path):
    (tmp_path / "a" / ".hidden").mkdir(parents=True)
    for name in ("a/z.JPG", "a/b.png", "a/.hidden/c.jpg", "a/readme.md", "x.dat"):
        (tmp_path / name).write_bytes(b"")
    found = find_photos([tmp_path / "a", tmp_path / "x.dat", tmp_path / "a" / "b.png"])
    assert found == [tmp_path / "a" / "b.png", tmp_path / "a" / "z.JPG", tmp_path / "x.dat"]
    (tmp_path / "empty").mkdir()
    with pytest.raises(PaddyError, match="No image found in .*empty"):
        find_photos([tmp_path / "empty"])


def test_each_unreadable_photo_gets_its_reason_and_the_others_are_prepared(tmp_path):
    Image.new("RGB", (300, 200), (10, 120, 30)).save(tmp_path / "leaf.png")
    Image.new("RGB", (300, 200), (10, 120, 30)).save(tmp_path / "png.jpg", format="PNG")  # a name without meaning
    Image.new("RGB", (10, 10)).save(tmp_path / "tiny.jpg")
    (tmp_path / "empty.jpg").write_bytes(b"")
    (tmp_path / "notes.png").write_text("not an image")
    (tmp_path / "folder.jpg").mkdir()
    names = ["leaf.png", "png.jpg", "tiny.jpg", "empty.jpg", "notes.png", "folder.jpg", "gone.jpg"]
    prepared, errors = prepare_photos([tmp_path / n for n in names], tmp_path / "out", 64)
    assert list(prepared) == [tmp_path / "leaf.png", tmp_path / "png.jpg"]
    for file in prepared.values():  # the prepare stage's JPEG, longest side 64
        with Image.open(file) as im:
            assert (im.format, im.size) == ("JPEG", (64, 43))
    assert prepared[tmp_path / "leaf.png"].read_bytes() == prepared[tmp_path / "png.jpg"].read_bytes()
    reasons = [errors[tmp_path / n] for n in names[2:]]
    assert reasons[0].startswith("10x10 pixels: under the 16 pixels")
    assert reasons[1:] == ["zero bytes", "not an image PIL can read", "not a file", "not found"]
    _, errors = prepare_photos([tmp_path / "leaf.png"], tmp_path / "out", 64, max_pixels=1000)  # prepare.max_pixels
    assert errors[tmp_path / "leaf.png"].startswith("too many pixels: 300x200 is 60,000, above prepare.max_pixels")


@pytest.mark.parametrize(
    "remove, argv, message",
    [
        ("data/models", [], "data/models does not exist: no model is trained yet. Run `dvc repro`"),
        ("metrics/ensemble.json", [], "metrics/ensemble.json does not exist"),
        ("data/models/crop", [], "data/models/crop holds no trained model"),
        ("data/models/resnet/v1.safetensors", [], "data/models/resnet lacks the weights of split(s) v1"),
        (None, ["--models", "vit"], "--models names vit"),
        (None, ["--top", "0"], "--top 0"),
        (None, ["--top", "11"], "--top 11"),
    ],
)
def test_bad_input_is_one_paragraph_and_writes_nothing(pipeline, tmp_path, monkeypatch, capsys, remove, argv, message):
    work, _ = pipeline
    shutil.copytree(work, tmp_path / "w")
    monkeypatch.chdir(tmp_path / "w")
    if remove:
        shutil.rmtree(remove) if (tmp_path / "w" / remove).is_dir() else (tmp_path / "w" / remove).unlink()
    photo = next((work / "data" / "prepared" / "images" / "test").iterdir())
    assert main(["predict", str(photo), *argv]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
    assert not (tmp_path / "w" / "predictions.csv").exists()


def test_a_broken_ensemble_file_asks_to_rerun_the_ensemble(pipeline, tmp_path, monkeypatch, capsys):
    work, _ = pipeline
    shutil.copytree(work, tmp_path / "w")
    monkeypatch.chdir(tmp_path / "w")
    (tmp_path / "w" / "metrics" / "ensemble.json").write_text(json.dumps({"oof_acc": {}}))
    assert main(["predict", "anything.jpg"]) == 2
    assert "dvc repro ensemble" in capsys.readouterr().err


TAGS = ["clear", "haze", "primary", "water"]


def tag_predictions(tmp_path):
    """A multi-label competition's Predictions as predict_photos returns them: three photos, one unreadable."""
    files = [tmp_path / "a.jpg", tmp_path / "b.jpg", tmp_path / "c.jpg"]
    probs = np.array([[0.9, 0.35, 0.7, 0.05], [0.1, 0.2, 0.3, 0.25]])
    labels = pd.DataFrame(probs, columns=TAGS).assign(image_id=[str(files[0]), str(files[2])])[["image_id", *TAGS]]
    return Predictions(files, {files[1]: "not found"}, labels, {}, {"resnet": labels}, (0.5, True))


def test_tags_above_the_submissions_thresholds_likeliest_first(tmp_path):
    pred = tag_predictions(tmp_path)
    table = tag_table(pred)
    assert list(table.columns) == ["path", "tags", "probs", "error"]
    assert table.tags.tolist() == ["clear primary", "", ""] and table.probs.tolist()[0] == "0.9000 0.7000"
    assert table.error.tolist() == ["", "not found", ""]
    lines = [f"{tmp_path / 'a.jpg'}: clear (0.9000), primary (0.7000)", f"{tmp_path / 'c.jpg'}: no tag"]
    assert tag_lines(table) == lines
    # per-tag thresholds, and an image with no tag above its threshold given its likeliest (allow_empty false)
    pred.tags = (np.array([0.95, 0.3, 0.5, 0.3]), False)
    table = tag_table(pred)
    assert table.tags.tolist() == ["primary haze", "", "primary"]  # likeliest first
    assert table.probs.tolist() == ["0.7000 0.3500", "", "0.3000"]


def test_photo_thresholds_are_the_submissions_or_the_tags_setting_before_a_fit(tmp_path):
    settings = parse_settings(tiny_params())
    ensemble = tmp_path / "ensemble.json"
    write_json(ensemble, {"weights": WEIGHTS})  # an ensemble that has fitted no thresholds yet
    assert photo_thresholds(settings, ensemble, TAGS) == (settings.tags.threshold, settings.tags.allow_empty)
    found = {"fit": "per_tag", "threshold_fixed": 0.5, "threshold_global": 0.4, "allow_empty": True}
    write_json(ensemble, {"weights": WEIGHTS, "thresholds": found})
    write_json(tmp_path / "thresholds.json", {"per_tag": {"clear": 0.3, "haze": 0.2, "primary": 0.6, "water": 0.45}})
    thresholds, allow_empty = photo_thresholds(settings, ensemble, TAGS)
    assert thresholds.tolist() == [0.3, 0.2, 0.6, 0.45] and allow_empty is True
    write_json(ensemble, {"weights": WEIGHTS, "thresholds": dict(found, fit="global")})
    assert photo_thresholds(settings, ensemble, TAGS) == (0.4, True)
    (tmp_path / "thresholds.json").unlink()
    write_json(ensemble, {"weights": WEIGHTS, "thresholds": found})
    with pytest.raises(PaddyError, match="thresholds.json does not exist.*dvc repro ensemble"):
        photo_thresholds(settings, ensemble, TAGS)


def test_a_tags_table_may_be_overwritten_by_the_next_predict(tmp_path):
    out = tmp_path / "preds.csv"
    write_csv(tag_table(tag_predictions(tmp_path)), out)
    check_out(out)  # an earlier `paddy predict` table of tags: no error
    out.write_text("image_id,tags\n1.jpg,clear\n")
    with pytest.raises(PaddyError, match="not an earlier `paddy predict` table"):
        check_out(out)


def test_a_multi_label_competition_gets_tags_from_the_models(pipeline, competition, monkeypatch):
    """The tiny pipeline's models read as a multi-label competition's (their heads then give each class's sigmoid):
    each photo's tags are those of its mixed probabilities above the tags setting's threshold (the ensemble has
    fitted none), its likeliest where none is and allow_empty is false."""
    work, settings = pipeline
    monkeypatch.chdir(work)
    tags = replace(settings, competition=replace(settings.competition, form="tags"))
    files = sorted((competition[0] / "test_images").iterdir())[:3]
    assert predict_photos(files, settings, CPU).tags is None
    with pytest.raises(PaddyError, match="holds a single-label .softmax. model, but `competition.form`.* is now tags"):
        predict_photos(files, tags, CPU)  # trained single-label: refused, not read as sigmoids
    real = paddy.training.run.read_meta
    monkeypatch.setattr(paddy.training.run, "read_meta", lambda d: {**real(d), "multi_label": True})
    pred = predict_photos(files, tags, CPU)
    assert pred.tags == (settings.tags.threshold, settings.tags.allow_empty)
    classes = np.asarray(pred.labels.columns[1:])
    p = pred.labels[classes].to_numpy(float)
    threshold, allow_empty = pred.tags
    expected = [sorted(classes[row > threshold]) or ([] if allow_empty else [classes[row.argmax()]]) for row in p]
    assert [sorted(t.split()) for t in tag_table(pred).tags] == expected
    assert not np.allclose(p.sum(1), 1)  # sigmoid probabilities, mixed as they are


@pytest.mark.slow
def test_predict_after_dvc_repro_gives_the_submissions_labels(tmp_path, finished_run):
    """The real stages (`dvc repro` of the shrunk default pipeline: resnet and vit, TTA, params weights), then
    `paddy predict` on the raw test images in the sample's order: the submission's labels, with the ensemble's
    probabilities."""
    copy_finished_run(finished_run, tmp_path)
    sample = pd.read_csv(tmp_path / "data" / "raw" / "sample_submission.csv", dtype={"image_id": str})
    files = " ".join(f"data/raw/test_images/{i}" for i in sample.image_id)
    sh(f"paddy predict {files} --top 2 --out predictions.csv", tmp_path)
    out = pd.read_csv(tmp_path / "predictions.csv")
    weights = json.loads((tmp_path / "metrics" / "ensemble.json").read_text())["weights"]
    preds = tmp_path / "data" / "preds"
    tables = read_tables(preds, list(weights), "test", json.loads((tmp_path / "data/prepared/labels.json").read_text()))
    mean = Stack(tables, sample.image_id).mix(list(weights.values()))
    assert out.path.tolist() == files.split() and out.error.isna().all()
    assert out.label_1.tolist() == pd.read_csv(tmp_path / "submission.csv").label.tolist()
    np.testing.assert_allclose(out.prob_1, mean.max(1), atol=1e-5)
    np.testing.assert_allclose(out.prob_2, np.sort(mean, 1)[:, -2], atol=1e-5)
