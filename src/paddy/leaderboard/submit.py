"""`paddy submit -m MESSAGE`: check submission.csv, send it to Kaggle, record it in the ledger, fetch the score.

Never a DVC stage: sending uses one of a handful of daily submissions and depends on the outside world, so it is a
command the user types after `dvc repro`. Before anything is sent:

0. the predictions must be for the real competition: not `data.source: synthetic`, and, where Kaggle's own zip of
   the competition is in the cache, a sample submission listing its test images (a folder copy with fewer, say);
1. the file must match the sample submission: same header, ids, order and row count, and values of the
   competition's form (classes of the training data, or probabilities);
2. it must be the current pipeline output: its md5 equals the one dvc.lock records for it, and `dvc status` reports
   nothing changed (params, code or data edited since the last repro would make it stale). `--force` skips this.

The Kaggle message gets the experiment's identity appended, so the leaderboard page alone says what was sent:
"<your words> [<experiment> <git rev> p:<params digest>]".
"""

import hashlib
import json
import os
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import pandas as pd
import yaml

from paddy.data.competition import read_sample_submission
from paddy.data.fingerprint import fingerprint
from paddy.data.listing import Listing
from paddy.data.prepare import read_labels
from paddy.errors import PaddyError
from paddy.files import file_digest, run_dvc
from paddy.kaggle import api as kaggle_api
from paddy.kaggle import cache as kaggle_cache
from paddy.leaderboard import compare, ledger
from paddy.predict.submission import validate_submission
from paddy.settings import load_settings, parse_settings, read_params

PSEUDO_SUBMISSION = "data/pseudo/submission.csv"  # the pseudo stage's round 2 (pseudo.enabled)
PSEUDO_METRICS = "data/pseudo/ensemble.json"  # its ensemble's figures, round 2's CV


def file_md5(path):
    """The md5 DVC records for a file (dvc.lock), and the ledger's key for it."""
    return file_digest(path, "md5")


def params_digest(params):
    """A short hash of the settings: equal digests mean equal params.yaml contents (order and comments aside)."""
    canon = json.dumps(params, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canon.encode()).hexdigest()[:8]


def git_rev():
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=False)
    except FileNotFoundError:
        return "nogit"
    return out.stdout.strip() if out.returncode == 0 else "nogit"


def dvc_status(params_path="params.yaml", source_json="data/source.json"):
    """`dvc status --json` as a dict: empty when every stage is up to date.

    The check and fingerprint stages are always_changed, so dvc names them every time. The check guards the stages
    after it and writes nothing they read but a constant; the fingerprint counts only when the source's fingerprint
    now differs from the one download last saw.
    """
    out = run_dvc("status", "--json")
    try:
        status = json.loads(out or "{}")
    except ValueError:
        raise PaddyError("`dvc status --json` printed something that is not JSON; is dvc 3.x installed?") from None
    if status.get("check") == ["always changed"]:
        del status["check"]
    if status.get("fingerprint") == ["always changed"]:
        del status["fingerprint"]
        data = load_settings(params_path).data
        try:
            seen = json.loads(Path(source_json).read_text())
        except (OSError, ValueError):
            seen = None
        if seen != fingerprint(data):
            status["fingerprint"] = [f"data.source {data.source!r} changed since the last download"]
    return status


def locked_md5(path, lock="dvc.lock"):
    """The md5 dvc.lock records for output `path`, or None if no stage lists it."""
    lock = Path(lock)
    if not lock.is_file():
        return None
    stages = (yaml.safe_load(lock.read_text()) or {}).get("stages") or {}
    want = os.path.normpath(path)
    for stage in stages.values():
        for out in stage.get("outs") or []:
            if os.path.normpath(out.get("path", "")) == want:
                return out.get("md5")
    for stage in stages.values():  # a file inside a folder output (data/pseudo/submission.csv): the folder's listing
        for out in stage.get("outs") or []:
            folder, md5 = os.path.normpath(out.get("path", "")), str(out.get("md5", ""))
            if want.startswith(folder + os.sep) and md5.endswith(".dir"):
                listing = lock.parent / ".dvc" / "cache" / "files" / "md5" / md5[:2] / md5[2:]
                if listing.is_file():
                    files = {f["relpath"]: f["md5"] for f in json.loads(listing.read_text())}
                    return files.get(Path(os.path.relpath(want, folder)).as_posix())
    return None


