"""The bundle `paddy kaggle run` pushes: a folder Kaggle's `kernels push` takes, built and checked here first.

A script kernel is one code file, so the project travels inside it: the committed project (git's HEAD, not
uncommitted edits, so the pulled run has a commit to be an experiment of) as a zip, base64-encoded into
paddy.remote.runner's BUNDLE, beside kernel-metadata.json. Its params.yaml is the committed one (or a committed
preset) with the `-S` changes applied by dvc's own code, as `dvc exp run -S` applies them, then checked by the check
stage's rules (every value, the architectures at their sizes, each model through one step on fake tensors) and
against the accelerator (`train.devices` no more than its GPUs) before anything is sent.

No secret travels: the project files are git's, and every file of the bundle, the zip's members included, is searched
for the credentials paddy can see (paddy.kaggle.api); a hit refuses the bundle.
"""

import base64
import io
import json
import pprint
import re
import shutil
import subprocess
import tempfile
import zipfile
from pathlib import Path

import yaml

from paddy.errors import PaddyError
from paddy.files import write_text
from paddy.kaggle import api
from paddy.settings import parse_settings
from paddy.settings.schema import ACCELERATORS

# The committed files the pipeline needs to run (the runner makes .dvc with `dvc init --no-scm`): not the git-tracked
# results (metrics, plots, dvclive, dvc.lock), which the kernel makes anew.
PROJECT = ["dvc.yaml", "pyproject.toml", "src", "stages", "README.md", ".dvcignore"]
RUNNER = Path(__file__).with_name("runner.py")
CODE_FILE = "paddy_runner.py"
METADATA = "kernel-metadata.json"
# Kaggle documents no limit on a script's size; paddy keeps the runner well under what a request body may carry.
MAX_SCRIPT_BYTES = 2_000_000
# Stop the pipeline this long into a session, before Kaggle's 12-hour limit ends it (docs/kaggle.md).
STOP_AFTER_S = 11.5 * 3600


def git(*args, cwd="."):
    out = subprocess.run(["git", *args], cwd=cwd, capture_output=True, check=False)
    if out.returncode != 0:
        raise PaddyError(
            f"`git {' '.join(args)}` failed ({out.stderr.decode(errors='replace').strip()[:200]}): `paddy kaggle run` "
            "sends the committed project, so run it in the repository with at least one commit."
        )
    return out.stdout


def committed_params(params_file, repo="."):
    """The committed text of params.yaml or a preset; a PaddyError when the file is not committed."""
    rel = Path(params_file).as_posix()
    listed = git("ls-files", "--", rel, cwd=repo).decode().strip()
    if not listed:
        raise PaddyError(
            f"{params_file} is not committed: the kernel runs the committed project, and the pulled run becomes an "
            f"experiment of that commit. `git add {params_file} && git commit`, then run again."
        )
    return git("show", f"HEAD:{rel}", cwd=repo).decode()


def apply_overrides(path, overrides):
    """`-S key=value` edits to the params file at `path`, by dvc's own code (`dvc exp run -S`'s)."""
    if not overrides:
        return
    from dvc.exceptions import InvalidArgumentError
    from dvc.utils.hydra import apply_overrides as dvc_apply

    try:
        dvc_apply(path, list(overrides))
    except InvalidArgumentError as e:
        cause = f" ({e.__cause__})" if e.__cause__ else ""
        raise PaddyError(
            f"-S {' -S '.join(overrides)}: not an edit `dvc exp run -S` would make{cause}. Give key=value with a key "
            "params.yaml has (e.g. -S train.epochs=3), +key=value to add one, ~key to remove one."
        ) from None


def set_kaggle(path, kernel=None, accelerator=None):
    """--name and --accelerator, written into the params so the pulled experiment records them."""
    if kernel is None and accelerator is None:
        return
    from dvc.utils.serialize import modify_yaml

    with modify_yaml(path) as params:
        section = params.setdefault("kaggle", {})
        if kernel is not None:
            section["kernel"] = kernel
        if accelerator is not None:
            section["accelerator"] = accelerator


