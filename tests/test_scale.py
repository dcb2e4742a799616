"""Outgrowing one machine with DVC's own engines (slow): two queued experiments run at once with `dvc queue start -j 2`
on the prepared data already in the cache, and a local-folder DVC remote carries runs and experiments between clones.
See docs/scale.md."""

import json
import time
from pathlib import Path

import pytest
import yaml
from helpers.pipeline import copy_pipeline, sh

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow


def git_commit(repo, message):
    sh(f"git add -A && git commit -qm '{message}'", repo)


def identify(repo):
    sh("git config user.name test && git config user.email test@example.com", repo)  # DVC commits experiments


@pytest.fixture(scope="module")
def remotes(tmp_path_factory):
    """A local-folder DVC remote and a bare git repository as `origin` (file://), as a team would share."""
    where = tmp_path_factory.mktemp("remotes")
    sh("git init -q --bare origin.git", where)
    return where / "dvc-storage", f"file://{where / 'origin.git'}"


@pytest.fixture(scope="module")
def repo(tmp_path_factory, remotes):
    """The repository shrunk to one small model on a tiny competition, after one `dvc repro`, committed and pushed to
    git (not to the DVC remote)."""
    repo = tmp_path_factory.mktemp("scale") / "repo"
    repo.mkdir()
    copy_pipeline(repo, commit=False)
    params = yaml.safe_load((repo / "params.yaml").read_text())
    params["data"]["synthetic"].update(n_train=60, n_test=12, width=48, height=64)
    params["prepare"].update(max_size=64, workers=1)
    params["train"].update(epochs=1, effective_batch=16)
    params["tta"]["n"] = 1
    resnet = dict(params["models"]["resnet"], item_size=[64, 48], size=[48, 32], micro_batch=8)
    params["models"] = {"resnet": resnet}
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    storage, origin = remotes
    sh("git init -q", repo)
    identify(repo)
    sh(f"dvc remote add -d storage {storage} && git remote add origin {origin}", repo)
    git_commit(repo, "init")
    sh("dvc repro", repo)
    git_commit(repo, "run")
    sh("git push -q origin HEAD:main", repo)
    return repo


def queue_status(repo):
    """{experiment name: status} from `dvc queue status`."""
    table = sh("dvc queue status", repo).split("\n\n")[0].splitlines()  # then a blank line and the workers
    return {row.split()[1]: row.split()[-1] for row in table[1:]}


@pytest.fixture(scope="module")
def queued(repo):
    """Two experiments queued with different learning rates and run by `dvc queue start -j 2`: the queue status
    polled every 2 s until both finished."""
    for lr in ("0.02", "0.005"):
        sh(f"dvc exp run --queue -n lr-{lr} -S train.lr={lr}", repo)
    try:
        # Workers are daemons that inherit stdout: sent to a pipe, `run` would wait for them to finish the queue.
        sh("dvc queue start -j 2 > ../queue-start.log 2>&1", repo, OMP_NUM_THREADS="1")  # one torch thread each
        seen, deadline = [], time.monotonic() + 900
        while not seen or {"Queued", "Running"} & set(seen[-1].values()):
            assert time.monotonic() < deadline, f"the queue did not finish in 15 minutes: {seen[-1]}"
            time.sleep(2)
            seen.append(queue_status(repo))
    finally:
        sh("dvc queue stop --kill", repo)  # no worker outlives the test, even a failed one
    return seen


def experiments(repo, *flags):
    shown = json.loads(sh(f"dvc exp show --json {' '.join(flags)}", repo))
    return shown, {e["name"]: e["revs"][0]["data"] for b in shown if b.get("experiments") for e in b["experiments"]}


def test_two_queued_experiments_train_at_once_on_the_cached_data(repo, queued):
    assert queued[-1] == {"lr-0.02": "Success", "lr-0.005": "Success"}, queued
    assert {"lr-0.02": "Running", "lr-0.005": "Running"} in queued, f"never both running at once: {queued}"

    for name in queued[-1]:
        log = sh(f"dvc queue logs {name}", repo)
        # The queued copy checked the prepared data out of the shared cache instead of preparing it again.
        for stage in ("download", "prepare", "split", "profile@resnet"):
            assert f"Stage '{stage}' didn't change, skipping" in log, log
            assert f"Running stage '{stage}'" not in log, log
        assert "Running stage 'train@resnet'" in log and "Running stage 'ensemble'" in log, log

    shown, exps = experiments(repo)
    assert set(exps) == {"lr-0.02", "lr-0.005"}
    models = set()
    for name, data in exps.items():
        assert str(data["params"]["params.yaml"]["data"]["train"]["lr"]) == name.removeprefix("lr-")
        metrics = data["metrics"]
        assert 0 <= metrics["dvclive/resnet/metrics.json"]["data"]["valid_acc"] <= 1
        assert 0 <= metrics["metrics/ensemble.json"]["data"]["oof_acc"]["ensemble"] <= 1
        models.add(data["outs"]["data/models/resnet"]["hash"])
    workspace = shown[0]["data"]["outs"]["data/models/resnet"]["hash"]
    assert len(models) == 2 and workspace not in models, "each experiment trains its own model"


def clone(origin, path):
    sh(f"git clone -q -b main {origin} {path}", path.parent)
    identify(path)
    return path


def test_a_fresh_clone_pulls_everything_and_has_nothing_to_reproduce(repo, remotes, tmp_path):
    sh("dvc push", repo)
    other = clone(remotes[1], tmp_path / "clone")
    assert not (other / "data" / "prepared").exists()
    sh("dvc pull", other)
    out = sh("dvc repro", other)
    ran = [line for line in out.splitlines() if line.startswith("Running stage")]
    # always_changed: the check and the source's fingerprint; nothing else runs
    assert ran == ["Running stage 'check':", "Running stage 'fingerprint':"], out
    assert (other / "submission.csv").read_text() == (repo / "submission.csv").read_text()


def test_exp_push_and_pull_carry_an_experiment_between_clones(repo, remotes, queued, tmp_path):
    # The queue ran on "the GPU box" (repo); a colleague's clone fetches one result, outputs included.
    sh("dvc exp push origin lr-0.02", repo)
    other = clone(remotes[1], tmp_path / "colleague")
    sh("dvc exp pull origin lr-0.02", other)
    _, exps = experiments(other)
    assert set(exps) == {"lr-0.02"}
    assert exps["lr-0.02"]["metrics"] == experiments(repo)[1]["lr-0.02"]["metrics"]
    sh("dvc exp apply lr-0.02", other)  # outputs from the DVC remote, fetched by exp pull: no dvc pull was run
    assert yaml.safe_load((other / "params.yaml").read_text())["train"]["lr"] == 0.02
    status = json.loads(sh("dvc status --json", other))
    # check and fingerprint are always_changed by design (dvc.yaml says why); every output is restored
    always = {"check": ["always changed"], "fingerprint": ["always changed"]}
    assert status == always, f"the experiment's outputs were not all restored: {status}"
