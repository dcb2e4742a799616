"""`paddy kaggle run|status|pull`: the steps, from the bundle to the experiment (docs/kaggle.md, "Train on Kaggle's
GPUs"). Each takes the parsed arguments and a client (the real one from paddy.kaggle.api.make_client, a fake in
tests)."""

import json
import shutil
import subprocess
import sys
import tempfile
from datetime import datetime, timezone
from pathlib import Path

from paddy.errors import PaddyError
from paddy.files import write_json
from paddy.kaggle import api, kernels
from paddy.remote import bundle
from paddy.remote import pull as pulling
from paddy.settings import load_settings
from paddy.settings.schema import ACCELERATORS

PLACEHOLDER_USER = "your-kaggle-user"


def _name(args):
    return args.name or load_settings().kaggle.kernel


def _warn_uncommitted(params_file):
    changed = subprocess.run(
        ["git", "status", "--porcelain", "--", params_file, *bundle.PROJECT], capture_output=True, text=True
    ).stdout.strip()
    if changed:
        print(
            f"note: uncommitted changes are not sent (the kernel runs the committed project):\n{changed}",
            file=sys.stderr,
        )


def run(args, client=None):
    """Build the bundle (or take the previous version's, --resume), check it, push it; --dry-run stops before."""
    if args.resume:
        return resume(args, client)
    if args.out and not args.dry_run:
        raise PaddyError("--out writes the bundle without sending it: use it with --dry-run.")
    if args.dry_run:
        try:
            user = kernels.username(client)
        except PaddyError:
            user = PLACEHOLDER_USER  # a dry run needs no account: the id shows where the name goes
    else:
        client = client or api.make_client()  # before any work: no credentials, nothing built
        user = kernels.username(client)
    _warn_uncommitted(args.params)
    with tempfile.TemporaryDirectory(prefix="paddy-kernel-") as tmp:
        out = Path(args.out) if args.out else Path(tmp) / "bundle"
        summary = bundle.build(out, user, args.overrides, args.params, args.name, args.accelerator)
        _describe(summary, out)
        if args.dry_run:
            kept = f"the bundle is in {out}" if args.out else "pass --out DIR to keep the bundle"
            print(f"dry run: nothing sent; {kept}")
            return 0
        return _push(client, out, summary, resume_of=None)


def _describe(summary, out):
    settings = summary["settings"]
    devices = settings.train.devices
    ddp = f", DDP over nccl on {devices} GPUs" if devices > 1 else " (train.devices 1: one GPU trains)"
    precision = settings.train.precision
    precision = "fp16 (auto: neither T4 nor P100 has bf16)" if precision == "auto" else precision
    print(
        f"kernel:      {summary['kernel']}\n"
        f"accelerator: {summary['accelerator']} ({summary['machine_shape']}, {summary['gpus']} GPU"
        f"{'s' if summary['gpus'] > 1 else ''}){ddp}\n"
        f"precision:   {precision}\n"
        f"project:     commit {summary['git_rev'][:7]}; runner {out / bundle.CODE_FILE}, "
        f"{summary['size'] / 1e3:.0f} kB\n"
        f"weights:     {'kept in the output' if settings.kaggle.keep_weights else 'not kept (kaggle.keep_weights)'}"
    )
    if summary["accelerator"] == "p100":
        print("note: the kaggle package calls the P100 retired: Kaggle may run the session on a T4 instead.")


def _push(client, folder, summary, resume_of):
    kernel = summary["kernel"]
    slug = kernel.split("/")[1]
    competition = json.loads((Path(folder) / bundle.METADATA).read_text())["competition_sources"][0]
    hours = kernels.gpu_hours_left(client)
    print(f"GPU quota:   {f'{hours:.1f} h left this week' if hours is not None else 'not given by the API'}")
    version, url = kernels.push(client, folder, kernel, competition, summary["machine_shape"])
    info = {
        "pushed": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "accelerator": summary["accelerator"],
        "git_rev": summary["git_rev"],
        "resume_of": resume_of,
        "url": url,
    }
    kernels.add_version(slug, kernel, version, folder, info)
    print(f"pushed {kernel} version {version}: {url}\nfollow it with `paddy kaggle status {slug}`, then "
          f"`paddy kaggle pull {slug}` once it is complete")  # fmt: skip
    return 0