def check_settings(params, where):
    """The check stage's rules, for Kaggle's machine instead of this one: the settings, then the models."""
    settings = parse_settings(params, where)
    machine, gpus = ACCELERATORS[settings.kaggle.accelerator]
    if settings.train.devices > gpus:
        raise PaddyError(
            f"`train.devices` in {where} is {settings.train.devices}, but Kaggle's {settings.kaggle.accelerator} "
            f"({machine}) has {gpus} GPU{'s' if gpus > 1 else ''}. Set train.devices to at most {gpus}, or use "
            "--accelerator t4x2 (two T4s) for 2."
        )
    for name, model in settings.models.items():
        if isinstance(model.pretrained, str) and not model.pretrained.startswith("/kaggle/input/"):
            raise PaddyError(
                f"`models.{name}.pretrained` in {where} is the file {model.pretrained}, which is on this machine, "
                "not on Kaggle. Upload it as a Kaggle dataset, attach it, and give its /kaggle/input/... path; or "
                "use true (timm's weights: the kernel has internet)."
            )
    from paddy.training.model_checks import check_arch, check_models_train

    for name, model in settings.models.items():
        check_arch(f"`models.{name}.arch` in {where}", model.arch, model.size, settings.train.progressive.scales)
    check_models_train(settings.models, where, settings.competition.multi_label, settings.train.progressive.scales)
    return settings


def zip_folder(folder):
    data = io.BytesIO()
    with zipfile.ZipFile(data, "w", zipfile.ZIP_DEFLATED, compresslevel=9) as z:
        for path in sorted(Path(folder).rglob("*")):
            if path.is_file() and "__pycache__" not in path.parts:
                # A fixed time: the same project gives the same bytes (and the runner the same md5)
                info = zipfile.ZipInfo(path.relative_to(folder).as_posix(), date_time=(2020, 1, 1, 0, 0, 0))
                info.external_attr = (path.stat().st_mode & 0o777) << 16
                z.writestr(info, path.read_bytes(), zipfile.ZIP_DEFLATED)
    return data.getvalue()


def runner_script(config, archive):
    """runner.py with CONFIG and BUNDLE filled in."""
    text = RUNNER.read_text()
    config_line = "CONFIG = {}  # filled in by paddy.remote.bundle"
    bundle_line = 'BUNDLE = ""  # filled in by paddy.remote.bundle'
    assert config_line in text and bundle_line in text, "runner.py's CONFIG and BUNDLE lines changed"
    encoded = base64.b64encode(archive).decode()
    wrapped = "\n".join(encoded[i : i + 100] for i in range(0, len(encoded), 100))
    text = re.sub(r"^CONFIG = \{\}.*$", lambda _: f"CONFIG = {pprint.pformat(config, width=100)}", text, flags=re.M)
    return re.sub(r'^BUNDLE = "".*$', lambda _: f'BUNDLE = """\n{wrapped}\n"""', text, count=1, flags=re.M)


def metadata(kernel, competition, machine_shape):
    """kernel-metadata.json: private, GPU, internet (pip and pretrained weights), the competition as data."""
    slug = kernel.split("/")[1]
    return {
        "id": kernel,
        "title": slug,  # Kaggle derives the slug from the title: the same words keep the same kernel
        "code_file": CODE_FILE,
        "language": "python",
        "kernel_type": "script",
        "is_private": True,
        "enable_gpu": True,
        "enable_tpu": False,
        "enable_internet": True,
        "machine_shape": machine_shape,  # also given to kernels_push (acc), which wins where the package has it
        "competition_sources": [competition],
        "dataset_sources": [],
        "kernel_sources": [],  # --resume attaches the previous version's output here
        "model_sources": [],
    }


