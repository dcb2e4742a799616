"""The repository and the ways tests run it: a shell command or a stage script in a folder, a shrunk copy of the
pipeline to run dvc in, a copy of the finished_run fixture's repository."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]  # the repository: tests/helpers/ is two folders down


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


def copy_finished_run(finished, dest):
    """A copy of the finished_run fixture's repository at `dest` (git, DVC's cache and the outputs with it)."""
    shutil.copytree(finished, dest, symlinks=True, dirs_exist_ok=True)
    return dest
