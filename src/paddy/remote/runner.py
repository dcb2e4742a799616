"""The kernel's code on Kaggle: unpack the project, install it, run the pipeline, leave its results in the output.

paddy.remote.bundle fills in CONFIG and BUNDLE (the committed project as a base64 zip) and pushes this file as a
script kernel; it runs there with nothing of paddy installed, so it uses the standard library alone until the
project is installed. Kaggle lays a session out as <root>/input (the competition and any attached kernel output,
read-only), <root>/working (the output Kaggle keeps) and a scratch disk. The runner:

1. unpacks the project into a scratch folder (not the output: data/ and DVC's cache would fill it);
2. pip-installs it on Kaggle's own torch (the project pins none), with dvc;
3. points `data.source` at the competition's folder under input;
4. links data/resume (the train stage's checkpoints) to <output>/resume, so every checkpoint lands in the output
   as it is written, and restores it from a previous version's output attached as input (`paddy kaggle run
   --resume`);
5. runs `dvc repro`, stopping it (SIGTERM: the train stage writes a checkpoint and exits) before Kaggle's session
   limit, so a long run ends as a version with its checkpoints kept instead of a killed one;
6. copies what `paddy kaggle pull` needs into the output and writes the manifest: every file's size and md5, and
   how the run ended (complete, interrupted, failed; `running` if it was killed).

PADDY_KAGGLE_ROOT (default /kaggle) and PADDY_RUNNER_INSTALL=0 (no pip: the interpreter running this has the
project's packages) let the tests run it in a temporary folder laid out like Kaggle's.
"""

import base64
import hashlib
import io
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path

CONFIG = {}  # filled in by paddy.remote.bundle: kernel, competition, sample_submission, keep_weights, stop_after_s
BUNDLE = ""  # filled in by paddy.remote.bundle: the project, a base64 zip

MANIFEST = "paddy-manifest.json"
RESUME = "resume"
# What `paddy kaggle pull` brings back, relative to the project: params, lock, metrics, plots, dvclive, submission,
# out-of-fold and test probabilities, and what `paddy submit` checks the submission against: the sample submission
# (data/raw/<competition.sample_submission>, added by collect) and the classes.
RESULTS = ["params.yaml", "dvc.yaml", "dvc.lock", "submission.csv", "metrics", "plots", "dvclive", "data/preds",
           "data/split.csv", "data/prepared/labels.json"]  # fmt: skip
WEIGHTS = "data/models"


def log(message):
    print(f"paddy runner: {message}", flush=True)


def md5(path):
    digest = hashlib.md5()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def write_manifest(out, status, files=None, **extra):
    """The output's manifest, written last (temp file, then rename): `files` maps each path to its size and md5."""
    body = {"kernel": CONFIG.get("kernel"), "git_rev": CONFIG.get("git_rev"), "status": status, **extra}
    body["files"] = {
        str(p.relative_to(out)): {"size": p.stat().st_size, "md5": md5(p)} for p in sorted(files or []) if p.is_file()
    }
    tmp = out / f".{MANIFEST}.tmp"
    tmp.write_text(json.dumps(body, indent=1, sort_keys=True))
    tmp.replace(out / MANIFEST)


def unpack(project):
    with zipfile.ZipFile(io.BytesIO(base64.b64decode(BUNDLE))) as z:
        z.extractall(project)


def install(project):
    """The project and dvc on the Python Kaggle gives (its torch stays: pyproject.toml pins none)."""
    if os.environ.get("PADDY_RUNNER_INSTALL", "1") == "0":
        return
    cmd = [sys.executable, "-m", "pip", "install", "-q", "-e", str(project)]
    log(" ".join(cmd))
    subprocess.run(cmd, check=True)


def find_competition(inputs, slug, sample):
    """The competition's folder under input: where Kaggle mounts it, else any folder holding its sample submission
    (`sample`, the competition section's; Kaggle has moved mounts before: /kaggle/input/<slug>,
    /kaggle/input/competitions/<slug>)."""
    for path in (inputs / slug, inputs / "competitions" / slug):
        if (path / sample).is_file():
            return path
    for csv in sorted(inputs.glob(f"**/{Path(sample).name}")):
        folder = csv.parents[len(Path(sample).parts) - 1]
        if (folder / sample).is_file() and not (folder / MANIFEST).exists():  # not a previous version's output
            return folder
    raise SystemExit(f"paddy runner: no competition folder under {inputs} (with {sample}): is {slug} attached as a "
                     "data source?")  # fmt: skip


def restore_checkpoints(inputs, out):
    """A previous version's checkpoints (its output attached as input by --resume) into this version's output."""
    for manifest in sorted(inputs.glob(f"**/{MANIFEST}")):
        try:
            previous = json.loads(manifest.read_text())
        except ValueError:
            continue
        if previous.get("kernel") == CONFIG.get("kernel") and (manifest.parent / RESUME).is_dir():
            shutil.copytree(manifest.parent / RESUME, out / RESUME, dirs_exist_ok=True)
            log(f"restored checkpoints from {manifest.parent / RESUME} (a previous version's output)")
            return True
    return False


