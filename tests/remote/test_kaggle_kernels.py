"""`paddy kaggle run|status|pull` against FakeKernels (helpers/kaggle.py), which runs a pushed bundle for real in a
folder laid out as a Kaggle session: the bundle, its checks and secrets, the manifest, the API's errors, and end to
end (slow) the pulled experiment in `dvc exp show`, its submission, and a killed run resumed."""

import base64
import io
import json
import re
import shutil
import zipfile
from pathlib import Path

import pytest
import yaml
from helpers.kaggle import FakeKernels
from helpers.pipeline import ROOT, copy_pipeline, sh
from helpers.settings import SLUG

from paddy import commands as cli
from paddy.data.synthetic import make_competition
from paddy.errors import PaddyError
from paddy.remote import bundle, pull, runner


def kernel_repo(repo, **train):
    """A committed, shrunk pipeline (copy_pipeline) with what the bundle installs from, and the presets."""
    repo.mkdir(parents=True, exist_ok=True)
    copy_pipeline(repo, commit=False)
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, repo / name)
    shutil.copytree(ROOT / "presets", repo / "presets")
    if train:
        params = yaml.safe_load((repo / "params.yaml").read_text())
        params["train"].update(train)
        (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    sh("git init -q && git add -A && git -c user.name=t -c user.email=t@t commit -qm init", repo)
    return repo


def unpacked(folder):
    """The bundle's files and the embedded project's, name -> bytes."""
    files = {p.name: p.read_bytes() for p in Path(folder).iterdir()}
    encoded = re.search(r'^BUNDLE = """\n(.*?)\n"""', files[bundle.CODE_FILE].decode(), flags=re.S | re.M).group(1)
    with zipfile.ZipFile(io.BytesIO(base64.b64decode(encoded))) as z:
        files |= {f"project/{n}": z.read(n) for n in z.namelist()}
    return files


def kaggle(*argv, client=None):
    args = cli.build_parser().parse_args(["kaggle", *argv])
    return args.run(args, client=client)


def experiment_rows(repo):
    """`dvc exp show --json` in `repo`, as paddy compare reads it: experiment name -> row."""
    import subprocess

    from helpers.pipeline import venv_env

    from paddy.leaderboard.compare import experiments

    out = subprocess.run(["dvc", "exp", "show", "--json"], cwd=repo, env=venv_env(), capture_output=True, text=True)
    return {r["experiment"]: r for r in experiments(json.loads(out.stdout))}


@pytest.mark.slow
def test_run_status_pull_lists_the_experiment_and_submit_accepts_it(tmp_path, monkeypatch, capsys):
    repo = kernel_repo(tmp_path / "repo")
    competition = tmp_path / "competition"  # the generated competition, under the real one's slug
    make_competition(competition, tmp_path / "truth.csv", n_train=80, n_test=16, width=48, height=64)
    fake = FakeKernels(competition, tmp_path / "kaggle")
    monkeypatch.chdir(repo)

    assert kaggle("run", client=fake) == 0
    out = capsys.readouterr().out
    assert "kernel:      tester/paddy-train" in out and "26.5 h left this week" in out and "t4x2" in out
    meta, machine, _ = fake.pushed[0]
    assert machine == "NvidiaTeslaT4" and meta["competition_sources"] == [SLUG]

    assert kaggle("status", client=fake) == 0
    assert "tester/paddy-train/1: complete" in capsys.readouterr().out
    assert kaggle("pull", client=fake) == 0
    output = repo / "kernels" / "paddy-train" / "v1" / "output"
    kernel_metrics = json.loads((output / "metrics" / "ensemble.json").read_text())

    rows = experiment_rows(repo)
    pulled = rows["paddy-train-v1"]
    assert pulled["metrics"]["oof_acc.ensemble"] == kernel_metrics["oof_acc"]["ensemble"]
    assert pulled["params"]["data.source"] == str(tmp_path / "kaggle" / "paddy-train" / "v1" / "input" / SLUG)
    assert pulled["submission_md5"] == runner.md5(output / "submission.csv")
    assert sh("git status --porcelain", repo) == ""  # the workspace is as it was
    assert cli.main(["compare", "--ledger", str(tmp_path / "ledger.csv")]) == 0
    assert "paddy-train-v1" in capsys.readouterr().out
    plots = json.loads(sh("dvc plots diff paddy-train-v1 --json 2>/dev/null", repo))["data"]
    assert plots["dvclive/resnet/learning_curves.png"][0]["revisions"] == ["paddy-train-v1"]

    ledger = tmp_path / "ledger.csv"
    args = ["submit", "--kernel", "paddy-train", "-m", "on Kaggle", "--dry-run", "--ledger", str(ledger)]
    assert cli.main(args) == 0
    out = capsys.readouterr().out
    assert "valid against" in out and "kernel:      tester/paddy-train/1" in out and "[paddy-train-v1 " in out
    assert not ledger.exists()


@pytest.fixture(scope="module")
def repo(tmp_path_factory):
    """A committed pipeline to bundle (tests must not modify it)."""
    return kernel_repo(tmp_path_factory.mktemp("kernels") / "repo")


def test_the_bundle_carries_no_credentials(repo, tmp_path, monkeypatch, capsys):
    key = "f00dfacecafe1234beef5678deadc0de"
    monkeypatch.setenv("KAGGLE_USERNAME", "planted")
    monkeypatch.setenv("KAGGLE_KEY", key)
    monkeypatch.setenv("KAGGLE_CONFIG_DIR", str(tmp_path / "config"))
    (tmp_path / "config").mkdir()
    (tmp_path / "config" / "kaggle.json").write_text(json.dumps({"username": "planted", "key": key[::-1]}))
    monkeypatch.chdir(repo)
    assert kaggle("run", "--dry-run", "--out", str(tmp_path / "bundle")) == 0
    files = unpacked(tmp_path / "bundle")
    assert "project/src/paddy/remote/runner.py" in files and "project/params.yaml" in files
    assert not any(n.startswith(("project/dvc.lock", "project/metrics", "project/.dvc/")) for n in files)
    for name, blob in files.items():
        assert key.encode() not in blob and key[::-1].encode() not in blob, name
    assert "planted/paddy-train" in capsys.readouterr().out  # the user name is no secret: the kernel's id


def test_a_committed_credential_refuses_the_bundle(tmp_path, monkeypatch):
    key = "0123456789abcdef0123456789abcdef"
    leaky = kernel_repo(tmp_path / "repo")
    (leaky / "src" / "paddy" / "leak.py").write_text(f"KEY = '{key}'\n")
    sh("git add -A && git -c user.name=t -c user.email=t@t commit -qm leak", leaky)
    monkeypatch.setenv("KAGGLE_KEY", key)
    monkeypatch.chdir(leaky)
    with pytest.raises(PaddyError, match=r"src/paddy/leak.py holds one of your Kaggle credentials"):
        kaggle("run", "--dry-run", "--out", str(tmp_path / "bundle"))
    assert not (tmp_path / "bundle").exists()


def test_metadata_and_settings_of_the_bundle(repo, tmp_path, monkeypatch):
    monkeypatch.chdir(repo)
    out = tmp_path / "bundle"
    argv = ["--dry-run", "--out", str(out), "--name", "my-run", "--accelerator", "p100", "-S", "train.epochs=2"]
    assert kaggle("run", *argv, client=FakeKernels(tmp_path, tmp_path)) == 0
    meta = json.loads((out / bundle.METADATA).read_text())
    assert meta["id"] == "tester/my-run" and meta["code_file"] == bundle.CODE_FILE
    assert (meta["kernel_type"], meta["language"], meta["is_private"]) == ("script", "python", True)
    assert (meta["enable_gpu"], meta["enable_internet"], meta["competition_sources"]) == (True, True, [SLUG])
    assert meta["machine_shape"] == "NvidiaTeslaP100" and meta["kernel_sources"] == []
    params = yaml.safe_load(unpacked(out)["project/params.yaml"])
    assert params["train"]["epochs"] == 2 and params["kaggle"] == {"kernel": "my-run", "accelerator": "p100",
                                                                   "keep_weights": False}  # fmt: skip
    compile((out / bundle.CODE_FILE).read_text(), bundle.CODE_FILE, "exec")  # a runnable script


@pytest.mark.parametrize("params_file", ["params.yaml", "presets/seed.yaml"])
def test_dry_run_writes_the_bundle_and_states_its_size(repo, tmp_path, monkeypatch, capsys, params_file):
    monkeypatch.chdir(repo)
    out = tmp_path / "bundle"
    assert kaggle("run", "--dry-run", "--out", str(out), "--params", params_file) == 0
    printed = capsys.readouterr().out
    size = (out / bundle.CODE_FILE).stat().st_size
    assert f"{size / 1e3:.0f} kB" in printed and "nothing sent" in printed and "precision:   fp16" in printed
    assert yaml.safe_load(unpacked(out)["project/params.yaml"]) == yaml.safe_load((repo / params_file).read_text())
    assert size < bundle.MAX_SCRIPT_BYTES


@pytest.mark.parametrize(
    "setting, expected",
    [
        ("train.epochs=0", "`train.epochs`"),
        ("train.epoch=3", "not an edit `dvc exp run -S` would make"),
        ("train.devices=3", "has 2 GPUs"),
        ("models.vit.arch=no_such_arch", "no_such_arch"),
        ("models.vit.pretrained=/home/me/weights.pth", "which is on this machine"),
        ("kaggle.accelerator=v100", "`kaggle.accelerator`"),
        ("kaggle.kernel=My_Run", "`kaggle.kernel`"),
    ],
)
def test_a_bad_setting_is_refused_before_anything_is_sent(repo, tmp_path, monkeypatch, setting, expected):
    monkeypatch.chdir(repo)
    fake = FakeKernels(tmp_path, tmp_path)
    with pytest.raises(PaddyError, match=re.escape(expected)):
        kaggle("run", "-S", setting, client=fake)
    assert fake.pushed == [] and not (repo / "kernels").exists()


def manifested_output(folder, status="complete"):
    """A kernel output with a real dvc.lock entry for its submission, and the runner's manifest."""
    folder.mkdir()
    (folder / "submission.csv").write_text("image_id,label\n200001.jpg,blast\n")
    (folder / "params.yaml").write_text("seed: 1\n")
    entry = {"path": "submission.csv", "md5": runner.md5(folder / "submission.csv")}
    lock = {"stages": {"ensemble": {"outs": [entry]}}}
    (folder / "dvc.lock").write_text(yaml.safe_dump(lock))
    (folder / "metrics").mkdir()
    (folder / "metrics" / "ensemble.json").write_text('{"oof_acc": {"ensemble": 0.5}}')
    runner.write_manifest(folder, status, [p for p in folder.rglob("*") if p.is_file()])
    return folder


def test_the_manifest_refuses_a_partial_or_tampered_output(tmp_path):
    out = manifested_output(tmp_path / "out")
    assert pull.verify(out)["status"] == "complete"
    metrics = out / "metrics" / "ensemble.json"
    metrics.write_text('{"oof_acc": {"ensemble": 0.9}}')  # same size, other content
    with pytest.raises(PaddyError, match="md5 differs from the manifest"):
        pull.verify(out)
    metrics.write_text('{"oof_acc"')
    with pytest.raises(PaddyError, match="a partial download"):
        pull.verify(out)
    metrics.unlink()
    with pytest.raises(PaddyError, match="missing from the kernel's output"):
        pull.verify(out)
    (out / runner.MANIFEST).unlink()
    with pytest.raises(PaddyError, match="has no paddy-manifest.json"):
        pull.verify(out)


def test_an_unfinished_run_is_not_pulled(tmp_path):
    out = manifested_output(tmp_path / "out", status="running")
    with pytest.raises(PaddyError, match="the session ended while it ran.*--resume x"):
        pull.verify(out, how_to_resume="`paddy kaggle run --resume x` continues it.")


class Refusing(FakeKernels):
    def __init__(self, status, **kwargs):
        super().__init__(".", ".", **kwargs)
        self.status = status

    def kernels_push(self, folder, timeout=None, acc=None, no_run=False):
        from helpers.kaggle import http_error

        raise http_error(self.status)


@pytest.mark.parametrize(
    "status, expected",
    [(401, "refused the credentials"), (403, "not accepted the rules"), (404, "Kaggle has no kernel"),
     (500, "HTTP 500")],
)  # fmt: skip
def test_api_errors_become_one_paragraph(repo, tmp_path, monkeypatch, status, expected):
    monkeypatch.chdir(tmp_path)
    shutil.copytree(repo, tmp_path / "r")
    monkeypatch.chdir(tmp_path / "r")
    with pytest.raises(PaddyError, match=expected) as err:
        kaggle("run", client=Refusing(status))
    assert "\n" not in str(err.value)
    assert not (tmp_path / "r" / "kernels").exists()


def test_status_of_a_failed_run_shows_the_end_of_its_log(repo, tmp_path, monkeypatch, capsys):
    shutil.copytree(repo, tmp_path / "r")
    monkeypatch.chdir(tmp_path / "r")
    (tmp_path / "empty").mkdir()
    fake = FakeKernels(tmp_path / "empty", tmp_path / "kaggle")  # no competition there: the runner stops
    assert kaggle("run", client=fake) == 0
    assert kaggle("status", client=fake) == 1
    out = capsys.readouterr().out
    assert "tester/paddy-train/1: error" in out
    assert "paddy runner: no competition folder under" in out and "--resume paddy-train" in out
    with pytest.raises(PaddyError, match="is error"):
        kaggle("pull", client=fake)
    with pytest.raises(PaddyError, match="has no version 7"):
        kaggle("status", "--version", "7", client=fake)


def test_auto_precision_is_fp16_on_kaggles_gpus(monkeypatch):
    import torch

    from paddy.training import precision

    cuda = torch.device("cuda", 0)
    for capability, expected in [((7, 5), "fp16"), ((6, 0), "fp16"), ((8, 0), "bf16"), ((9, 0), "bf16")]:
        monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device, c=capability: c)
        assert precision.resolve_precision("auto", cuda) == expected, capability
    with pytest.raises(PaddyError, match="does not support bfloat16"):
        monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device: (7, 5))
        precision.resolve_precision("bf16", cuda)


