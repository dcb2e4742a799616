"""`paddy submit`: validation, staleness, identity in the message, dry run, the ledger row, no leaked key."""

import hashlib
import json
import zipfile
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml
from helpers.kaggle import FakeKaggle
from helpers.pipeline import ROOT

from paddy import commands as cli
from paddy.data.fingerprint import fingerprint
from paddy.errors import PaddyError
from paddy.kaggle import api as kaggle_api
from paddy.kaggle import cache as kaggle_cache
from paddy.leaderboard import ledger, submit
from paddy.settings import parse_settings

SLUG = "paddy-disease-classification"
TEST_IDS = tuple(f"{i}.jpg" for i in range(200001, 203470))  # the real competition's test images
# Predictions for the real competition's 3469 test images (paddy submits nothing else): blast, normal, then blast.
GOOD = "image_id,label\n" + "".join(f"{i},{'normal' if i == '200002.jpg' else 'blast'}\n" for i in TEST_IDS)


@pytest.fixture
def repo(tmp_path, monkeypatch):
    """A workspace after `dvc repro` on the real competition (`data.source: kaggle`): competition files, params,
    submission.csv recorded in dvc.lock, metrics."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(submit, "git_rev", lambda: "abc1234")
    raw = tmp_path / "data/raw"
    raw.mkdir(parents=True)
    (raw / "train.csv").write_text("image_id,label\n1.jpg,blast\n2.jpg,normal\n3.jpg,tungro\n")
    (raw / "sample_submission.csv").write_text("image_id,label\n" + "".join(f"{i},\n" for i in TEST_IDS))
    (tmp_path / "data/prepared").mkdir()
    (tmp_path / "data/prepared/labels.json").write_text('["blast", "normal", "tungro"]')
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params["data"]["source"] = "kaggle"
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    write_submission(GOOD)
    (tmp_path / "metrics").mkdir()
    oof = {"oof_acc": {"convnext": 0.93, "vit": 0.95, "ensemble": 0.96}}
    (tmp_path / "metrics/ensemble.json").write_text(json.dumps(oof))
    return tmp_path


def write_submission(text, lock=True):
    Path("submission.csv").write_text(text)
    if lock:
        outs = [{"path": "submission.csv", "hash": "md5", "md5": submit.file_md5("submission.csv"), "size": 1}]
        Path("dvc.lock").write_text(yaml.safe_dump({"schema": "2.0", "stages": {"ensemble": {"outs": outs}}}))


def exp_json(md5, name="vit-x2"):
    """What `dvc exp show --json` says: an experiment whose submission.csv has this md5."""
    data = {"params": {}, "metrics": {}, "outs": {"submission.csv": {"hash": md5}}}
    exp = {"rev": "f" * 40, "name": name, "data": data}
    return [{"rev": "a" * 40, "name": "main", "data": {"outs": {}}, "experiments": [{"revs": [exp]}]}]


def args(**kw):
    argv = ["submit", "-m", kw.pop("message", "vit x2")]
    for key, value in kw.items():
        flag = "--" + key.replace("_", "-")
        argv += [flag] if value is True else [flag, str(value)]
    return cli.build_parser().parse_args(argv)


def run(client=None, status=None, **kw):
    md5 = submit.file_md5("submission.csv")
    return submit.submit(args(**kw), client=client, exp_json=exp_json(md5), status=status or {}, sleep=lambda s: None)


@pytest.mark.parametrize(
    "text, expected",
    [
        (GOOD.replace("200003.jpg,blast", "999999.jpg,blast"), "999999.jpg"),
        (GOOD.replace("203469.jpg,blast\n", ""), "3468 rows"),
        (GOOD.replace("200002.jpg,normal", "200002.jpg,rust"), "rust"),
        (GOOD.replace("image_id,label", "id,label"), "header"),
    ],
    ids=["wrong-id", "missing-row", "unknown-label", "header"],
)
def test_invalid_file_is_refused_before_sending(repo, text, expected):
    write_submission(text)
    client = FakeKaggle()
    with pytest.raises(PaddyError, match=expected):
        run(client)
    assert client.sent == [] and not (repo / "submissions.csv").exists()


def test_file_not_in_dvc_lock_is_stale(repo):
    write_submission(GOOD)
    Path("submission.csv").write_text(GOOD.replace("200003.jpg,blast", "200003.jpg,tungro"))  # edited by hand
    client = FakeKaggle()
    with pytest.raises(PaddyError, match="stale"):
        run(client)
    assert client.sent == []
    assert run(client, force=True, wait=0) == 0 and len(client.sent) == 1  # --force sends it anyway


def test_pipeline_with_unreproduced_changes_is_stale(repo):
    client = FakeKaggle()
    status = {"train@vit": [{"changed deps": {"params.yaml": {"train.epochs": "modified"}}}]}
    with pytest.raises(PaddyError, match="not reproduced.*train@vit"):
        run(client, status=status)
    assert client.sent == []


def test_the_always_changed_fingerprint_counts_only_when_the_source_changed(repo, monkeypatch):
    """dvc status names the check and fingerprint stages on every run; submit compares the fingerprint itself."""
    answer = SimpleNamespace(
        returncode=0, stdout='{"check": ["always changed"], "fingerprint": ["always changed"]}', stderr=""
    )
    monkeypatch.setattr(submit.subprocess, "run", lambda *a, **k: answer)
    params = yaml.safe_load(Path("params.yaml").read_text())
    params["data"]["source"] = str(repo / "data/raw")  # the user's own folder
    Path("params.yaml").write_text(yaml.safe_dump(params))
    Path("data/source.json").write_text(json.dumps(fingerprint(parse_settings(params).data)))
    assert submit.dvc_status() == {}
    with open("data/raw/train.csv", "a") as f:
        f.write("4.jpg,blast\n")  # edited after the last download
    assert "changed since the last download" in submit.dvc_status()["fingerprint"][0]
    with pytest.raises(PaddyError, match="not reproduced.*fingerprint"):
        run(FakeKaggle(), status=submit.dvc_status())


def test_no_dvc_lock_is_refused(repo):
    Path("dvc.lock").unlink()
    with pytest.raises(PaddyError, match="records no output"):
        run(FakeKaggle())


def test_dry_run_sends_nothing(repo, capsys, monkeypatch):
    monkeypatch.setattr(kaggle_api, "make_client", lambda: pytest.fail("a dry run must not log in"))
    client = FakeKaggle()
    assert run(client, dry_run=True) == 0
    out = capsys.readouterr().out
    assert client.sent == [] and client.listings == 0 and not (repo / "submissions.csv").exists()
    assert "dry run" in out and "vit x2 [vit-x2 abc1234 p:" in out


def test_submission_is_recorded_and_scored(repo, capsys):
    client = FakeKaggle(pending_polls=1, public="0.98123", private="0.97900")
    assert run(client, wait=60, poll=5) == 0
    ((_, message, slug),) = client.sent
    digest = submit.params_digest(yaml.safe_load(Path("params.yaml").read_text()))
    assert message == f"vit x2 [vit-x2 abc1234 p:{digest}]" and slug == SLUG
    df = ledger.read_ledger()
    assert len(df) == 1
    row = df.iloc[0]
    assert row["experiment"] == "vit-x2" and row["params_digest"] == digest and row["ref"] == "4242"
    assert row["cv"] == pytest.approx(0.96) and row["cv_models"] == "convnext=0.93000;vit=0.95000"
    assert row["metric"] == "accuracy"  # a metrics file with oof_acc only: from before the competition's metric
    assert row["message"] == "vit x2" and row["status"] == "complete"
    assert row["public_score"] == pytest.approx(0.98123) and row["private_score"] == pytest.approx(0.979)
    assert client.listings == 2  # polled until the score came
    assert "git add submissions.csv" in capsys.readouterr().out

    # A second submission appends; the first row stays.
    run(FakeKaggle(pending_polls=99), message="second", wait=0)
    df = ledger.read_ledger()
    assert list(df["message"]) == ["vit x2", "second"] and df.iloc[1]["status"] == "pending"


def test_unknown_experiment_is_named_by_revision(repo):
    client = FakeKaggle()
    submit.submit(args(wait=0), client=client, exp_json=[], status={}, sleep=lambda s: None)
    assert "[abc1234+workspace p:" in client.sent[0][1]


def test_planted_key_never_written(repo, monkeypatch, capsys):
    key = "PLANTED-fake-key-5a4b3c2d1e"
    monkeypatch.setenv("KAGGLE_USERNAME", "someone")
    monkeypatch.setenv("KAGGLE_KEY", key)
    run(FakeKaggle(), dry_run=True)
    run(FakeKaggle(), wait=10)
    captured = capsys.readouterr()
    assert key not in captured.out + captured.err
    for path in repo.rglob("*"):
        if path.is_file():
            assert key.encode() not in path.read_bytes(), path


def test_identity_prefers_the_experiment_with_the_workspace_params():
    same = {"train": {"epochs": 9}}
    exps = exp_json("m")
    other = {
        "rev": "e" * 40,
        "name": "ep9",
        "data": {
            "params": {"params.yaml": {"data": same}},
            "outs": exps[0]["experiments"][0]["revs"][0]["data"]["outs"],
        },
    }
    exps[0]["experiments"].append({"revs": [other]})
    assert submit.identify("m", exps, "abc1234", params=same) == "ep9"
    assert submit.identify("m", exps, "abc1234") == "vit-x2"
    assert submit.identify("other", exps, "abc1234") == "abc1234+workspace"


def snapshot(repo):
    return {p: p.read_bytes() for p in repo.rglob("*") if p.is_file()}


def test_predictions_of_the_generated_competition_are_never_sent(repo, capsys, monkeypatch):
    """`data.source: synthetic`: even a dry run refuses, before saying the file is valid or what it would send."""
    monkeypatch.setattr(kaggle_api, "make_client", lambda: pytest.fail("nothing may log in"))
    params = yaml.safe_load(Path("params.yaml").read_text())
    params["data"]["source"] = "synthetic"
    Path("params.yaml").write_text(yaml.safe_dump(params))
    before, client = snapshot(repo), FakeKaggle()
    for flags in ({"dry_run": True}, {}):
        with pytest.raises(PaddyError, match=r"predicts the generated competition \(`data.source: synthetic`"):
            run(client, **flags)
    assert client.sent == [] and client.listings == 0 and snapshot(repo) == before
    assert "valid" not in capsys.readouterr().out


def test_a_source_with_other_test_images_is_not_the_competition(repo, tmp_path, monkeypatch):
    """A folder source laid out like the competition but with its own test set (here the generated one's first
    three ids): its predictions would be valid against its own sample, and meaningless on Kaggle. Told apart by the
    sample of Kaggle's own zip, in the cache once downloaded (`paddy init <slug>` or data.source kaggle)."""
    params = yaml.safe_load(Path("params.yaml").read_text())
    params["data"]["source"] = str(tmp_path / "data/raw")
    Path("params.yaml").write_text(yaml.safe_dump(params))
    real = Path("data/raw/sample_submission.csv").read_bytes()
    Path("data/raw/sample_submission.csv").write_text("image_id,label\n200001.jpg,\n200002.jpg,\n200003.jpg,\n")
    write_submission("image_id,label\n200001.jpg,blast\n200002.jpg,normal\n200003.jpg,blast\n")
    run(FakeKaggle(), dry_run=True)  # Kaggle's zip not downloaded: checked against its own sample alone
    monkeypatch.setenv(kaggle_cache.ENV, str(tmp_path / "kaggle-cache"))
    zipped = tmp_path / "downloaded.zip"
    with zipfile.ZipFile(zipped, "w") as zf:
        zf.writestr("sample_submission.csv", real)
    (tmp_path / "kaggle-cache").mkdir()
    kaggle_cache.store(zipped, kaggle_cache.zip_path(SLUG))
    before, client = snapshot(repo), FakeKaggle()
    with pytest.raises(PaddyError, match=r"is not paddy-disease-classification's: it lists 3 test images") as err:
        run(client, dry_run=True)
    assert "Kaggle's zip of the competition" in str(err.value) and "3469 (200001.jpg, 200002.jpg, ...)" in str(
        err.value
    )
    assert client.sent == [] and snapshot(repo) == before


