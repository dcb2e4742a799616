"""Each bad input gets one clear paragraph (PaddyError) before any work starts, naming the file or key."""

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from paddy.competition import check_layout
from paddy.errors import PaddyError
from paddy.models import check_archs
from paddy.params import check_params
from paddy.sources import fetch_competition

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def comp(competition, tmp_path):
    raw, _ = competition
    shutil.copytree(raw, tmp_path / "raw")
    return tmp_path / "raw"


def test_missing_train_csv(comp):
    (comp / "train.csv").unlink()
    with pytest.raises(PaddyError, match="train.csv is missing"):
        check_layout(comp)


def test_malformed_train_csv(comp):
    (comp / "train.csv").write_text("image_id,disease\n100001.jpg,blast\n")
    with pytest.raises(PaddyError, match="missing label"):
        check_layout(comp)


def test_missing_sample_submission(comp):
    (comp / "sample_submission.csv").unlink()
    with pytest.raises(PaddyError, match="sample_submission.csv is missing"):
        check_layout(comp)


def test_malformed_sample_submission(comp):
    (comp / "sample_submission.csv").write_text("id;label\n1;2\n")
    with pytest.raises(PaddyError, match="sample_submission.csv has columns"):
        check_layout(comp)


def test_label_folder_not_in_train_csv(comp):
    (comp / "train_images" / "rust").mkdir()
    with pytest.raises(PaddyError, match="label folder\\(s\\) rust"):
        check_layout(comp)


def test_duplicated_id_in_sample_submission_names_it_and_the_fix(comp):
    sample = comp / "sample_submission.csv"
    lines = sample.read_text().splitlines()
    sample.write_text("\n".join(lines + [lines[1]]) + "\n")  # the first test image listed twice
    with pytest.raises(PaddyError) as err:
        check_layout(comp)
    image_id = lines[1].split(",")[0]
    assert f"lists image_id '{image_id}' more than once (again at line {len(lines) + 1}" in str(err.value)
    assert "Delete the repeated rows" in str(err.value)


def test_random_bytes_named_zip_are_not_called_truncated(params, tmp_path):
    fake = tmp_path / "competition.zip"
    fake.write_bytes(bytes(range(256)) * 8)
    params["data"]["source"] = str(fake)
    with pytest.raises(PaddyError, match="is not a zip archive at all") as err:
        fetch_competition(params["data"], tmp_path / "raw", tmp_path / "truth.csv")
    assert "interrupted" not in str(err.value) and not (tmp_path / "raw").exists()


def test_a_truncated_zip_is_called_truncated(comp, params, tmp_path):
    whole = Path(shutil.make_archive(str(tmp_path / "whole"), "zip", comp))
    cut = tmp_path / "competition.zip"
    cut.write_bytes(whole.read_bytes()[: whole.stat().st_size // 2])
    params["data"]["source"] = str(cut)
    with pytest.raises(PaddyError, match="is not a complete zip archive .*interrupted download or copy"):
        fetch_competition(params["data"], tmp_path / "data/raw", tmp_path / "data/truth.csv")
    assert not (tmp_path / "data/raw").exists()


def test_unknown_architecture(params):
    params["models"]["resnet"]["arch"] = "resnet_does_not_exist"
    with pytest.raises(PaddyError, match="models.resnet.arch.*resnet_does_not_exist.*timm does not know"):
        check_archs(params)


def test_fixed_size_model_at_another_size(params):
    params["models"]["vit"]["size"] = [128, 96]
    with pytest.raises(PaddyError, match=r"fixed input of \[160, 160\]"):
        check_archs(params)


def test_micro_batch_larger_than_effective_batch(params):
    params["models"]["resnet"]["micro_batch"] = 32
    with pytest.raises(PaddyError, match=r"micro_batch` \(32\) is larger than `train.effective_batch` \(16\)"):
        check_params(params)


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
        ("models.vit.head", "keras", "fastai .*or timm"),
        ("models.vit.pretrained", "", "path of a weights file"),
    ],
)
def test_settings_out_of_range_are_refused(params, key, value, message):
    *path, last = key.split(".")
    node = params
    for part in path:
        node = node[part]
    node[last] = value
    with pytest.raises(PaddyError, match=f"`{key}` in params.yaml.*{message}"):
        check_params(params)


def test_weight_for_a_model_that_does_not_exist(params):
    params["models"]["vitt"] = {"weight": 2}  # what `-S '+models.vitt.weight=2'` makes of a typo
    with pytest.raises(PaddyError, match="no model `vitt`.*Did you mean `models.vit`"):
        check_params(params)


def test_source_path_that_does_not_exist(params, tmp_path):
    params["data"]["source"] = str(tmp_path / "nowhere")
    with pytest.raises(PaddyError, match="neither synthetic, kaggle, nor an existing folder"):
        fetch_competition(params["data"], tmp_path / "raw", tmp_path / "truth.csv")
    assert not (tmp_path / "raw").exists()


def test_a_stage_prints_one_paragraph_not_a_traceback(tmp_path):
    """What a user sees from `dvc repro` with a bad setting: exit 2, `error: ...`, no traceback, nothing written."""
    text = (ROOT / "params.yaml").read_text().replace("arch: test_vit", "arch: test_vitt")
    (tmp_path / "params.yaml").write_text(text)
    out = subprocess.run(
        [sys.executable, str(ROOT / "stages" / "check.py"), "data/checked"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 2
    assert "error: `models.vit.arch` in params.yaml is 'test_vitt'" in out.stderr
    assert "Close names: test_vit" in out.stderr
    assert "Traceback" not in out.stderr
    assert not (tmp_path / "data").exists()