def check_no_secrets(folder):
    """Refuse the bundle if any file (or a member of the embedded zip) holds a credential paddy can see."""
    secrets = api._secrets()
    if not secrets:
        return
    for path in sorted(Path(folder).rglob("*")):
        if not path.is_file():
            continue
        blobs = [(str(path), path.read_bytes())]
        if path.name == CODE_FILE:
            match = re.search(r'^BUNDLE = """\n(.*?)\n"""', path.read_text(), flags=re.S | re.M)
            if match:
                with zipfile.ZipFile(io.BytesIO(base64.b64decode(match.group(1)))) as z:
                    blobs += [(f"{path}:{n}", z.read(n)) for n in z.namelist()]
        for where, blob in blobs:
            if any(s.encode() in blob for s in secrets):
                raise PaddyError(
                    f"{where} holds one of your Kaggle credentials, so the bundle is not sent (a kernel's code is "
                    "stored by Kaggle and visible to anyone you share it with). Remove the credential from that "
                    "file, commit, and run again."
                )


def build(out, user, overrides=(), params_file="params.yaml", name=None, accelerator=None, repo="."):
    """Build and check the bundle in `out` (replaced if there) for kernel `<user>/<kaggle.kernel>`; returns a summary:
    kernel id, accelerator, machine shape, runner size, git revision, settings. Raises PaddyError before writing
    anything when a check fails."""
    repo = Path(repo)
    rev = git("rev-parse", "HEAD", cwd=repo).decode().strip()
    with tempfile.TemporaryDirectory(prefix="paddy-bundle-") as tmp:
        project = Path(tmp) / "project"
        project.mkdir()
        present = [p for p in PROJECT if git("ls-files", "--", p, cwd=repo).strip()]
        missing = [p for p in PROJECT[:4] if p not in present]
        if missing:
            raise PaddyError(f"{', '.join(missing)} not committed: the kernel installs and runs the committed project.")
        archive = git("archive", "--format=tar", "HEAD", "--", *present, cwd=repo)
        subprocess.run(["tar", "-x", "-C", str(project)], input=archive, check=True)
        params_path = project / "params.yaml"
        params_path.write_text(committed_params(params_file, repo))
        apply_overrides(params_path, overrides)
        set_kaggle(params_path, name, accelerator)
        where = f"{params_file}{' with -S ' + ' -S '.join(overrides) if overrides else ''}"
        settings = check_settings(yaml.safe_load(params_path.read_text()), where)
        kernel = f"{user}/{settings.kaggle.kernel}"
        machine, gpus = ACCELERATORS[settings.kaggle.accelerator]
        config = {
            "kernel": kernel,
            "competition": settings.data.competition,
            "sample_submission": settings.competition.sample_submission,
            "keep_weights": settings.kaggle.keep_weights,
            "stop_after_s": STOP_AFTER_S,
            "git_rev": rev,
        }
        script = runner_script(config, zip_folder(project))
        staged = Path(tmp) / "bundle"
        staged.mkdir()
        write_text(staged / CODE_FILE, script)
        write_text(staged / METADATA, json.dumps(metadata(kernel, settings.data.competition, machine), indent=2))
        size = (staged / CODE_FILE).stat().st_size
        if size > MAX_SCRIPT_BYTES:
            raise PaddyError(
                f"The runner is {size / 1e6:.1f} MB, over the {MAX_SCRIPT_BYTES / 1e6:.0f} MB paddy sends as one "
                "script: something large is committed under src/ or stages/. Move data out of the code folders."
            )
        check_no_secrets(staged)
        out = Path(out)
        shutil.rmtree(out, ignore_errors=True)
        out.parent.mkdir(parents=True, exist_ok=True)
        shutil.copytree(staged, out)
    return {"kernel": kernel, "accelerator": settings.kaggle.accelerator, "machine_shape": machine, "gpus": gpus,
            "size": size, "git_rev": rev, "settings": settings}  # fmt: skip
