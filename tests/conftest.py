"""Tests shrink the real config and data rather than mock them: tiny timm models on tiny generated images.

Besides the fixtures, the helpers tests share (imported as `from conftest import ...`): a Kaggle client that stands
in for the real one, an optimizer that captures gradients, and the ways to run a script or a shell command and a
shrunk copy of the pipeline."""

import copy
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import replace
from datetime import timedelta
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
import yaml

from paddy.data.prepare import prepare_competition
from paddy.data.split import make_splits
from paddy.data.synthetic import make_competition
from paddy.files import write_csv
from paddy.settings import parse_settings

ROOT = Path(__file__).resolve().parents[1]

# The tests stop stages with SIGINT as a terminal's Ctrl-C does. A runner that starts pytest as a background job of a
# shell without job control (`bash -c '... &'`) has SIGINT ignored, and every stage the tests start would inherit
# that and run on: give this process Python's own handler, which a child's exec turns back into the default.
if signal.getsignal(signal.SIGINT) == signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)
SLUG = "paddy-disease-classification"  # the default competition (params.yaml)

torch.set_num_threads(2)


def shrunk_params():
    """params.yaml, shrunk: one bag, 1 epoch, small images (the one way tests shrink it; the `params` fixture)."""
    p = yaml.safe_load((ROOT / "params.yaml").read_text())
    p = copy.deepcopy(p)
    p["data"]["synthetic"].update(n_train=60, n_test=12, width=48, height=64)
    p["prepare"].update(max_size=64, workers=1)
    p["cv"].update(scheme="bag", n_splits=1)
    p["train"].update(epochs=1, effective_batch=16, workers=0)
    p["tta"].update(n=1)
    p["models"] = {
        "resnet": dict(
            arch="test_resnet",
            pretrained=False,
            head="fastai",
            targets=["label"],
            item_size=[64, 48],
            item_method="squish",
            size=[48, 32],
            micro_batch=8,
            weight=1,
        ),
        "vit": dict(
            arch="test_vit",
            pretrained=False,
            head="fastai",
            targets=["label"],
            item_size=160,
            item_method="pad",
            size=160,
            micro_batch=8,
            weight=2,
        ),
    }
    return p


def default_competition():
    """params.yaml's competition section (Paddy's), as CompetitionSettings."""
    return parse_settings(shrunk_params()).competition


@pytest.fixture
def params():
    """shrunk_params(), for one test to change."""
    return shrunk_params()


def prepared_work(competition, work, n_splits=1):
    """`work`/prepared from the shared competition (images at most 64 pixels) and `work`/split.csv of `n_splits`
    bags; the prepared index."""
    index, _ = prepare_competition(competition[0], work / "prepared", default_competition(), max_size=64, workers=1)
    write_csv(make_splits(index[index.split == "train"], "bag", n_splits, 0.2, 0), work / "split.csv")
    return index


@pytest.fixture
def source_settings(params):
    """source_settings(path): the shrunk params' DataSettings with data.source set to `path`."""
    return lambda source: replace(parse_settings(params).data, source=str(source))


@pytest.fixture(autouse=True, scope="session")
def item_cache(tmp_path_factory):
    """Item arrays go to a folder of the test session, never the user's ~/.cache/paddy."""
    path = tmp_path_factory.mktemp("cache")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("PADDY_CACHE", str(path))
        yield path


@pytest.fixture(scope="session")
def finished_run(tmp_path_factory):
    """copy_pipeline's repository after one `dvc repro` (the commit before it, the run's outputs and DVC's cache
    after), built once a session: the slow tests that start from a finished run take a copy (copy_finished_run)
    instead of reproducing the same run again (50 s each on 2 cores)."""
    repo = tmp_path_factory.mktemp("finished")
    copy_pipeline(repo)
    sh("dvc repro", repo)
    return repo


def copy_finished_run(finished, dest):
    """A copy of the finished_run fixture's repository at `dest` (git, DVC's cache and the outputs with it)."""
    shutil.copytree(finished, dest, symlinks=True, dirs_exist_ok=True)
    return dest


@pytest.fixture(scope="session")
def competition(tmp_path_factory):
    """A tiny competition folder and its test truth file (shared: tests must not modify it)."""
    root = tmp_path_factory.mktemp("comp")
    make_competition(root / "raw", root / "truth.csv", n_train=60, n_test=12, width=48, height=64, seed=1)
    return root / "raw", root / "truth.csv"


