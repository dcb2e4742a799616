"""The submission ledger: `submissions.csv` at the repo root, one row per Kaggle submission, tracked by git.

It lives in git (not in DVC, not in an experiment's outputs) so it survives `dvc exp apply`, branches and
experiments: commit it after each submission. `paddy scores` fills in scores Kaggle had not computed yet.
"""

import sys
import time
from pathlib import Path

import pandas as pd

from paddy.errors import PaddyError
from paddy.files import write_csv
from paddy.kaggle import api as kaggle_api

LEDGER = Path("submissions.csv")
COLUMNS = [
    "time",  # UTC, ISO 8601, when the file was sent
    "experiment",  # DVC experiment name, else branch / short git revision
    "git_rev",
    "params_digest",  # short hash of params.yaml: same digest, same settings
    "cv",  # the ensemble's out-of-fold score by the competition's metric
    "metric",  # that metric's name (accuracy, log_loss, ...)
    "cv_models",  # per-model CV, "convnext=0.93;vit=0.95"
    "message",  # the user's words, as typed
    "file_md5",
    "competition",
    "ref",  # Kaggle's submission reference
    "status",  # pending | complete | error
    "public_score",
    "private_score",
    "kernel",  # <user>/<slug>/<version> of the Kaggle kernel that made the file (paddy kaggle), else empty
]
DONE = ("complete", "error")


def read_ledger(path=LEDGER):
    """The ledger as a DataFrame with COLUMNS (empty if the file does not exist yet)."""
    path = Path(path)
    if not path.exists():
        return pd.DataFrame(columns=COLUMNS)
    try:
        df = pd.read_csv(path, dtype={"ref": str, "git_rev": str, "params_digest": str, "file_md5": str})
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as e:
        raise PaddyError(f"{path} is not a readable CSV ({e}). Restore it from git: `git checkout {path}`.") from None
    for col in COLUMNS:  # a ledger from an older paddy may lack newer columns
        if col not in df.columns:
            df[col] = None
    return df


def write_ledger(df, path=LEDGER):
    extra = [c for c in df.columns if c not in COLUMNS]
    write_csv(df[COLUMNS + extra], path)


def append_row(row, path=LEDGER):
    """Add one submission (a dict with some of COLUMNS) and rewrite the file atomically."""
    unknown = set(row) - set(COLUMNS)
    if unknown:
        raise ValueError(f"unknown ledger columns {sorted(unknown)}")
    df = read_ledger(path)
    new = pd.DataFrame([{c: row.get(c) for c in COLUMNS}])
    df = new if df.empty else pd.concat([df, new], ignore_index=True)
    write_ledger(df, path)
    return df


def _pending(df):
    """Rows still waiting for a score: not finished, or finished without the private score yet."""
    status = df["status"].fillna("pending").astype(str)
    has_ref = df["ref"].fillna("").astype(str).str.len() > 0
    return has_ref & ((~status.isin(DONE)) | ((status == "complete") & df["private_score"].isna()))


def refresh_scores(client, path=LEDGER, wait_s=0.0, poll_s=10.0, sleep=time.sleep, clock=time.monotonic, only=None):
    """Pull status and scores for the ledger's pending rows from Kaggle, polling for at most `wait_s` seconds.

    `only` limits the wait to one submission reference (the one just sent). Returns the updated ledger.
    """
    df = read_ledger(path)
    for key in ("status", "public_score", "private_score"):
        df[key] = df[key].astype(object)
    deadline = clock() + wait_s
    while True:
        pending = _pending(df)
        if only is not None:
            pending &= df["ref"].astype(str) == str(only)
        if not pending.any():
            return df
        slugs = df.loc[pending, "competition"].fillna("").astype(str).unique()
        changed = False
        for slug in slugs:
            by_ref = {s["ref"]: s for s in kaggle_api.submissions(client, slug)}
            for i in df.index[pending & (df["competition"].fillna("").astype(str) == slug)]:
                s = by_ref.get(str(df.at[i, "ref"]))
                if s is None:
                    continue
                for key in ("status", "public_score", "private_score"):
                    value = s[key]
                    if value is not None and str(df.at[i, key]) != str(value):
                        df.at[i, key] = value
                        changed = True
        if changed:
            write_ledger(df, path)
        still = _pending(df) if only is None else _pending(df) & (df["ref"].astype(str) == str(only))
        # A complete row with no private score is normal while the competition runs: do not wait for it.
        waiting = still & (df["status"].fillna("pending").astype(str) != "complete")
        if not waiting.any() or clock() + poll_s > deadline:
            return df
        sleep(poll_s)


def describe(df):
    """A short text table of the ledger for the terminal."""
    if df.empty:
        return "(no submissions yet)"
    cols = ["time", "experiment", "params_digest", "cv", "metric", "public_score", "private_score", "status", "message"]
    return df[cols].to_string(index=False, na_rep="-")


def show_ledger(args, client=None):
    """`paddy scores`: refresh the pending scores (Kaggle) and print the ledger."""
    df = read_ledger(args.ledger)
    if df.empty:
        print(f"{args.ledger}: no submissions yet; `paddy submit -m MESSAGE` sends one.")
        return 0
    if _pending(df).any():
        client = client or kaggle_api.make_client()
        df = refresh_scores(client, args.ledger, wait_s=args.wait, poll_s=args.poll)
    print(describe(df))
    status = df["status"].fillna("pending").astype(str)
    unscored = int((~status.isin(DONE)).sum())
    no_private = int(((status == "complete") & df["private_score"].isna()).sum())
    if unscored:
        print(f"\n{unscored} submission(s) not scored yet: run `paddy scores` again later.", file=sys.stderr)
    if no_private:
        print(f"{no_private} submission(s) without a private score: Kaggle shows it when the competition ends.")
    return 0
