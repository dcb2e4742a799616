"""Tests shrink the real config and data rather than mock them: tiny timm models on tiny generated images.

Besides the fixtures, the helpers tests share (imported as `from conftest import ...`): a Kaggle client that stands
in for the real one, an optimizer that captures gradients, and the ways to run a script or a shell command and a
shrunk copy of the pipeline."""

import copy
import os
import shutil
import subprocess
import sys
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
import yaml

from paddy.data.competition import SLUG
from paddy.data.prepare import prepare_competition
from paddy.data.split import make_splits
from paddy.data.synthetic import make_competition
from paddy.files import write_csv
from paddy.settings import parse_settings

ROOT = Path(__file__).resolve().parents[1]

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


@pytest.fixture
def params():
    """shrunk_params(), for one test to change."""
    return shrunk_params()


def prepared_work(competition, work, n_splits=1):
    """`work`/prepared from the shared competition (images at most 64 pixels) and `work`/split.csv of `n_splits`
    bags; the prepared index."""
    index, _ = prepare_competition(competition[0], work / "prepared", max_size=64, workers=1)
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