class FakeKaggle:
    """Stands in for kaggle.KaggleApi. Downloads write `payload` as <slug>.zip, or raise `error`. Submissions are
    recorded; the listing is `submissions` when given, else the last one sent, scored after `pending_polls`
    listings."""

    def __init__(self, payload=None, error=None, submissions=None, pending_polls=1, public="0.98123", private=""):
        self.payload, self.error, self.downloads = payload, error, 0
        self.items, self.sent, self.listings = submissions, [], 0
        self.pending_polls, self.public, self.private = pending_polls, public, private

    def competition_download_files(self, competition, path=None, force=False, quiet=True):
        self.downloads += 1
        if self.error is not None:
            raise self.error
        Path(path, f"{competition}.zip").write_bytes(self.payload)

    def competition_submit(self, file_name, message, competition, quiet=False):
        self.sent.append((Path(file_name).read_text(), message, competition))
        return SimpleNamespace(ref=4242, message="Successfully submitted to Paddy Doctor")

    def competition_submissions(self, competition):
        assert competition == SLUG
        self.listings += 1
        if self.items is not None:
            return self.items
        done = self.listings > self.pending_polls
        return [
            SimpleNamespace(
                ref=4242,
                date="2024-01-01",
                description=self.sent[-1][1] if self.sent else "",
                status="COMPLETE" if done else "PENDING",
                public_score=self.public if done else "",
                private_score=self.private if done else "",
            )
        ]


class FakeKernels(FakeKaggle):
    """FakeKaggle with the kernel calls: a pushed bundle *runs*, at once, in a folder laid out as Kaggle lays a
    session out (`root`/<slug>/v<N>/input with the competition and attached kernel outputs, working: the output, tmp),
    with PADDY_RUNNER_INSTALL=0 (this interpreter has the packages; nothing is downloaded).

    `kill_when`: a glob under the output; the session is killed (SIGKILL to every process of it, as a session that
    reaches Kaggle's limit) once a file matches. Status is complete when the runner exited 0, else error."""

    def __init__(self, competition_dir, root, user="tester", kill_when=None, quota=(3.5, 30.0), **kwargs):
        super().__init__(**kwargs)
        self.competition_dir, self.root, self.user = Path(competition_dir), Path(root), user
        self.kill_when, self.quota, self.runs, self.pushed = kill_when, quota, {}, []

    def get_config_value(self, name):
        return self.user if name == "username" else None

    def quota_view(self):
        used, total = self.quota
        return SimpleNamespace(gpu_quota=SimpleNamespace(time_used=timedelta(hours=used),
                                                         total_time_allowed=timedelta(hours=total)))  # fmt: skip

    def _run(self, kernel):
        owner, slug, *version = kernel.split("/")
        runs = self.runs.get(f"{owner}/{slug}")
        if not runs:
            raise _http_error(404)
        return runs[int(version[0]) - 1] if version else runs[-1]

    def kernels_push(self, folder, timeout=None, acc=None, no_run=False):
        meta = json.loads(Path(folder, "kernel-metadata.json").read_text())
        self.pushed.append((meta, acc, {p.name: p.read_text() for p in Path(folder).iterdir()}))
        runs = self.runs.setdefault(meta["id"], [])
        session = self.root / meta["id"].split("/")[1] / f"v{len(runs) + 1}"
        for part in ("input", "working", "tmp"):
            (session / part).mkdir(parents=True)
        for competition in meta["competition_sources"]:
            (session / "input" / competition).symlink_to(self.competition_dir)
        for source in meta["kernel_sources"]:
            shutil.copytree(self._run(source)["working"], session / "input" / source.split("/")[1])
        run = {"working": session / "working", "log": session / "log.txt"}
        runs.append(run)
        env = venv_env(PADDY_KAGGLE_ROOT=str(session), PADDY_RUNNER_INSTALL="0", TMPDIR=str(session / "tmp"))
        with open(run["log"], "w") as log:
            proc = subprocess.Popen([sys.executable, str(Path(folder, meta["code_file"]))], cwd=session / "working",
                                    env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)  # fmt: skip
            while proc.poll() is None:
                if self.kill_when and any(run["working"].glob(self.kill_when)):
                    kill_session(proc.pid)
                # A tiny epoch can take under 0.2 s on a fast CPU: polled that slowly, the first checkpoint could be
                # replaced by the last and removed with it before the kill, and the resumed run start afresh.
                time.sleep(0.01 if self.kill_when else 0.2)
        run["status"] = "COMPLETE" if proc.returncode == 0 else "ERROR"
        return SimpleNamespace(ref=f"/code/{meta['id']}", url=f"https://www.kaggle.com/code/{meta['id']}",
                               version_number=len(runs), error="")  # fmt: skip

    def kernels_status(self, kernel):
        run = self._run(kernel)
        failure = "" if run["status"] == "COMPLETE" else "Your notebook hit an error"
        return SimpleNamespace(status=SimpleNamespace(name=run["status"]), failure_message=failure)

    def kernels_output(self, kernel, path, file_pattern=None, force=False, quiet=True, page_token=None):
        run, files = self._run(kernel), []
        for src in sorted(p for p in run["working"].rglob("*") if p.is_file()):
            name = src.relative_to(run["working"]).as_posix()
            if file_pattern is None or re.search(file_pattern, name):
                dest = Path(path, name)
                dest.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(src, dest)
                files.append(str(dest))
        lines = run["log"].read_text().splitlines(keepends=True)
        log = [{"stream_name": "stdout", "time": 0.1 * i, "data": line} for i, line in enumerate(lines)]
        Path(path, f"{kernel.split('/')[1]}.log").write_text(json.dumps(log))
        return files, None