def prepare(project, competition, out):
    from dvc.utils.serialize import modify_yaml  # installed with the project: keeps params.yaml's comments

    with modify_yaml(project / "params.yaml") as params:
        params["data"]["source"] = str(competition)
    (out / RESUME).mkdir(parents=True, exist_ok=True)
    (project / "data").mkdir(exist_ok=True)
    (project / "data" / RESUME).symlink_to(out / RESUME, target_is_directory=True)
    dvc(project, "init", "--no-scm", "-q")
    # Hard links: DVC's cache and the workspace share each file instead of holding two copies of the large ones.
    dvc(project, "config", "cache.type", "hardlink,copy")


def environment(project):
    """This interpreter's scripts first on PATH: the stages' `python` and dvc are the ones the project is on. Not
    installed (the tests), the bundle's own code comes first on the path all the same."""
    env = dict(os.environ, DVC_NO_ANALYTICS="1", PYTHONUNBUFFERED="1")
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    if os.environ.get("PADDY_RUNNER_INSTALL", "1") == "0":
        env["PYTHONPATH"] = str(project / "src")
    return env


def dvc(project, *args):
    subprocess.run([sys.executable, "-m", "dvc", *args], cwd=project, env=environment(project), check=True)


def repro(project, stop_after_s, poll_s=5.0):
    """`dvc repro`, stopped with SIGTERM after stop_after_s (the train stage then writes a checkpoint and exits).
    Returns complete, interrupted or failed."""
    # Its own process group, to signal dvc and its stage together (never the group Kaggle runs this script in).
    proc = subprocess.Popen([sys.executable, "-m", "dvc", "repro"], cwd=project, env=environment(project),
                            preexec_fn=os.setpgrp)  # fmt: skip
    deadline, stopped = time.monotonic() + stop_after_s, False
    while proc.poll() is None:
        if not stopped and time.monotonic() > deadline:
            log(f"{stop_after_s / 3600:.2f} h gone: stopping before Kaggle's session limit, checkpoints kept")
            os.killpg(proc.pid, signal.SIGTERM)
            stopped = True
        time.sleep(poll_s if not stopped else 0.2)
    if stopped:
        _wait_for_group(proc.pid)  # the stage itself may still be writing its checkpoint
        return "interrupted"
    return "complete" if proc.returncode == 0 else "failed"


def _wait_for_group(pgid, timeout_s=600):
    end = time.monotonic() + timeout_s
    while time.monotonic() < end:
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.5)


def collect(project, out, keep_weights):
    """Copy the results into the output; the list of files copied."""
    names = RESULTS + [f"data/raw/{CONFIG.get('sample_submission', 'sample_submission.csv')}"]
    names += [WEIGHTS] if keep_weights else []
    copied = []
    for name in names:
        src = project / name
        if src.is_file():
            sources = [src]
        elif src.is_dir():
            sources = [p for p in src.rglob("*") if p.is_file() and not any(".partial" in q for q in p.parts)]
        else:
            continue
        for path in sources:
            dest = out / path.relative_to(project)
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(path, dest)
            copied.append(dest)
    return copied


def main():
    root = Path(os.environ.get("PADDY_KAGGLE_ROOT", "/kaggle"))
    inputs, out = root / "input", root / "working"
    out.mkdir(parents=True, exist_ok=True)
    started = time.time()
    write_manifest(out, "running")  # until the end says otherwise: a killed session leaves this
    project = Path(tempfile.mkdtemp(prefix="paddy-"))
    unpack(project)
    install(project)
    competition = find_competition(
        inputs, CONFIG["competition"], CONFIG.get("sample_submission", "sample_submission.csv")
    )
    log(f"competition: {competition}")
    resumed = restore_checkpoints(inputs, out)
    prepare(project, competition, out)
    status = repro(project, CONFIG.get("stop_after_s", 11.5 * 3600))
    files = collect(project, out, CONFIG.get("keep_weights", False)) if status == "complete" else []
    if status == "complete":
        shutil.rmtree(out / RESUME, ignore_errors=True)  # the train stage emptied it: every split is finished
    files += [p for p in (out / RESUME).rglob("*") if p.is_file()] if (out / RESUME).is_dir() else []
    write_manifest(out, status, files, resumed=resumed, seconds=round(time.time() - started))
    log(f"{status} after {(time.time() - started) / 60:.1f} min; {len(files)} files in {out}")
    if status == "failed":
        sys.exit(1)  # Kaggle marks the version failed; `paddy kaggle status` shows the log's end


if __name__ == "__main__":
    main()
