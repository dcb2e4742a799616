"""The source fingerprint: it changes when the competition data.source names changes, and only then."""

import os
import shutil

import pytest

from paddy.data.fingerprint import fingerprint
from paddy.errors import PaddyError
from paddy.kaggle import cache as kaggle_cache
from paddy.settings import parse_settings


@pytest.fixture
def folder(competition, tmp_path):
    raw, _ = competition
    return shutil.copytree(raw, tmp_path / "competition")


def test_a_folder_changes_with_any_file_and_only_then(folder, source_settings):
    data = source_settings(folder)
    before = fingerprint(data)
    assert fingerprint(data) == before  # nothing changed, nothing to rerun
    (folder / "train.csv").write_text((folder / "train.csv").read_text() + "\n")  # an edit
    edited = fingerprint(data)
    assert edited != before
    image = next((folder / "test_images").iterdir())
    os.utime(image, ns=(image.stat().st_atime_ns, image.stat().st_mtime_ns + 1))  # same size, rewritten
    assert fingerprint(data) != edited
    (folder / "test_images" / "extra.jpg").write_bytes(b"")
    assert fingerprint(data)["files"] == edited["files"] + 1


def test_a_zip_changes_when_rewritten(tmp_path, source_settings):
    zip_file = tmp_path / "comp.zip"
    zip_file.write_bytes(b"PK\x05\x06" + bytes(18))
    data = source_settings(zip_file)
    before = fingerprint(data)
    os.utime(zip_file, ns=(0, zip_file.stat().st_mtime_ns + 1))
    assert fingerprint(data) != before


def test_kaggle_follows_the_verified_zip_in_the_cache(tmp_path, source_settings):
    data = source_settings("kaggle")
    assert data.competition == "paddy-disease-classification"
    assert fingerprint(data, cache_dir=tmp_path)["zip_sha256"] is None  # not downloaded yet
    got = tmp_path / "download.zip"
    got.write_bytes(b"zip bytes")
    kaggle_cache.store(got, kaggle_cache.zip_path(data.competition, tmp_path))
    assert fingerprint(data, cache_dir=tmp_path)["zip_sha256"] == kaggle_cache.sha256(
        tmp_path / f"{data.competition}.zip"
    )


def test_synthetic_follows_its_settings(params):
    before = fingerprint(parse_settings(params).data)
    params["data"]["synthetic"]["n_train"] += 1
    assert fingerprint(parse_settings(params).data) != before


@pytest.mark.parametrize("name, message", [("nowhere", "neither synthetic, kaggle"), ("notes.txt", "not a .zip")])
def test_a_source_that_is_not_a_folder_or_zip_is_refused(tmp_path, name, message, source_settings):
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(PaddyError, match=message):
        fingerprint(source_settings(tmp_path / name))