def test_with_pseudo_labels_on_it_sends_round_twos_submission_as_dvc_lock_records_it(repo):
    """pseudo.enabled: the default file is data/pseudo/submission.csv, fresh when it is the one the pseudo stage's
    folder output lists (its listing in DVC's cache), and the CV is round 2's."""
    params = yaml.safe_load(Path("params.yaml").read_text())
    params["pseudo"]["enabled"] = True
    Path("params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    folder = Path("data/pseudo")
    folder.mkdir()
    (folder / "submission.csv").write_text(GOOD.replace("200003.jpg,blast", "200003.jpg,tungro"))
    (folder / "ensemble.json").write_text(json.dumps({"oof_acc": {"vit": 0.95, "ensemble": 0.97}}))

    def lock(md5):
        listing = json.dumps([{"md5": md5, "relpath": "submission.csv"}])
        dir_md5 = hashlib.md5(listing.encode()).hexdigest() + ".dir"
        cached = Path(".dvc/cache/files/md5") / dir_md5[:2] / dir_md5[2:]
        cached.parent.mkdir(parents=True, exist_ok=True)
        cached.write_text(listing)
        outs = [{"path": "data/pseudo", "hash": "md5", "md5": dir_md5, "size": 1, "nfiles": 1}]
        stages = yaml.safe_load(Path("dvc.lock").read_text())["stages"] | {"pseudo": {"outs": outs}}
        Path("dvc.lock").write_text(yaml.safe_dump({"schema": "2.0", "stages": stages}))

    lock("0" * 32)  # another run's file
    with pytest.raises(PaddyError, match="data/pseudo/submission.csv is stale"):
        run(FakeKaggle(), wait=0)
    lock(submit.file_md5(folder / "submission.csv"))
    client = FakeKaggle()
    run(client, wait=0)
    ((sent, _, _),) = client.sent
    assert sent == (folder / "submission.csv").read_text() != Path("submission.csv").read_text()
    assert ledger.read_ledger().iloc[0]["cv"] == pytest.approx(0.97)
