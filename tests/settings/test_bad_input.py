"""Each bad input gets one clear paragraph (PaddyError) before any work starts, naming the file or key."""

import errno
import hashlib
import os
import shutil
import zipfile
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from helpers.data import TAGS_COMPETITION
from helpers.pipeline import ROOT, run_script
from helpers.settings import default_competition, settings_with
from PIL import Image

from paddy.archive import extract_zip
from paddy.data import items
from paddy.data.competition import check_layout
from paddy.data.download import check_source, fetch_competition
from paddy.data.items import load_items
from paddy.data.loaders import item_files
from paddy.data.prepare import prepare_competition, read_labels
from paddy.errors import PaddyError
from paddy.files import cache_dir
from paddy.predict.ensemble import build_ensemble
from paddy.predict.tables import write_table
from paddy.settings import EnsembleSettings, Settings, parse_settings, preflight
from paddy.training.model_checks import check_archs


@pytest.fixture
def comp(competition, tmp_path):
    raw, _ = competition
    shutil.copytree(raw, tmp_path / "raw")
    return tmp_path / "raw"


@pytest.mark.parametrize(
    "name, text, message",
    [
        ("train.csv", None, "has no train.csv \\(the train table, `competition.train_table`\\)"),
        ("train.csv", "image_id,disease\n100001.jpg,blast\n", "the competition section names label"),
        ("sample_submission.csv", None, "has no sample_submission.csv \\(the sample submission"),
        ("sample_submission.csv", "id;label\n1;2\n", "sample_submission.csv has the columns \\['id;label'\\]"),
    ],
    ids=["missing-train", "malformed-train", "missing-sample", "malformed-sample"],
)
def test_a_missing_or_malformed_csv_is_named(comp, name, text, message):
    if text is None:
        (comp / name).unlink()
    else:
        (comp / name).write_text(text)
    with pytest.raises(PaddyError, match=message):
        check_layout(comp, default_competition())


def test_duplicated_id_in_sample_submission_names_it_and_the_fix(comp):
    sample = comp / "sample_submission.csv"
    lines = sample.read_text().splitlines()
    sample.write_text("\n".join(lines + [lines[1]]) + "\n")  # the first test image listed twice
    with pytest.raises(PaddyError) as err:
        check_layout(comp, default_competition())
    image_id = lines[1].split(",")[0]
    assert f"lists the id '{image_id}' more than once (again at line {len(lines) + 1}" in str(err.value)
    assert "restore the competition's own file" in str(err.value)


def _rewrite(path, edit):
    """Rewrite the CSV at `path` through edit(DataFrame of text) -> DataFrame."""
    edit(pd.read_csv(path, dtype=str, keep_default_na=False)).to_csv(path, index=False)


def _set(df, column, value, rows=slice(None)):
    df.loc[rows, column] = value
    return df


@pytest.mark.parametrize(
    "case, message",
    [
        ("no layout", r"no training image where `competition.train_images` \('images/\{label\}/\{id\}'\) looks"),
        ("ids name no image", r"None of the 60 training image .* exist in .*looked for train_images/[a-z_]+/x100"),
        ("most ids name no image", r"Only 20 of the 60 training image .* exist in .*looked for train_images/[a-z_]+/x"),
        ("sample ids name no image", r"None of the 12 test image .* exist in .*looked for test_images/t200001.jpg"),
        ("label gaps", r"train.csv has a row with no label \(line 4, image_id '100003.jpg'\).*label_column"),
        ("one class", r"training images all have the label 'blast' \(60 images\).*at least two classes"),
        ("columns not the classes", r"columns after its ids are not the classes .*no class: 0.*classes without a "),
    ],
)
def test_a_description_the_files_do_not_fit_is_one_paragraph_naming_the_setting(comp, case, message):
    """The bad inputs of a competition folder: each refused by check_layout (the check stage's, before anything is
    deleted) with the file, what was found and the setting to write."""
    described = default_competition()
    if case == "no layout":
        described = replace(
            described, train_table="", labels_from="folders", label_column="", train_images="images/{label}/{id}"
        )
    elif case == "ids name no image":
        _rewrite(comp / "train.csv", lambda df: df.assign(image_id="x" + df.image_id))
    elif case == "most ids name no image":  # a few missing files are prepare's to leave out; most: a wrong template
        _rewrite(
            comp / "train.csv", lambda df: df.assign(image_id=["x" * (i >= 20) + v for i, v in enumerate(df.image_id)])
        )
    elif case == "sample ids name no image":
        _rewrite(comp / "sample_submission.csv", lambda df: df.assign(image_id="t" + df.image_id))
    elif case == "label gaps":
        _rewrite(comp / "train.csv", lambda df: _set(df, "label", "", 2))
    elif case == "one class":
        _rewrite(comp / "train.csv", lambda df: _set(df, "label", "blast"))
        for folder in (comp / "train_images").iterdir():
            if folder.name != "blast":
                for f in folder.iterdir():
                    os.replace(f, comp / "train_images" / "blast" / f.name)
    else:
        _rewrite(comp / "sample_submission.csv", lambda df: df.assign(**{"0": "0.5", "1": "0.5"}).drop(columns="label"))
        described = replace(described, form="probabilities", metric="log_loss")
    with pytest.raises(PaddyError, match=message) as err:
        check_layout(comp, described)
    assert "\n" not in str(err.value)


