"""Kaggle's kernels (script notebooks) through the kaggle package: push a bundle, ask its state, fetch its output.

The client contract of paddy.kaggle.api, extended with the kernel calls of kaggle 2.x's KaggleApi (the fake in
tests/helpers/kaggle.py has the same):

    kernels_push(folder, timeout=None, acc=None)     -> .ref, .url, .version_number (older: versionNumber), .error
    kernels_status(kernel)                            -> .status (QUEUED, RUNNING, COMPLETE, ERROR, CANCEL_*),
                                                         .failure_message
    kernels_output(kernel, path, file_pattern=None, force=False, quiet=True)
                                                      -> (files, next page token); the log lands as <path>/<slug>.log
    quota_view()                                      -> .gpu_quota: .time_used, .total_time_allowed (timedelta);
                                                         absent from older packages, then no quota is shown

`kernel` is `<user>/<slug>` or `<user>/<slug>/<version>`. Every failure becomes one PaddyError paragraph, as for
download and submit (paddy.kaggle.api.translate), and no message carries a secret.

What paddy knows of its kernels is kept in the repository, git-ignored: kernels/<slug>/kernel.json (the id and each
version pushed: when, the accelerator, the git revision and params), kernels/<slug>/v<N>/bundle (exactly what was
pushed, for --resume) and kernels/<slug>/v<N>/output (what `paddy kaggle pull` fetched and verified).
"""

import contextlib
import json
import os
import shutil
import tempfile
from pathlib import Path

from paddy.errors import PaddyError
from paddy.files import write_json
from paddy.kaggle import api

KERNELS = Path("kernels")
STATES = ("queued", "running", "complete", "error", "cancel_requested", "cancel_acknowledged", "new_script")


def username(client=None):
    """The account the kernel goes under: KAGGLE_USERNAME, kaggle.json's username, else the client's config."""
    if os.environ.get("KAGGLE_USERNAME"):
        return os.environ["KAGGLE_USERNAME"]
    with contextlib.suppress(PaddyError):
        user = api._read_kaggle_json()[1].get("username")
        if user:
            return str(user)
    get = getattr(client, "get_config_value", None)
    user = get("username") if get else None
    if not user:
        raise PaddyError(
            "paddy cannot tell your Kaggle user name, which the kernel's id starts with. Set KAGGLE_USERNAME=<user> "
            "(your name in https://www.kaggle.com/<user>), or use a kaggle.json that holds it."
        )
    return str(user)


@contextlib.contextmanager
def kaggle_errors(doing, kernel, competition):
    """api's translation, with the kernel's own cases: 404 is a kernel (or version) Kaggle does not have."""
    try:
        yield
    except PaddyError:
        raise
    except SystemExit:
        raise PaddyError(f"The kaggle package gave up while trying to {doing}. {api.HOW_TO_AUTHENTICATE}") from None
    except Exception as e:
        if api._status(e) == 404:
            raise PaddyError(
                f"Kaggle has no kernel `{kernel}` (HTTP 404 while trying to {doing}): check the name and version "
                "(`paddy kaggle status` lists what this repository pushed), or push it with `paddy kaggle run`."
            ) from None
        raise api.translate(e, doing, slug=competition) from None


def push(client, folder, kernel, competition, machine_shape):
    """Push the bundle in `folder` (kernel-metadata.json and the runner); the version number Kaggle gave it and the
    kernel's address."""
    with kaggle_errors(f"push the kernel `{kernel}`", kernel, competition):
        response = client.kernels_push(str(folder), acc=machine_shape)
    error = api.redact(getattr(response, "error", "") or "")
    if error:
        raise PaddyError(f"Kaggle did not take the kernel `{kernel}`: {error}. Nothing runs; fix it and run again.")
    version = getattr(response, "version_number", None) or getattr(response, "versionNumber", None)
    if not version:
        raise PaddyError(f"Kaggle took the kernel `{kernel}` but gave no version number; see {response.url}.")
    return int(version), str(getattr(response, "url", "") or f"https://www.kaggle.com/code/{kernel}")


def status(client, kernel, competition):
    """(state, failure message): the state lower-case, one of STATES."""
    with kaggle_errors(f"get the state of the kernel `{kernel}`", kernel, competition):
        response = client.kernels_status(kernel)
    state = getattr(response.status, "name", response.status)
    state = str(state or "queued").lower().replace("kernelworkerstatus.", "")
    return state, api.redact(getattr(response, "failure_message", "") or "")


def output(client, kernel, dest, competition, files=True):
    """Fetch the kernel's output into `dest` (with files=False, only its log); the log file's path, or None."""
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    pattern = None if files else r"\A\Z"  # matches no file name: the log comes alone
    with kaggle_errors(f"fetch the output of the kernel `{kernel}`", kernel, competition):
        client.kernels_output(kernel, str(dest), file_pattern=pattern, force=True, quiet=True)
    log = dest / f"{kernel.split('/')[1]}.log"
    return log if log.is_file() else None


def log_tail(client, kernel, competition, lines=30):
    """The last `lines` lines of the kernel's log (Kaggle's is JSON: a list of {stream_name, time, data})."""
    with tempfile.TemporaryDirectory() as tmp:
        path = output(client, kernel, tmp, competition, files=False)
        text = path.read_text(errors="replace") if path else ""
    with contextlib.suppress(ValueError, TypeError, AttributeError):
        text = "".join(entry.get("data", "") for entry in json.loads(text))
    return "\n".join(api.redact(text).rstrip().splitlines()[-lines:])


def gpu_hours_left(client):
    """The GPU hours left this week, or None where the package or the API does not say."""
    view = getattr(client, "quota_view", None)
    if view is None:
        return None
    try:
        quota = view().gpu_quota
        return (quota.total_time_allowed - quota.time_used).total_seconds() / 3600
    except Exception:  # only informative: never a reason not to push
        return None


# ---------------------------------------------------------------------------------------------------------------
# What this repository pushed: kernels/<slug>/kernel.json


def record_path(slug, root=KERNELS):
    return Path(root) / slug / "kernel.json"


def read_record(slug, root=KERNELS):
    path = record_path(slug, root)
    if not path.is_file():
        known = sorted(p.parent.name for p in Path(root).glob("*/kernel.json"))
        raise PaddyError(
            f"This repository has pushed no kernel `{slug}` ({path} does not exist; pushed: "
            f"{', '.join(known) or 'none'}). Run `paddy kaggle run --name {slug}` first."
        )
    return json.loads(path.read_text())


def version_dir(slug, version, root=KERNELS):
    return Path(root) / slug / f"v{version}"


def add_version(slug, kernel, version, bundle, info, root=KERNELS):
    """Record a pushed version and keep its bundle (what --resume pushes again)."""
    path = record_path(slug, root)
    record = json.loads(path.read_text()) if path.is_file() else {"id": kernel, "versions": {}}
    record["id"] = kernel
    record["versions"][str(version)] = info
    keep = version_dir(slug, version, root) / "bundle"
    shutil.rmtree(keep, ignore_errors=True)
    shutil.copytree(bundle, keep)
    write_json(path, record)
    return record


def latest(record, version=None):
    """The version asked for, else the latest pushed: (number, its info)."""
    versions = record["versions"]
    number = str(version) if version is not None else max(versions, key=int)
    if number not in versions:
        raise PaddyError(
            f"The kernel `{record['id']}` has no version {number} pushed from here (versions: "
            f"{', '.join(sorted(versions, key=int))})."
        )
    return int(number), versions[number]
