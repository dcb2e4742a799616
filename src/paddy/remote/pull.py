"""A kernel's output, checked against its manifest and brought in as a DVC experiment like a local one.

The runner (paddy.remote.runner) ends by writing paddy-manifest.json: every file of the output with its size and md5,
and how the run ended. verify() refuses an output that is partial (a file missing or short: an interrupted download),
tampered (a file whose md5 differs), from a run that did not finish, or whose submission.csv is not the one its
dvc.lock records.

import_experiment() makes the experiment without touching the user's workspace: in a temporary git worktree at the
commit the kernel ran (the bundle records it), the kernel's params.yaml, dvc.lock, metrics, plots and dvclive replace
the commit's, are committed, and the commit is filed under DVC's experiment ref for that baseline
(refs/exps/..., named by dvc's own ExpRefInfo), which is all `dvc exp show`, `dvc exp apply` and `dvc plots diff`
read. (`dvc exp save` would refuse: it commits every output, and the prepared images and models stay on Kaggle.)
submission.csv and data/preds go into DVC's cache, so `dvc exp apply` restores them.
"""

import json
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import yaml

from paddy.errors import PaddyError
from paddy.kaggle import kernels
from paddy.remote.bundle import git
from paddy.remote.runner import MANIFEST, md5
from paddy.training import digests

TRACKED = ["params.yaml", "dvc.lock", "metrics", "plots", "dvclive"]  # git's part of an experiment
CACHED = ["submission.csv", "data/preds"]  # DVC's part that came back


def verify(folder, how_to_resume=""):
    """The manifest of a complete, intact output in `folder`; a PaddyError naming what is wrong otherwise."""
    folder = Path(folder)
    path = folder / MANIFEST
    try:
        manifest = json.loads(path.read_text())
    except FileNotFoundError:
        raise PaddyError(
            f"{folder} has no {MANIFEST}: it is not the output of paddy's runner, or the download stopped before it. "
            "Pull again."
        ) from None
    except ValueError:
        raise PaddyError(f"{path} is not valid JSON: a download cut short, or the file edited. Pull again.") from None
    state = manifest.get("status")
    if state != "complete":
        why = {
            "running": "the session ended while it ran (Kaggle's time limit, or it was stopped)",
            "interrupted": "the runner stopped it before Kaggle's session limit, keeping its checkpoints",
            "failed": "the pipeline failed (`paddy kaggle status` shows the end of the log)",
        }.get(state, f"its manifest says {state!r}")
        raise PaddyError(
            f"The kernel's run did not finish: {why}. Its results are incomplete, so nothing is brought in. "
            f"{how_to_resume}"
        )
    for name, expected in sorted(manifest.get("files", {}).items()):
        file = folder / name
        if not file.is_file():
            raise PaddyError(f"{file} is missing from the kernel's output (its manifest lists it): pull again.")
        size = file.stat().st_size
        if size != expected["size"]:
            raise PaddyError(
                f"{file} is {size} bytes, the manifest says {expected['size']}: a partial download. Pull again."
            )
        if md5(file) != expected["md5"]:
            raise PaddyError(
                f"{file} is not the file the kernel wrote (its md5 differs from the manifest's): changed since. "
                "Pull again; nothing was brought in."
            )
    for name in ("params.yaml", "dvc.lock", "submission.csv"):
        if name not in manifest.get("files", {}):
            raise PaddyError(f"The kernel's manifest lists no {name}: not a complete run of the pipeline.")
    for path in sorted((folder / "data" / "models").glob("*/meta.json")):  # kaggle.keep_weights: the models came too
        meta = digests.read_meta(path.parent)
        for split in (m for s in meta["splits"] for m in digests.members(meta, s)):  # snapshots too
            why = digests.problem(path.parent, split, meta)  # the kernel's own run: rebuilt by running it again
            if why is not None:
                raise PaddyError(
                    f"{why}. The manifest's md5 matches, so the kernel wrote it so: run it again (`paddy kaggle run`); "
                    "nothing was brought in."
                )
    recorded = locked_md5(folder / "dvc.lock", "submission.csv")
    if recorded != md5(folder / "submission.csv"):
        raise PaddyError(
            f"{folder / 'submission.csv'} is not the submission {folder / 'dvc.lock'} records: not this run's output."
        )
    return manifest