def _http_error(status):
    import requests

    response = requests.Response()
    response.status_code = status
    return requests.HTTPError(f"{status} Client Error", response=response)


def in_main(pid):
    """Whether the stage's main() runs: exit_on_error has installed its SIGTERM handler (/proc's SigCgt mask), so a
    stop lands in the stage, not in its imports."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return False
    caught = int(next(line.split()[1] for line in status.splitlines() if line.startswith("SigCgt:")), 16)
    return bool(caught & (1 << (signal.SIGTERM - 1)))


def kill_session(sid):
    """SIGKILL every process of session `sid` (a runner started with start_new_session, dvc and its stages), again
    until none is left: a stage dvc started while the first pass read /proc would otherwise run on, orphaned."""
    for _ in range(50):
        alive = []
        for stat in Path("/proc").glob("[0-9]*/stat"):
            try:
                fields = stat.read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[3]) == sid and fields[0] != "Z":  # the fields after the name: state, ppid, pgrp, session
                alive.append(int(stat.parent.name))
        if not alive:
            return
        for pid in alive:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        time.sleep(0.05)


class CaptureGradients:
    """Stands in for the optimizer: keeps the gradients the step would apply (None for a frozen parameter)."""

    def __init__(self, model):
        self.model, self.grads = model, None

    def step(self):
        self.grads = [None if p.grad is None else p.grad.detach().clone() for p in self.model.parameters()]

    def zero_grad(self, set_to_none=True):
        self.model.zero_grad(set_to_none=set_to_none)


def venv_env(**extra):
    """The environment with this interpreter's scripts (dvc, paddy, torchrun) first on PATH, and `extra`."""
    return dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}", **extra)


def sh(cmd, cwd, ok=True, timeout=900, **env):
    """Run shell command `cmd` in `cwd`; asserts it succeeded (or, ok=False, that it failed); its output."""
    out = subprocess.run(cmd, cwd=cwd, env=venv_env(**env), shell=True, capture_output=True, text=True, timeout=timeout)
    assert (out.returncode == 0) == ok, f"{cmd} exited {out.returncode}:\n" + out.stdout[-3000:] + out.stderr[-3000:]
    return out.stdout + out.stderr


def run_script(script, *args, cwd, timeout=120):
    """Run the repository's `script` (stages/check.py, say) with this interpreter in `cwd`: the CompletedProcess."""
    return subprocess.run(
        [sys.executable, str(ROOT / script), *map(str, args)], cwd=cwd, capture_output=True, text=True, timeout=timeout
    )


def copy_pipeline(repo, micro_batch=8, commit=True):
    """The pipeline's definition, params and code, without data or DVC's cache, in `repo`, with params.yaml shrunk
    (tiny images, one epoch, micro-batches of `micro_batch`) and, with `commit`, committed to git: a repository to
    run dvc in."""
    for name in ("dvc.yaml", "params.yaml", ".dvcignore", ".gitignore"):
        shutil.copy(ROOT / name, repo / name)
    for name in ("stages", "src", ".dvc"):
        shutil.copytree(ROOT / name, repo / name, ignore=shutil.ignore_patterns("tmp", "cache", "__pycache__"))
    params = yaml.safe_load((repo / "params.yaml").read_text())
    params["data"]["synthetic"].update(n_train=80, n_test=16, width=48, height=64)
    params["train"].update(epochs=1, effective_batch=16)
    params["tta"]["n"] = 1
    for m in params["models"].values():
        m["micro_batch"] = micro_batch
    params["models"]["resnet"].update(item_size=[64, 48], size=[48, 32])
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    if commit:
        sh("git init -q && git add -A && git -c user.name=t -c user.email=t@t commit -qm init", repo)
