"""The Kaggle download: a fake client stands in for kaggle.KaggleApi (the package cannot target a test server)."""

import hashlib
import io
import json
import os
import subprocess
import sys
import textwrap
import time
import zipfile
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests
from helpers.data import zip_bytes
from helpers.kaggle import FakeKaggle
from helpers.pipeline import ROOT
from helpers.settings import default_competition

from paddy.data import download
from paddy.data.competition import check_layout
from paddy.errors import PaddyError
from paddy.kaggle import api as kaggle_api
from paddy.kaggle import cache as kaggle_cache

SLUG = "paddy-disease-classification"
SRC = str(ROOT / "src")


def download_competition(slug, dest, **kwargs):
    """paddy.data.download's, checking the download against the default (Paddy's) competition section."""
    return download.download_competition(slug, dest, lambda f: check_layout(f, default_competition()), **kwargs)


def competition_files():
    """A two-image competition, as the entries of Kaggle's zip."""
    return {
        "train.csv": "image_id,label,variety,age\n100.jpg,blast,ADT45,45\n101.jpg,normal,ADT45,50\n",
        "sample_submission.csv": "image_id,label\n200001.jpg,\n200002.jpg,\n",
        "train_images/blast/100.jpg": "jpg",
        "train_images/normal/101.jpg": "jpg",
        "test_images/200001.jpg": "jpg",
        "test_images/200002.jpg": "jpg",
    }


def http_error(status):
    response = requests.Response()
    response.status_code = status
    return requests.HTTPError(f"{status} Client Error", response=response)


@pytest.fixture
def no_credentials(tmp_path, monkeypatch):
    """No KAGGLE_* variables and an empty home: never reads or writes the real ~/.kaggle."""
    for key in list(os.environ):
        if key.startswith("KAGGLE_"):
            monkeypatch.delenv(key)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("KAGGLE_CONFIG_DIR", str(tmp_path / "kaggle-config"))
    return tmp_path


def test_good_download_extracts_checks_and_is_cached(tmp_path):
    fake = FakeKaggle(zip_bytes(competition_files()))
    dest, cache = tmp_path / "data/raw", tmp_path / "data/kaggle"
    train, sample, *_ = download_competition(SLUG, dest, client=fake, cache_dir=cache)
    assert len(train) == 2 and len(sample) == 2
    assert (dest / "train_images/blast/100.jpg").is_file() and (dest / "test_images/200002.jpg").is_file()
    assert (cache / f"{SLUG}.zip").is_file() and fake.downloads == 1
    names = sorted(p.name for p in cache.iterdir())  # no scratch folder left behind
    assert names == [f"{SLUG}.zip", f"{SLUG}.zip.json", f"{SLUG}.zip.lock"]

    # dvc deletes data/raw before the stage re-runs: the verified zip in the cache is reused, not downloaded again.
    import shutil

    shutil.rmtree(dest)
    offline = FakeKaggle(error=AssertionError("must not download"))
    download_competition(SLUG, dest, client=offline, cache_dir=cache)
    assert offline.downloads == 0 and (dest / "train.csv").is_file()


@pytest.mark.parametrize("evil", ["../evil.txt", "/tmp/evil-abs.txt", "train_images/../../evil.txt"])
def test_zip_slip_is_refused_and_nothing_extracted(tmp_path, evil):
    entries = competition_files() | {evil: "pwned"}
    dest, cache = tmp_path / "work/data/raw", tmp_path / "work/data/kaggle"
    with pytest.raises(PaddyError, match="outside the target folder"):
        download_competition(SLUG, dest, client=FakeKaggle(zip_bytes(entries)), cache_dir=cache)
    assert not dest.exists()
    assert not (cache / f"{SLUG}.zip").exists()  # a bad download is not kept as if verified
    assert not list(tmp_path.rglob("evil*"))


def test_symlink_entry_is_refused(tmp_path):
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for name, text in competition_files().items():
            zf.writestr(name, text)
        link = zipfile.ZipInfo("train_images/link")
        link.external_attr = 0o120777 << 16  # a symbolic link entry
        zf.writestr(link, "/etc/passwd")
    with pytest.raises(PaddyError, match="symbolic link"):
        download_competition(SLUG, tmp_path / "raw", client=FakeKaggle(buf.getvalue()), cache_dir=tmp_path / "c")
    assert not (tmp_path / "raw").exists()