def check_fresh(path, lock="dvc.lock", status=None):
    """Raise a PaddyError if `path` is not the output of the current, fully reproduced pipeline."""
    recorded = locked_md5(path, lock)
    if recorded is None:
        raise PaddyError(
            f"{lock} records no output {path}, so paddy cannot tell which run wrote it. Run `dvc repro` (or "
            "`dvc exp run`) to produce it, or pass --force to send it anyway."
        )
    if file_md5(path) != recorded:
        raise PaddyError(
            f"{path} is stale: it is not the file {lock} records (edited by hand, copied in, or left by a run that "
            "did not finish). Run `dvc repro` (or `dvc checkout` to restore the recorded one), or pass --force."
        )
    status = dvc_status() if status is None else status
    if status:
        changed = ", ".join(sorted(status))
        raise PaddyError(
            f"The pipeline has changes not reproduced yet (dvc status: {changed}): params, code or data changed "
            f"after {path} was made, so it does not match this workspace. Run `dvc repro` (or `dvc exp run`) first, "
            "or pass --force to send it anyway."
        )


def identify(md5, exp_json, rev, params=None):
    """The experiment that produced a file with this md5: its DVC experiment name, else the branch, else the rev.

    Two experiments can write the same file; the one whose params are the workspace's wins.
    """
    found = [r for r in compare.experiments(exp_json) if r["rev"] != "workspace" and r["submission_md5"] == md5]
    if params is not None:
        flat = compare.flatten(params)
        found.sort(key=lambda r: r["params"] != flat)  # stable: same params first, else dvc's order
    if found:
        return found[0]["experiment"]
    return f"{rev}+workspace"  # reproduced here but not committed or saved as an experiment


def cv_figures(path="metrics/ensemble.json"):
    """(ensemble CV, 'model=cv;...', the metric's name) from the ensemble metrics, (None, '', '') when missing. The
    CV is the out-of-fold score by the competition's metric (oof_score), or the accuracy (oof_acc) of a file from
    before it had one."""
    path = Path(path)
    if not path.is_file():
        return None, "", ""
    try:
        metrics = json.loads(path.read_text())
    except ValueError:
        return None, "", ""
    key = "oof_score" if isinstance(metrics.get("oof_score"), dict) else "oof_acc"
    figures = {name: value for name, value in (metrics.get(key) or {}).items() if isinstance(value, int | float)}
    per_model = ";".join(f"{name}={figures[name]:.5f}" for name in sorted(figures) if name != "ensemble")
    return figures.get("ensemble"), per_model, metrics.get("metric", "accuracy") if key == "oof_score" else "accuracy"


def check_competition(data, comp, data_dir, cache_dir=None):
    """Refuse predictions for anything but the competition Kaggle scores: the generated one (`data.source:
    synthetic`), or a source whose sample submission lists other test images than the competition's own, where
    Kaggle's zip of it is in the cache to compare with (`data.source: kaggle` is that zip)."""
    source = data.source
    if source == "synthetic":
        raise PaddyError(
            "submission.csv predicts the generated competition (`data.source: synthetic` in params.yaml), not "
            "Kaggle's: its test images are made up, so sending it would waste one of the day's submissions on a "
            f"meaningless score. Point data.source at the real competition (`paddy init {data.competition}`, or "
            "data.source: kaggle), `dvc repro`, then submit."
        )
    cached = kaggle_cache.zip_path(data.competition, cache_dir)
    if source == "kaggle" or not kaggle_cache.read_record(cached) or not cached.is_file():
        return  # Kaggle's own files, or nothing to compare with: the file is checked against its sample alone
    theirs = tuple(Listing.of(cached).csv(comp.sample_submission).iloc[:, 0])
    ours = tuple(read_sample_submission(data_dir, comp).iloc[:, 0])
    if ours != theirs:
        where = Path(data_dir) / comp.sample_submission
        raise PaddyError(
            f"{where} is not {data.competition}'s: it lists {len(ours)} test images ({', '.join(ours[:2])}"
            f"{', ...' if len(ours) > 2 else ''}), Kaggle's zip of the competition ({cached}) {len(theirs)} "
            f"({', '.join(theirs[:2])}{', ...' if len(theirs) > 2 else ''}). `data.source` {source!r} is not the real "
            "competition, so Kaggle would refuse or misscore predictions for it. Set data.source to kaggle (or a "
            "full copy of the competition), `dvc repro`, then submit."
        )


def load_submission(path, data_dir, comp, classes):
    """The submission at `path`, checked against the sample submission in `data_dir` and the classes."""
    path, data_dir = Path(path), Path(data_dir)
    if not path.is_file():
        raise PaddyError(f"{path} does not exist: run `dvc repro` first; its last stage writes it.")
    sample = read_sample_submission(data_dir, comp)
    try:
        sub = pd.read_csv(path, dtype=str, keep_default_na=False)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as e:
        raise PaddyError(f"{path} is not a readable CSV ({e}). Run `dvc repro` to write it again.") from None
    validate_submission(sub, sample, classes, comp, where=str(path))
    return sub