def test_random_bytes_named_zip_are_not_called_truncated(params, tmp_path):
    fake = tmp_path / "competition.zip"
    fake.write_bytes(bytes(range(256)) * 8)
    params["data"]["source"] = str(fake)
    with pytest.raises(PaddyError, match="is not a zip archive at all") as err:
        fetch_competition(parse_settings(params).data, default_competition(), tmp_path / "raw", tmp_path / "truth.csv")
    assert "interrupted" not in str(err.value) and not (tmp_path / "raw").exists()


def test_a_truncated_zip_is_called_truncated(comp, params, tmp_path):
    whole = Path(shutil.make_archive(str(tmp_path / "whole"), "zip", comp))
    cut = tmp_path / "competition.zip"
    cut.write_bytes(whole.read_bytes()[: whole.stat().st_size // 2])
    params["data"]["source"] = str(cut)
    with pytest.raises(PaddyError, match="is not a complete zip archive .*interrupted download or copy"):
        fetch_competition(
            parse_settings(params).data, default_competition(), tmp_path / "data/raw", tmp_path / "data/truth.csv"
        )
    assert not (tmp_path / "data/raw").exists()


def test_unknown_architecture(params):
    params["models"]["resnet"]["arch"] = "resnet_does_not_exist"
    with pytest.raises(PaddyError, match="models.resnet.arch.*resnet_does_not_exist.*timm does not know"):
        check_archs(parse_settings(params).models)


def test_fixed_size_model_at_another_size(params):
    """A ViT takes any whole number of its patches (timm resamples its position embeddings); a fixed-size model
    timm cannot resize (MLP-Mixer: its token-mixing layers have the patch count's width) takes only its own."""
    params["models"]["vit"]["size"] = [128, 96]
    check_archs(parse_settings(params).models)
    params["models"]["vit"]["size"] = [120, 96]
    with pytest.raises(PaddyError, match=r"\[120, 96\] is not a multiple of 16 a side.*\(\[112, 96\] or \[128, 96\]\)"):
        check_archs(parse_settings(params).models)
    params["models"]["vit"].update(arch="mixer_s16_224", size=[128, 128])
    with pytest.raises(PaddyError, match=r"mixer_s16_224, built for a fixed input of \[224, 224\]"):
        check_archs(parse_settings(params).models)


def test_progressive_epochs_one_per_scale(params):
    params["train"]["progressive"] = {"scales": [0.5, 0.75], "epochs": [2]}
    with pytest.raises(PaddyError, match=r"`train.progressive.epochs` in params.yaml is \[2\].*one number of epochs"):
        parse_settings(params)


def test_micro_batch_larger_than_effective_batch(params):
    params["models"]["resnet"]["micro_batch"] = 32
    with pytest.raises(PaddyError, match=r"micro_batch` \(32\) is larger than `train.effective_batch` \(16\)"):
        parse_settings(params)


@pytest.mark.parametrize(
    "key, value, message",
    [
        ("train.lr", 0, "above 0.*cannot train"),
        ("train.lr", -0.1, "above 0"),
        ("train.aug.p_affine", 1.5, "at most 1.0"),
        ("train.aug.max_zoom", 0.9, "at least 1.0"),
        ("train.eval_batch", "big", "auto or an integer"),
        ("train.workers", -1, "auto or an integer at least 0"),
        ("train.recipe", "timm", "one of fastai"),
        ("train.lr_groups", "all", "body_head, layers"),
        ("tta.beta", 2, "at most 1.0"),
        ("data.synthetic.difficulty", "medium", "one of easy, hard"),
        ("models.vit.head", "keras", "fastai .*or timm"),
        ("models.vit.pretrained", "", "path of a weights file"),
        ("report.top_losses", -1, "an integer at least 0 .*highest loss"),
        ("report.top_losses", 2.5, "an integer at least 0"),
        ("report.top_losses", "x", "an integer at least 0"),
        ("report.calibration_bins", 1, "an integer at least 2 .*reliability diagram"),
        ("tags.threshold", 0, "above 0 and below 1 .*every image every tag"),
        ("tags.threshold", 1, "above 0 and below 1"),
        ("tags.threshold", 1.5, "above 0 and below 1"),
        ("tags.fit", "each", "none, global, per_tag"),
        ("tags.min_positives", 0, "an integer at least 1"),
        ("pseudo.threshold", 0, "auto .*or a probability between 0 and 1"),
        ("pseudo.threshold", 1, "auto .*or a probability between 0 and 1"),
        ("pseudo.threshold", 1.5, "auto .*or a probability between 0 and 1"),
        ("pseudo.threshold", "high", "auto .*or a probability between 0 and 1"),
        ("pseudo.max_error", 0, "above 0 and below 1"),
    ],
)
def test_settings_out_of_range_are_refused(params, key, value, message):
    with pytest.raises(PaddyError, match=f"`{key}` in params.yaml.*{message}"):
        settings_with(params, {key: value})


def test_weight_for_a_model_that_does_not_exist(params):
    params["models"]["vitt"] = {"weight": 2}  # what `-S '+models.vitt.weight=2'` makes of a typo
    with pytest.raises(PaddyError, match="no model `vitt`.*Did you mean `models.vit`"):
        parse_settings(params)


def test_source_path_that_does_not_exist(params, tmp_path):
    params["data"]["source"] = str(tmp_path / "nowhere")
    with pytest.raises(PaddyError, match="neither synthetic, kaggle, nor an existing folder"):
        fetch_competition(parse_settings(params).data, default_competition(), tmp_path / "raw", tmp_path / "truth.csv")
    assert not (tmp_path / "raw").exists()


def test_a_stage_prints_one_paragraph_not_a_traceback(tmp_path):
    """What a user sees from `dvc repro` with a bad setting: exit 2, `error: ...`, no traceback, nothing written."""
    text = (ROOT / "params.yaml").read_text().replace("arch: test_vit", "arch: test_vitt")
    (tmp_path / "params.yaml").write_text(text)
    out = run_script("stages/check.py", "data/checked", cwd=tmp_path)
    assert out.returncode == 2
    assert "error: `models.vit.arch` in params.yaml is 'test_vitt'" in out.stderr
    assert "Close names: test_vit" in out.stderr
    assert "Traceback" not in out.stderr
    assert not (tmp_path / "data").exists()


# ---------------------------------------------------------------------------------------------------------------------
# Issue 18: bad input that was silently accepted, or found only after DVC had deleted the last good outputs


def tree(root):
    """{relative path: md5} of every file under `root`: what a failed run must leave as it was."""
    root = Path(root)
    return {str(p.relative_to(root)): hashlib.md5(p.read_bytes()).hexdigest() for p in root.rglob("*") if p.is_file()}


@pytest.mark.parametrize(
    "key, nearest",
    [
        ("train.epoch", "train.epochs"),
        ("models.vit.sise", "models.vit.size"),
        ("train.aug.max_rotation", "train.aug.max_rotate"),
        ("seeds", "seed"),
    ],
)
def test_an_unknown_key_is_refused_naming_the_nearest_known_one(params, key, nearest):
    with pytest.raises(
        PaddyError, match=f"`{key}` in params.yaml is not a setting paddy knows \\(did you mean `{nearest}`"
    ):
        settings_with(params, {key: 3})  # beside the real key, which keeps its value: the typo would go unnoticed


def test_user_named_models_are_fine_but_their_keys_are_fixed(params):
    params["models"]["my_convnext"] = dict(params["models"]["resnet"])
    parse_settings(params)
    params["models"]["my_convnext"]["lr"] = 0.1
    with pytest.raises(
        PaddyError,
        match="`models.my_convnext.lr` in params.yaml is not a setting .*`models.my_convnext` holds arch, pretrained",
    ):
        parse_settings(params)


def test_the_repository_params_and_presets_have_no_unknown_key():
    for path in (ROOT / "params.yaml", ROOT / "presets" / "seed.yaml"):
        parse_settings(yaml.safe_load(path.read_text()), path)


def test_all_ensemble_weights_zero_is_refused_unless_they_are_fitted(params):
    for model in params["models"].values():
        model["weight"] = 0
    with pytest.raises(PaddyError, match="Every `models.<name>.weight` in params.yaml is 0 and `ensemble.weights` is"):
        parse_settings(params)
    params["ensemble"]["weights"] = "fit"
    parse_settings(params)


def test_more_devices_than_cpu_cores_is_refused_with_the_count(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(preflight, "usable_cores", lambda: 2)
    preflight.check_devices(1)
    preflight.check_devices(2)
    with pytest.raises(
        PaddyError,
        match=r"`train.devices` in params.yaml is 1000, but this machine has no CUDA device, "
        r"and 2 usable CPU core\(s\).*at most 2",
    ):
        preflight.check_devices(1000)


def test_more_devices_than_visible_gpus_is_refused_with_the_count(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3,5")
    preflight.check_devices(2)
    with pytest.raises(
        PaddyError, match=r"is 3, but this machine has 2 CUDA device\(s\) \(CUDA_VISIBLE_DEVICES='3,5'\)"
    ):
        preflight.check_devices(3)


def test_the_model_checks_rerun_whenever_a_setting_changes(params):
    """What DVC's run-cache got wrong (it ignores every key named `size`): the memo's key sees every setting."""
    key = preflight.model_checks_key(parse_settings(params))
    preflight.record_pass(key)
    assert preflight.passed_before(key) and preflight.model_checks_key(parse_settings(params)) == key
    params["models"]["resnet"]["size"] = [40, 32]
    assert not preflight.passed_before(preflight.model_checks_key(parse_settings(params)))
    params["models"]["resnet"]["pretrained"] = True  # the hub's cache is the machine's state: checked every time
    assert preflight.model_checks_key(parse_settings(params)) is None and not preflight.passed_before(None)


def zip_of(folder, path, extra=()):
    with zipfile.ZipFile(path, "w") as zf:
        for p in sorted(folder.rglob("*")):
            zf.write(p, "paddy/" + str(p.relative_to(folder)))  # wrapped in one top folder, as hand-made zips are
        for name, data in extra:
            zf.writestr(name, data)
    return path


def test_a_source_download_would_refuse_is_refused_by_the_check(comp, tmp_path, source_settings):
    """Found by the check stage, before DVC deletes data/raw to run download: cheap (CSVs and listing, no image)."""
    described = default_competition()
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(PaddyError, match=f"{empty} has no train.csv .*Its top level holds nothing"):
        check_source(source_settings(empty), described)
    good = zip_of(comp, tmp_path / "good.zip")
    check_source(source_settings(good), described)
    check_source(source_settings(comp), described)
    evil = zip_of(comp, tmp_path / "evil.zip", extra=[("../evil", b"x")])
    with pytest.raises(PaddyError, match=r"evil.zip has an entry '../evil' that would land outside"):
        check_source(source_settings(evil), described)
    (comp / "train.csv").write_text((comp / "train.csv").read_text().replace("image_id,label", "image_id,disease"))
    with pytest.raises(PaddyError, match=f"{comp / 'train.csv'} has columns .* names label"):
        check_source(source_settings(comp), described)
    unlabelled = zip_of(comp, tmp_path / "unlabelled.zip")
    with pytest.raises(PaddyError, match=f"{unlabelled}/train.csv has columns .* names label"):
        check_source(source_settings(unlabelled), described)


def test_a_zip_that_fails_only_on_extraction_leaves_the_last_competition(comp, params, tmp_path):
    """A damaged image entry shows only when extracted (the check reads no image): download then refuses, and the
    previous data/raw stays whole, built beside and never swapped in."""
    raw, truth = tmp_path / "data/raw", tmp_path / "data/truth.csv"
    fetch_competition(
        parse_settings(params).data, default_competition(), raw, truth
    )  # the last good competition: the generated one
    before = tree(tmp_path / "data")
    blob = bytearray(zip_of(comp, tmp_path / "damaged.zip").read_bytes())
    with zipfile.ZipFile(tmp_path / "damaged.zip") as zf:
        info = next(i for i in zf.infolist() if i.filename.endswith(".jpg"))
    start = info.header_offset + 30 + len(info.filename.encode()) + len(info.extra)
    blob[start + 10 : start + 20] = bytes(10)  # zeros inside the first image's data: its CRC no longer matches
    (tmp_path / "damaged.zip").write_bytes(blob)
    params["data"]["source"] = str(tmp_path / "damaged.zip")
    check_source(parse_settings(params).data, default_competition())  # the listing and the CSVs are fine
    with pytest.raises(PaddyError, match="damaged.zip is corrupt .*fails its CRC check"):
        fetch_competition(parse_settings(params).data, default_competition(), raw, truth)
    assert tree(tmp_path / "data") == before


def test_fitted_weights_with_one_model_say_there_was_nothing_to_fit(tmp_path, capsys, params):
    rng = np.random.default_rng(0)
    ids = [f"{i}.jpg" for i in range(20)]
    truth = pd.DataFrame({"image_id": ids, "label": rng.choice(["a", "b"], 20)})
    probs = rng.dirichlet([1, 1], 20)
    write_table(tmp_path / "solo", "oof", ids, probs, ["a", "b"])
    write_table(tmp_path / "solo", "test", ["t.jpg"], probs[:1], ["a", "b"])
    sample = pd.DataFrame({"image_id": ["t.jpg"], "label": ""})
    ensemble, comp = EnsembleSettings(weights="fit", cv_folds=2), parse_settings(params).competition
    _, metrics, _ = build_ensemble(
        {"solo": 1}, ["a", "b"], sample, tmp_path, (truth, truth[:0]), Settings(competition=comp, ensemble=ensemble)
    )
    note = "ensemble.weights is fit, but there is one model (solo): nothing to fit, weight 1"
    assert metrics["note"] == note and metrics["weights"] == {"solo": 1.0}
    assert f"note: {note}" in capsys.readouterr().out
    _, metrics, _ = build_ensemble(
        {"solo": 1}, ["a", "b"], sample, tmp_path, (truth, truth[:0]),
        Settings(competition=comp, ensemble=replace(ensemble, weights="params")),
    )  # fmt: skip
    assert "note" not in metrics


@pytest.fixture
def prepared(competition, tmp_path_factory):
    out = tmp_path_factory.mktemp("prep") / "prepared"
    index, _ = prepare_competition(competition[0], out, default_competition(), max_size=64, workers=1)
    return out, index


def test_a_full_disk_stops_the_item_cache_with_the_sizes_and_the_fix(prepared, monkeypatch):
    """Checked before writing: a memory map on a full disk dies by SIGBUS, without a word (exit -7)."""
    out, index = prepared
    files = item_files(index, index.path[:10].tolist())
    load_items(out, files, (40, 30), "squish")  # an earlier array, which must stay as it was
    before = tree(cache_dir())
    need = 10 * 40 * 32 * 3 + 4096
    monkeypatch.setattr(items.shutil, "disk_usage", lambda path: shutil._ntuple_diskusage(10**9, 10**9 - 1000, 1000))
    with pytest.raises(PaddyError) as err:
        load_items(out, files, (40, 32), "squish")
    message = str(err.value)
    assert f"The item cache needs {need:,} bytes" in message and "only 1,000 bytes are free" in message
    assert str(cache_dir() / "items") in message and "PADDY_CACHE" in message
    assert tree(cache_dir()) == before


def test_a_write_that_runs_out_of_space_midway_is_the_same_message(prepared, monkeypatch):
    """The space went between the check and the write (another process): ENOSPC from reserving the file's blocks."""
    out, index = prepared
    files = item_files(index, index.path[:10].tolist())
    before = tree(cache_dir())

    def full(fd, offset, length):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(items.os, "posix_fallocate", full, raising=False)
    with pytest.raises(PaddyError, match="The item cache needs .* bytes .*PADDY_CACHE"):
        load_items(out, files, (40, 36), "squish")
    assert tree(cache_dir()) == before  # nothing half-written


def test_prepare_trains_new_labels_and_reports_tiny_images_and_misnamed_files(comp, tmp_path, capsys):
    """A label the competition's first copy did not have is a class like the others (a Paddy-shaped folder with
    other class names trains); a thumbnail and a PNG under a JPEG's name are left out, each with its reason."""
    train = pd.read_csv(comp / "train.csv", dtype=str)
    rows = train.head(3).itertuples()
    new = next(rows)
    (comp / "train_images" / "rust").mkdir()
    os.replace(comp / "train_images" / new.label / new.image_id, comp / "train_images" / "rust" / new.image_id)
    train.loc[train.image_id == new.image_id, "label"] = "rust"
    train.to_csv(comp / "train.csv", index=False)
    tiny, png = next(rows), next(rows)
    Image.new("RGB", (1, 1), (0, 128, 0)).save(comp / "train_images" / tiny.label / tiny.image_id, format="JPEG")
    Image.new("RGB", (48, 64), (0, 128, 0)).save(comp / "train_images" / png.label / png.image_id, format="PNG")
    index, bad = prepare_competition(comp, tmp_path / "prepared", default_competition(), max_size=64, workers=1)
    reasons = dict(zip(bad.image_id, bad.reason))
    assert reasons == {
        tiny.image_id: "1x1 pixels: under the 16 pixels a side an image needs to show anything (a thumbnail or a "
        "broken export)",
        png.image_id: "a PNG file named .jpg: its name says JPEG, so this is another file under an image's name "
        "(convert it to JPEG and rename it if it belongs)",
    }
    assert (
        pd.read_csv(tmp_path / "prepared" / "bad_files.csv", dtype=str).set_index("image_id").reason.to_dict()
        == reasons
    )
    log = capsys.readouterr().out
    assert all(f"{image_id}: {reason}" in log for image_id, reason in reasons.items())
    assert not set(reasons) & set(index.image_id[index.split == "train"])
    assert "rust" in read_labels(tmp_path / "prepared")
    assert index.set_index("image_id").loc[new.image_id, "label"] == "rust"


def test_an_extracted_zip_is_checked_before_it_replaces_the_last_competition(comp, tmp_path):
    """Kaggle's zip is checked once downloaded and extracted (the check stage cannot see it): refused, the previous
    folder stays."""
    dest = tmp_path / "data/raw"
    shutil.copytree(comp, dest)
    before = tree(dest)
    (comp / "sample_submission.csv").unlink()
    with pytest.raises(PaddyError, match=r"incomplete.zip has no sample_submission.csv"):
        extract_zip(
            zip_of(comp, tmp_path / "incomplete.zip"), dest, check=lambda f: check_layout(f, default_competition())
        )
    assert tree(dest) == before and sorted(p.name for p in dest.parent.iterdir()) == ["raw"]


# ---------------------------------------------------------------------------------------------------------------------
# Issue 24: settings that cannot make sense, refused by the check stage before anything is deleted


@pytest.mark.parametrize(
    "key, value, message",
    [
        ("cv.n_splits", 1000, r"an integer at least 1 and at most 100 \(every split trains every model once more"),
        ("seed", 2**32, r"an integer at least 0 and at most 2147483647 \(numpy's seeds are 32-bit"),
        ("cv.seed", 2**40, "at most 2147483647"),
        ("data.synthetic.width", 100_000, "at most 4096"),
        ("data.synthetic.n_train", 10**8, "at most 10000000"),
        ("prepare.max_size", 100_000, r"at most 65500 \(prepare writes JPEGs"),
        ("prepare.workers", 10_000, "at most 256"),
        ("prepare.max_pixels", 10, r"at least 256 .*decompression bombs"),
        ("train.epochs", 10**6, "at most 1000"),
        ("train.lr", float("nan"), "is nan; it must be a number above 0 and at most 10"),
        ("train.lr_mult", 1e9, "at most 10000"),
        ("train.effective_batch", 10**7, "at most 65536"),
        ("train.eval_batch", 10**7, "auto or an integer at least 1 and at most 65536"),
        ("train.checkpoint_minutes", float("inf"), "is inf; it must be a number above 0 and at most 1440"),
        ("tta.n", 10_000, r"at most 100 \(augmented passes"),
        ("ensemble.cv_folds", 10_000, "at most 100"),
        ("profile.budget_gb", float("inf"), "is inf"),
        ("profile.min_micro_batch", 32, r"at most 16 \(the smallest micro-batch the profile tries"),
        ("models.resnet.weight", float("inf"), "is inf; it must be a number >= 0"),
        ("models.resnet.size", [5000, 5000], r"a side may be at most 4096 pixels"),
    ],
)
def test_settings_without_a_sane_bound_are_refused(params, key, value, message):
    with pytest.raises(PaddyError, match=f"`{key}` in params.yaml.*{message}"):
        settings_with(params, {key: value})


def test_a_size_below_the_architectures_total_stride_is_refused(params):
    """`models.resnet.size=[7,7]` trained a resnet on 7x7 inputs (a 1x1 last feature map of padding) and replaced
    submission.csv; the dry run passes it, timm's feature_info says what the model shrinks its input by."""
    params["models"]["resnet"]["size"] = [7, 7]
    with pytest.raises(PaddyError) as err:
        check_archs(parse_settings(params).models)
    assert "`models.resnet.arch` in params.yaml is test_resnet, which shrinks its input 32 times before its head" in (
        str(err.value)
    )
    assert "the size asked is [7, 7]" in str(err.value)
    assert "Set each side of the size to at least 32 (it was built for [160, 160])" in str(err.value)
    params["models"]["resnet"]["size"] = [32, 32]
    check_archs(parse_settings(params).models)


def test_kfold_with_a_label_smaller_than_its_folds_is_refused_from_the_train_table(comp, params, source_settings):
    """Found by the check stage from the train table (a folder or zip) or the generator's counts, where the split
    stage found it after download and prepare had run again and data/split.csv was deleted."""
    from paddy.data.split import check_cv

    settings = parse_settings(params)
    counts, columns = check_source(settings.data, settings.competition)  # synthetic: the generator's, no image drawn
    assert counts.sum() == params["data"]["synthetic"]["n_train"] and columns == ["variety", "age"]
    kfold = replace(settings.cv, scheme="kfold", n_splits=5)
    small = f"label '{counts.idxmin()}' has only {counts.min()} training images"
    with pytest.raises(PaddyError, match=f"cv.n_splits is 5 but {small} in data.source synthetic: stratified k-fold"):
        check_cv(kfold, settings.train, counts, " in data.source synthetic")
    counts, columns = check_source(source_settings(comp), settings.competition)  # a folder: its train.csv
    assert columns == ["variety", "age"]
    assert counts.to_dict() == pd.read_csv(comp / "train.csv").label.value_counts().to_dict()
    small = counts.idxmin()
    with pytest.raises(PaddyError, match=f"label '{small}' has only {counts.min()} training images in data.source"):
        check_cv(kfold, settings.train, counts, f" in data.source {comp}")
    check_cv(replace(kfold, n_splits=int(counts.min())), settings.train, counts, "")
    check_cv(settings.cv, settings.train, counts, "")  # bag
    big = replace(settings.train, effective_batch=64)  # more than the 48 training images of a 60-image bag
    with pytest.raises(PaddyError, match=r"about 48 images .*fewer than one optimizer step .*effective_batch = 64"):
        check_cv(settings.cv, big, counts, "")
    check_cv(settings.cv, replace(big, drop_last=False), counts, "")


def test_a_class_whose_every_image_is_left_out_is_refused_by_prepare(comp, tmp_path):
    """No model could learn it, and a submission with a column per class would lack its column."""
    folder = next(p for p in sorted((comp / "train_images").iterdir()) if p.is_dir())
    for image in folder.iterdir():
        image.write_bytes(b"")  # zero bytes: each left out
    with pytest.raises(PaddyError, match=f"Every training image of the class '{folder.name}' was left out"):
        prepare_competition(comp, tmp_path / "prepared", default_competition(), max_size=64, workers=1)
    assert not (tmp_path / "prepared" / "index.csv").exists()


@pytest.mark.parametrize(
    "changes, message",
    [
        ({**TAGS_COMPETITION}, "multi-label .*not a set of tags"),
        ({"models.resnet.targets": ["label", "variety"]}, r"models.resnet.targets` is \['label', 'variety'\]"),
    ],
    ids=["tags", "multi-target"],
)
def test_pseudo_labels_refuse_what_a_test_images_label_cannot_teach(params, changes, message):
    settings_with(params, changes)  # fine with pseudo-labels off
    with pytest.raises(PaddyError, match=f"`pseudo.enabled` is true in params.yaml.*{message}"):
        settings_with(params, {**changes, "pseudo.enabled": True})