def test_the_runner_stops_the_pipeline_before_the_session_limit(tmp_path):
    project = tmp_path / "project"
    project.mkdir()
    (project / "dvc.yaml").write_text("stages:\n  sleep:\n    cmd: sleep 60\n")
    runner.dvc(project, "init", "--no-scm", "-q")
    assert runner.repro(project, stop_after_s=1, poll_s=0.2) == "interrupted"


COMPARED = ("submission.csv", "data/preds/resnet/test_probs.npy", "data/preds/vit/test_probs.npy")


@pytest.mark.slow
def test_a_killed_run_resumed_gives_the_uninterrupted_result(tmp_path, monkeypatch):
    """Two epochs; the session is killed once the first checkpoint is in the output; --resume continues from it."""
    competition = tmp_path / "competition"
    make_competition(competition, tmp_path / "truth.csv", n_train=80, n_test=12, width=48, height=64)
    results = {}
    for case in ("uninterrupted", "killed"):
        repo = kernel_repo(tmp_path / case, epochs=2)
        monkeypatch.chdir(repo)
        kill_when = "resume/resnet/*/*.pt" if case == "killed" else None
        fake = FakeKernels(competition, tmp_path / f"kaggle-{case}", kill_when=kill_when)
        assert kaggle("run", client=fake) == 0
        if case == "killed":
            with pytest.raises(PaddyError, match="is error"):
                kaggle("pull", client=fake)
            fake.kill_when = None
            assert kaggle("run", "--resume", "paddy-train", client=fake) == 0
            assert fake.pushed[1][0]["kernel_sources"] == ["tester/paddy-train/1"]
        assert kaggle("pull", client=fake) == 0
        version = 2 if case == "killed" else 1
        output = repo / "kernels" / "paddy-train" / f"v{version}" / "output"
        log = (tmp_path / f"kaggle-{case}" / "paddy-train" / f"v{version}" / "log.txt").read_text()
        results[case] = {name: runner.md5(output / name) for name in COMPARED}
        results[case]["log"] = log
    killed_log = results["killed"]["log"]
    assert "restored checkpoints from" in killed_log and "resumed at epoch" in killed_log, killed_log[-4000:]
    for name in COMPARED:
        assert results["killed"][name] == results["uninterrupted"][name], name