def locked_md5(lock, out):
    stages = (yaml.safe_load(Path(lock).read_text()) or {}).get("stages") or {}
    for stage in stages.values():
        for entry in stage.get("outs") or []:
            if os.path.normpath(entry.get("path", "")) == out:
                return entry.get("md5")
    return None


def exp_ref(baseline, name):
    from dvc.repo.experiments.refs import ExpRefInfo

    return str(ExpRefInfo(baseline, name))


def _commit(worktree, message):
    """Commit in `worktree`, as the user if git knows them, else as paddy."""
    known = subprocess.run(["git", "config", "user.email"], cwd=worktree, capture_output=True).returncode == 0
    who = [] if known else ["-c", "user.name=paddy", "-c", "user.email=paddy@localhost"]
    git(*who, "commit", "-q", "--no-verify", "--allow-empty", "-m", message, cwd=worktree)
    return git("rev-parse", "HEAD", cwd=worktree).decode().strip()


def import_experiment(folder, name, baseline, message, force=False, repo="."):
    """Make the verified output in `folder` the DVC experiment `name` of commit `baseline`; its ref."""
    folder, repo = Path(folder), Path(repo)
    if subprocess.run(["git", "cat-file", "-e", f"{baseline}^{{commit}}"], cwd=repo).returncode != 0:
        raise PaddyError(
            f"The kernel ran commit {baseline[:7]}, which this repository does not have (another clone pushed it?): "
            "fetch that commit, then pull again."
        )
    ref = exp_ref(baseline, name)
    exists = subprocess.run(["git", "show-ref", "--verify", "-q", ref], cwd=repo).returncode == 0
    if exists and not force:
        raise PaddyError(f"An experiment `{name}` exists already ({ref}): pass --force to replace it.")
    with tempfile.TemporaryDirectory(prefix="paddy-pull-") as tmp:
        worktree = Path(tmp) / "worktree"
        git("worktree", "add", "-q", "--detach", str(worktree), baseline, cwd=repo)
        try:
            for item in TRACKED:  # the commit's results make way for the kernel's, none left over
                target = worktree / item
                if target.is_dir():
                    shutil.rmtree(target)
                src = folder / item
                if src.is_dir():
                    shutil.copytree(src, worktree / item)
                elif src.is_file():
                    shutil.copyfile(src, worktree / item)
            git("add", "-A", "--", *TRACKED, cwd=worktree)
            commit = _commit(worktree, message)
        finally:
            git("worktree", "remove", "--force", str(worktree), cwd=repo)
    git("update-ref", ref, commit, cwd=repo)
    cache_outputs(folder, repo)
    return ref


def cache_outputs(folder, repo="."):
    """submission.csv and data/preds into the repository's DVC cache, as `dvc add` stores them, so `dvc exp apply`
    of the experiment restores them; the hashes must be the ones the kernel's dvc.lock records."""
    from dvc.repo import Repo
    from dvc_data.hashfile.build import build
    from dvc_data.hashfile.transfer import transfer

    lock = yaml.safe_load((Path(folder) / "dvc.lock").read_text())["stages"]
    recorded = {e["path"]: e["md5"] for s in lock.values() for e in s.get("outs") or [] if "md5" in e}
    with Repo(str(repo)) as dvc_repo:
        odb = dvc_repo.cache.local
        for path in sorted(p for p in recorded if any(p == c or p.startswith(c + "/") for c in CACHED)):
            src = Path(folder) / path
            if not src.exists():
                continue
            staging, _, obj = build(odb, str(src.resolve()), odb.fs, "md5")
            if obj.hash_info.value != recorded[path]:
                raise PaddyError(f"{src} hashes to {obj.hash_info.value}, the kernel's dvc.lock says {recorded[path]}.")
            transfer(staging, odb, {obj.hash_info}, hardlink=False, shallow=False)


def pulled(spec, root=kernels.KERNELS):
    """A pulled version, checked again: `spec` is NAME (the latest version) or NAME/VERSION. Returns its output
    folder, the kernel's `<user>/<slug>/<version>`, the experiment's name and the manifest."""
    name, _, version = str(spec).partition("/")
    record = kernels.read_record(name, root)
    number, info = kernels.latest(record, int(version) if version.isdigit() else None)
    folder = kernels.version_dir(name, number, root) / "output"
    if not info.get("experiment") or not folder.is_dir():
        raise PaddyError(f"Version {number} of `{record['id']}` is not pulled yet: run `paddy kaggle pull {name}`.")
    return folder, f"{record['id']}/{number}", info["experiment"], verify(folder)