def submit(args, client=None, exp_json=None, status=None, sleep=time.sleep):
    """`client`, `exp_json` and `status` replace the Kaggle API, `dvc exp show` and `dvc status` in tests."""
    message = args.message.strip()
    if not message:
        raise PaddyError("The message (-m) is empty: say what this submission is, e.g. -m 'vit x2, 12 epochs'.")
    kernel = None
    if getattr(args, "kernel", None):
        # A kernel's pulled output (paddy kaggle pull): its manifest vouches that the file is the run's, as dvc.lock
        # and `dvc status` vouch for the workspace's.
        from paddy.remote.pull import pulled

        folder, kernel, kernel_experiment, manifest = pulled(args.kernel)
        args.file, args.data = folder / "submission.csv", folder / "data" / "raw"
        args.params, args.metrics = folder / "params.yaml", folder / "metrics" / "ensemble.json"
        args.prepared = folder / "data" / "prepared"
    params = read_params(args.params)  # the file's own mapping: what dvc's experiments and the digest compare
    settings = parse_settings(params, args.params)
    if args.file is None:  # pseudo-labels on: round 2's submission and CV (the pseudo stage's), round 1's otherwise
        args.file = PSEUDO_SUBMISSION if settings.pseudo.enabled else "submission.csv"
    if args.metrics is None:
        args.metrics = PSEUDO_METRICS if settings.pseudo.enabled else "metrics/ensemble.json"
    data, comp = settings.data, settings.competition
    slug = data.competition
    check_competition(data, comp, args.data)
    load_submission(args.file, args.data, comp, read_labels(args.prepared))
    print(f"{args.file}: valid against {Path(args.data) / comp.sample_submission}")

    md5 = file_md5(args.file)
    if kernel:
        print(f"{args.file}: the output of {kernel}, as its manifest and dvc.lock record it")
    elif args.force:
        print("--force: not checking that the file is the current pipeline output", file=sys.stderr)
    else:
        check_fresh(args.file, status=status)
    rev = manifest["git_rev"][:7] if kernel else git_rev()  # the commit the kernel ran
    if kernel:
        exp_json = []  # the experiment is the pulled one, whatever the workspace's commit is
    if exp_json is None:
        try:
            exp_json = compare.exp_show()
        except PaddyError as e:  # naming the experiment is a nicety; not a reason to refuse
            print(f"warning: cannot name the experiment: {e}", file=sys.stderr)
            exp_json = []
    experiment = kernel_experiment if kernel else identify(md5, exp_json, rev, params)
    digest = params_digest(params)
    cv, cv_models, metric = cv_figures(args.metrics)
    tag = f"{experiment} p:{digest}" if experiment.startswith(rev) else f"{experiment} {rev} p:{digest}"
    full_message = f"{message} [{tag}]"
    row = {
        "time": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "experiment": experiment,
        "git_rev": rev,
        "params_digest": digest,
        "cv": cv,
        "metric": metric,
        "cv_models": cv_models,
        "message": message,
        "file_md5": md5,
        "competition": slug,
        "status": "pending",
        "kernel": kernel or "",
    }
    shown = f"{cv} ({metric}, out of fold)" if cv is not None else "-"
    print(f"competition: {slug}\nmessage:     {full_message}\nCV:          {shown}")
    if kernel:
        print(f"kernel:      {kernel}")

    if args.dry_run:
        source = kaggle_api.credential_source()
        creds = f"found ({source})" if source else "NOT found: a real submit would stop here"
        print(f"credentials: {creds}\ndry run: nothing sent, nothing written to {args.ledger}")
        return 0

    client = client or kaggle_api.make_client()
    ref = kaggle_api.submit(client, args.file, full_message, slug)
    if not ref:  # older API versions return no reference: find ours by its unique message
        mine = [s for s in kaggle_api.submissions(client, slug) if s["description"] == full_message]
        ref = mine[0]["ref"] if mine else ""
    row["ref"] = ref
    # Record first, then poll: an interrupted wait must not lose the fact that a submission was made.
    ledger.append_row(row, args.ledger)
    print(f"sent: Kaggle reference {ref or '?'}; recorded in {args.ledger}")
    if ref:
        df = ledger.refresh_scores(client, args.ledger, wait_s=args.wait, poll_s=args.poll, sleep=sleep, only=ref)
        mine = df[df["ref"].astype(str) == ref].iloc[-1]
        print(
            f"status: {mine['status']}  public: {_show(mine['public_score'])}  private: {_show(mine['private_score'])}"
        )
        if mine["status"] != "complete":
            print("The score is not ready yet: `paddy scores` fetches it later.")
    print(f"Commit the ledger so it outlives this experiment: git add {args.ledger} && git commit -m 'submission'")
    return 0


def _show(value):
    return "-" if value is None or pd.isna(value) else value