def test_truncated_download_is_refused(tmp_path):
    data = zip_bytes(competition_files())
    fake = FakeKaggle(data[: len(data) // 2])
    with pytest.raises(PaddyError, match="not a complete zip"):
        download_competition(SLUG, tmp_path / "raw", client=fake, cache_dir=tmp_path / "cache")
    assert not (tmp_path / "raw").exists()
    assert not (tmp_path / "cache" / f"{SLUG}.zip").exists()


def test_truncated_cached_zip_is_downloaded_again(tmp_path, capsys):
    data = zip_bytes(competition_files())
    cache = tmp_path / "cache"
    cache.mkdir()
    (cache / f"{SLUG}.zip").write_bytes(data[:100])  # an interrupted earlier download
    fake = FakeKaggle(data)
    download_competition(SLUG, tmp_path / "raw", client=fake, cache_dir=cache)
    assert fake.downloads == 1 and (tmp_path / "raw/train.csv").is_file()
    assert "downloading again" in capsys.readouterr().err


def test_the_cache_records_size_and_sha256_and_reuses_only_a_match(tmp_path, capsys):
    data = zip_bytes(competition_files())
    cache = tmp_path / "cache"
    zip_path = kaggle_api.fetch_zip(SLUG, client=FakeKaggle(data), cache_dir=cache)
    record = json.loads((cache / f"{SLUG}.zip.json").read_text())
    assert record == {"size": len(data), "sha256": hashlib.sha256(data).hexdigest()}

    # Same size, one byte changed (bit rot, or a copy overwritten by hand): the sha256 no longer matches.
    zip_path.write_bytes(data[:-1] + bytes([data[-1] ^ 1]))
    fake = FakeKaggle(data)
    assert kaggle_api.fetch_zip(SLUG, client=fake, cache_dir=cache) == zip_path
    assert fake.downloads == 1 and zip_path.read_bytes() == data
    assert "does not match its recorded size and sha256" in capsys.readouterr().err

    (cache / f"{SLUG}.zip.json").unlink()  # a zip nobody verified is not trusted either
    fake = FakeKaggle(data)
    kaggle_api.fetch_zip(SLUG, client=fake, cache_dir=cache)
    assert fake.downloads == 1


def test_the_cache_is_per_user_and_can_be_moved(tmp_path, monkeypatch):
    monkeypatch.delenv(kaggle_cache.ENV, raising=False)
    monkeypatch.delenv("PADDY_CACHE", raising=False)  # the tests' own cache (conftest)
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert kaggle_cache.default_dir() == tmp_path / "home/.cache/paddy/kaggle"
    monkeypatch.setenv(kaggle_cache.ENV, str(tmp_path / "shared"))
    zip_path = kaggle_api.fetch_zip(SLUG, client=FakeKaggle(zip_bytes(competition_files())))
    assert zip_path == tmp_path / "shared" / f"{SLUG}.zip" and kaggle_cache.is_verified(zip_path)


class SlowKaggle(FakeKaggle):
    """A download that takes a while, so that two workers overlap."""

    def competition_download_files(self, competition, path=None, force=False, quiet=True):
        time.sleep(0.5)
        super().competition_download_files(competition, path, force, quiet)


def test_concurrent_workers_download_once(tmp_path):
    data = zip_bytes(competition_files())
    fake = SlowKaggle(data)  # shared, so that `downloads` counts both workers' calls
    with ThreadPoolExecutor(2) as pool:
        paths = list(pool.map(lambda _: kaggle_api.fetch_zip(SLUG, client=fake, cache_dir=tmp_path), range(2)))
    assert paths[0] == paths[1] and fake.downloads == 1
    assert paths[0].read_bytes() == data and kaggle_cache.is_verified(paths[0])


def test_wrong_layout_leaves_no_folder(tmp_path):
    entries = {k: v for k, v in competition_files().items() if not k.startswith("test_images")}
    with pytest.raises(PaddyError, match="test_images"):
        download_competition(SLUG, tmp_path / "raw", client=FakeKaggle(zip_bytes(entries)), cache_dir=tmp_path / "c")
    assert not (tmp_path / "raw").exists()


def test_403_says_accept_the_rules(tmp_path):
    with pytest.raises(PaddyError) as err:
        download_competition(SLUG, tmp_path / "raw", client=FakeKaggle(error=http_error(403)), cache_dir=tmp_path / "c")
    msg = str(err.value)
    assert "403" in msg and "rules" in msg and kaggle_api.rules_url(SLUG) in msg
    assert not (tmp_path / "raw").exists()


@pytest.mark.parametrize(
    "error, expected",
    [
        (http_error(401), "KAGGLE_API_TOKEN"),
        (http_error(404), "data.competition"),
        (requests.ConnectionError("Name or service not known"), "Could not reach Kaggle"),
        (SystemExit(1), "gave up"),
    ],
)
def test_other_failures_are_one_clear_paragraph(tmp_path, error, expected):
    with pytest.raises(PaddyError, match=expected):
        download_competition(SLUG, tmp_path / "raw", client=FakeKaggle(error=error), cache_dir=tmp_path)


def test_messages_never_carry_the_key(monkeypatch):
    monkeypatch.setenv("KAGGLE_KEY", "planted-secret-key-0123")
    err = kaggle_api.translate(RuntimeError("auth header planted-secret-key-0123 refused"), "download", SLUG)
    assert "planted-secret-key-0123" not in str(err) and "***" in str(err)


def test_credential_sources(no_credentials, monkeypatch):
    assert kaggle_api.credential_source() is None
    monkeypatch.setenv("KAGGLE_USERNAME", "someone")
    assert kaggle_api.credential_source() is None  # a user name alone is not enough
    monkeypatch.setenv("KAGGLE_KEY", "k" * 32)
    assert kaggle_api.credential_source() == "KAGGLE_USERNAME/KAGGLE_KEY"
    monkeypatch.delenv("KAGGLE_USERNAME")
    monkeypatch.delenv("KAGGLE_KEY")
    cfg = no_credentials / "kaggle-config"
    cfg.mkdir()
    (cfg / "kaggle.json").write_text('{"username": "someone", "key": "abcd1234"}')
    (cfg / "kaggle.json").chmod(0o600)
    assert kaggle_api.credential_source() == str(cfg / "kaggle.json")
    (cfg / "kaggle.json").unlink()
    monkeypatch.setenv("KAGGLE_API_TOKEN", "tok")
    assert kaggle_api.credential_source() == "KAGGLE_API_TOKEN"


def test_missing_credentials_touch_nothing(no_credentials, capsys):
    dest, cache = no_credentials / "data/raw", no_credentials / "data/kaggle"
    with pytest.raises(PaddyError, match="No Kaggle credentials") as err:
        download_competition(SLUG, dest, cache_dir=cache)
    assert "KAGGLE_USERNAME" in str(err.value) and "chmod 600" in str(err.value)
    assert not dest.exists() and not cache.exists()
    assert "kaggle auth login" not in capsys.readouterr().out  # the package's own help never printed


def _run_stage(tmp_path, env_extra):
    """Call download_competition like the download stage does, in a fresh process with the real kaggle package."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("KAGGLE_")}
    env.update(HOME=str(tmp_path / "home"), KAGGLE_CONFIG_DIR=str(tmp_path / "cfg"), PYTHONPATH=SRC, **env_extra)
    code = textwrap.dedent(
        """
        from paddy.errors import exit_on_error
        from paddy.data.download import download_competition
        exit_on_error(lambda: download_competition("paddy-disease-classification", "data/raw", check=None))()
        """
    )
    start = time.monotonic()
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True)
    return out, time.monotonic() - start


def test_new_user_without_credentials_gets_the_message_fast(tmp_path):
    out, seconds = _run_stage(tmp_path, {})
    assert out.returncode == 2, out.stderr
    assert "No Kaggle credentials" in out.stderr and "Traceback" not in out.stderr
    assert out.stdout == "" and seconds < 20
    assert not (tmp_path / "data").exists()  # the workspace is untouched


def test_real_package_offline_with_a_planted_key(tmp_path):
    key = "PLANTED-fake-kaggle-key-9f8e7d"
    # A refused proxy makes the real package fail at once, with or without internet on this machine.
    proxy = "http://127.0.0.1:9"
    out, seconds = _run_stage(
        tmp_path, {"KAGGLE_USERNAME": "someone", "KAGGLE_KEY": key, "HTTPS_PROXY": proxy, "https_proxy": proxy}
    )
    assert out.returncode == 2, out.stderr
    assert "Could not reach Kaggle" in out.stderr and "Traceback" not in out.stderr
    assert key not in out.stdout + out.stderr
    assert not (tmp_path / "data/raw").exists() and seconds < 30
    for path in tmp_path.rglob("*"):
        if path.is_file():
            assert key.encode() not in path.read_bytes(), path