def resume(args, client):
    """A new version of the kernel, the same bundle, with its last version's output attached: the runner restores the
    checkpoints found there and `dvc repro` continues from them."""
    if args.overrides or args.name or args.accelerator or args.params != "params.yaml":
        raise PaddyError(
            "--resume pushes the same project and settings again (the checkpoints are only valid for them): drop -S, "
            "--params, --name and --accelerator."
        )
    record = kernels.read_record(args.resume)
    version, info = kernels.latest(record)
    kept = kernels.version_dir(args.resume, version) / "bundle"
    with tempfile.TemporaryDirectory(prefix="paddy-kernel-") as tmp:
        folder = Path(tmp) / "bundle"
        shutil.copytree(kept, folder)
        meta = json.loads((folder / bundle.METADATA).read_text())
        meta["kernel_sources"] = [f"{record['id']}/{version}"]
        (folder / bundle.METADATA).write_text(json.dumps(meta, indent=2))
        bundle.check_no_secrets(folder)
        machine, gpus = ACCELERATORS[info["accelerator"]]
        summary = {"kernel": record["id"], "accelerator": info["accelerator"], "machine_shape": machine,
                   "gpus": gpus, "git_rev": info["git_rev"]}  # fmt: skip
        print(f"kernel:      {record['id']}, resuming version {version} (its output attached as input)\n"
              f"accelerator: {info['accelerator']} ({machine}, {gpus} GPU{'s' if gpus > 1 else ''})")  # fmt: skip
        if args.dry_run:
            print("dry run: nothing sent")
            return 0
        client = client or api.make_client()
        return _push(client, folder, summary, resume_of=version)


def _version(args):
    name = _name(args)
    record = kernels.read_record(name)
    version, info = kernels.latest(record, args.version)
    return name, record["id"], version, info


def status(args, client=None):
    name, kernel, version, _ = _version(args)
    competition = load_settings().data.competition
    client = client or api.make_client()
    ref = f"{kernel}/{version}"
    state, failure = kernels.status(client, ref, competition)
    print(f"{ref}: {state}{': ' + failure if failure else ''}")
    if state == "error":
        print(f"--- the end of its log ---\n{kernels.log_tail(client, ref, competition)}")
        print(f"--- `paddy kaggle run --resume {name}` continues it from its last checkpoint")
    elif state == "complete":
        print(f"`paddy kaggle pull {name}` brings it in as a DVC experiment")
    return 1 if state == "error" else 0


def pull(args, client=None):
    name, kernel, version, info = _version(args)
    competition = load_settings().data.competition
    client = client or api.make_client()
    ref = f"{kernel}/{version}"
    state, failure = kernels.status(client, ref, competition)
    if state != "complete":
        raise PaddyError(
            f"{ref} is {state}{' (' + failure + ')' if failure else ''}: only a complete run has results to pull. "
            f"`paddy kaggle status {name}` says more."
        )
    dest = kernels.version_dir(name, version) / "output"
    partial = dest.with_name("output.partial")
    shutil.rmtree(partial, ignore_errors=True)
    kernels.output(client, ref, partial, competition)
    manifest = pulling.verify(partial, how_to_resume=f"`paddy kaggle run --resume {name}` continues it.")
    shutil.rmtree(dest, ignore_errors=True)
    partial.rename(dest)
    experiment = f"{name}-v{version}"
    exp_ref = pulling.import_experiment(dest, experiment, manifest["git_rev"], f"Kaggle kernel {ref}", args.force)
    record = kernels.read_record(name)
    record["versions"][str(version)].update(experiment=experiment, pulled=str(dest))
    write_json(kernels.record_path(name), record)
    print(f"{ref}: {len(manifest['files'])} files verified against the manifest, in {dest}\n"
          f"experiment {experiment} of commit {manifest['git_rev'][:7]} ({exp_ref}): `dvc exp show`, "
          f"`paddy compare`, `dvc plots diff`; `paddy submit --kernel {name} -m ...` sends its submission")  # fmt: skip
    return 0
