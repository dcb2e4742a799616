"""The submission ledger: appending rows, refreshing scores with a bounded wait, `paddy scores`."""

import os
from types import SimpleNamespace

import pytest
from helpers.kaggle import FakeKaggle

from paddy import commands as cli
from paddy.kaggle import api as kaggle_api
from paddy.leaderboard import ledger

SLUG = "paddy-disease-classification"


def sub(ref, status, public="", private=""):
    return SimpleNamespace(ref=ref, description="", date="", status=status, public_score=public, private_score=private)


def row(ref, status="pending", **kw):
    base = {"time": "2024-01-01T00:00:00Z", "experiment": f"exp{ref}", "params_digest": "deadbeef", "cv": 0.96}
    return base | {"ref": str(ref), "status": status, "competition": SLUG, "message": "m"} | kw


def test_append_keeps_columns_and_rows(tmp_path):
    path = tmp_path / "submissions.csv"
    ledger.append_row(row(1), path)
    ledger.append_row(row(2, message="with, a comma"), path)
    df = ledger.read_ledger(path)
    assert list(df.columns) == ledger.COLUMNS
    assert list(df["ref"]) == ["1", "2"] and df.iloc[1]["message"] == "with, a comma"
    with pytest.raises(ValueError):
        ledger.append_row({"api_key": "x"}, path)


def test_refresh_fills_pending_scores(tmp_path):
    path = tmp_path / "submissions.csv"
    ledger.append_row(row(1, "complete", public_score=0.97, private_score=0.96), path)
    ledger.append_row(row(2), path)
    ledger.append_row(row(3), path)
    fake = FakeKaggle(
        submissions=[sub(1, "complete", "0.97", "0.96"), sub(2, "complete", "0.98100", ""), sub(3, "error")]
    )
    df = ledger.refresh_scores(fake, path)
    assert list(df["status"]) == ["complete", "complete", "error"]
    assert df.iloc[1]["public_score"] == pytest.approx(0.981)
    on_disk = ledger.read_ledger(path)
    assert on_disk.iloc[1]["public_score"] == pytest.approx(0.981) and on_disk.iloc[2]["status"] == "error"


def test_wait_is_bounded(tmp_path):
    path = tmp_path / "submissions.csv"
    ledger.append_row(row(7), path)
    fake = FakeKaggle(submissions=[sub(7, "pending")])
    now = [0.0]
    naps = []

    def sleep(seconds):
        naps.append(seconds)
        now[0] += seconds

    df = ledger.refresh_scores(fake, path, wait_s=30, poll_s=10, sleep=sleep, clock=lambda: now[0])
    assert df.iloc[0]["status"] == "pending"
    assert sum(naps) <= 30 and fake.listings == len(naps) + 1


def test_paddy_scores_command(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    ledger.append_row(row(5), "submissions.csv")
    fake = FakeKaggle(submissions=[sub(5, "complete", "0.98500", "0.98300")])
    monkeypatch.setattr(kaggle_api, "make_client", lambda: fake)
    assert cli.main(["scores"]) == 0
    out = capsys.readouterr().out
    assert "0.985" in out and "exp5" in out
    assert ledger.read_ledger("submissions.csv").iloc[0]["private_score"] == pytest.approx(0.983)
    # Nothing pending: no Kaggle call at all.
    monkeypatch.setattr(kaggle_api, "make_client", lambda: pytest.fail("nothing to refresh"))
    assert cli.main(["scores"]) == 0


def test_scores_without_credentials_is_a_clear_error(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    for key in [k for k in os.environ if k.startswith("KAGGLE_")]:
        monkeypatch.delenv(key)
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("KAGGLE_CONFIG_DIR", str(tmp_path / "cfg"))
    ledger.append_row(row(5), "submissions.csv")
    assert cli.main(["scores"]) == 2
    assert "No Kaggle credentials" in capsys.readouterr().err
