"""`paddy compare`: one table of experiments (`dvc exp show --json`) joined with the ledger's Kaggle scores.

Columns: experiment, revision, the params that differ between the experiments shown, CV per model and for the
ensemble, per-model train time and peak memory (whichever metric files exist), then the public/private score of
the experiment's latest submission. Experiments are joined to the ledger by the md5 of their submission.csv (exact),
else by experiment name. Ledger rows whose experiment is gone (`dvc exp remove`) are kept, marked `ledger`.
"""

import json
import math
import subprocess
import sys
from pathlib import Path, PurePosixPath

import pandas as pd

from paddy.errors import PaddyError
from paddy.fileio import write_csv, write_text
from paddy.ledger import LEDGER, read_ledger

SUBMISSION = "submission.csv"
MAX_PARAM_COLUMNS = 8


def exp_show(all_commits=False):
    """The parsed output of `dvc exp show --json` run in the current folder."""
    cmd = ["dvc", "exp", "show", "--json"] + (["--all-commits"] if all_commits else [])
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, check=False)
    except FileNotFoundError:
        raise PaddyError("`dvc` is not on PATH: install the project (`pip install -e .`) and retry.") from None
    if out.returncode != 0:
        raise PaddyError(
            f"`{' '.join(cmd)}` failed: {out.stderr.strip()[:400]}. Run paddy from the repository root (a git repo "
            "with at least one commit and `dvc init` done)."
        )
    try:
        return json.loads(out.stdout or "[]")
    except ValueError:
        raise PaddyError(f"`{' '.join(cmd)}` printed something that is not JSON; is dvc 3.x installed?") from None


def flatten(obj, prefix=""):
    """{'a': {'b': 1}} -> {'a.b': 1}; lists stay values."""
    if not isinstance(obj, dict):
        return {prefix: obj} if prefix else {}
    flat = {}
    for key, value in obj.items():
        flat.update(flatten(value, f"{prefix}.{key}" if prefix else str(key)))
    return flat


def _model_of(path):
    """dvclive/<model>/metrics.json and metrics/profile/<model>.json -> <model>; else the file's stem."""
    parts = PurePosixPath(path).parts
    if parts[0] == "dvclive" and len(parts) >= 3:
        return parts[1]
    return PurePosixPath(path).stem


# what training used (dvclive); a profile's own choice may differ when micro_batch is explicit
SIZING = ("micro_batch", "accumulation")


def metric_columns(metrics):
    """The columns paddy shows from `dvc exp show`'s metrics block: {file: {'data': {...}}} -> {column: value}."""
    cols = {}
    for path, block in (metrics or {}).items():
        data = (block or {}).get("data") or {}
        model = _model_of(path)
        for key, value in flatten(data).items():
            if not isinstance(value, int | float) or isinstance(value, bool):
                continue
            if key.startswith("oof_acc.") or key.startswith("cv."):
                cols["cv." + key.split(".", 1)[1]] = value  # ensemble metrics: CV per model and of the ensemble
            elif key in ("oof_acc", "cv", "acc") and model != "ensemble":
                cols.setdefault(f"cv.{model}", value)
            elif model == "ensemble" and key.startswith("test_acc"):
                cols[key] = value  # only the synthetic competition has test labels
            elif (
                "." not in key
                and "/" not in key
                and ((key in SIZING and "profile" not in path) or any(w in key for w in ("peak", "mem", "time")))
            ):
                cols[f"{key}.{model}"] = value  # whole-model figures; per-split and per-candidate ones stay in dvc
    return cols


def _row(entry, baseline):
    data = entry.get("data") or {}
    params = {}
    for path, block in (data.get("params") or {}).items():
        flat = flatten((block or {}).get("data") or {})
        params.update(flat if path == "params.yaml" else {f"{path}:{k}": v for k, v in flat.items()})
    outs = data.get("outs") or {}
    rev = str(entry.get("rev") or "")
    return {
        "experiment": entry.get("name") or (rev if rev == "workspace" else rev[:7]),
        "rev": rev if rev == "workspace" else rev[:7],
        "baseline": baseline,
        "params": params,
        "metrics": metric_columns(data.get("metrics")),
        "submission_md5": ((outs.get(SUBMISSION) or {}).get("hash")),
    }


def experiments(exp_json):
    """Flat experiment records from `dvc exp show --json`: workspace, baselines and their experiments."""
    rows = []
    for top in exp_json or []:
        if top.get("data"):
            rows.append(_row(top, baseline=True))
        for group in top.get("experiments") or []:
            for entry in group.get("revs") or []:
                if entry.get("data") and not entry.get("error"):
                    rows.append(_row(entry, baseline=False))
    return rows


def _fmt(value):
    if isinstance(value, list | tuple | dict):
        return json.dumps(value, separators=(",", ":"))
    return value


def varying_params(rows, limit=MAX_PARAM_COLUMNS):
    """Params whose value differs between experiments: the ones that explain the differences in the table."""
    keys = sorted({k for r in rows for k in r["params"]})
    varying = [k for k in keys if len({json.dumps(r["params"].get(k), sort_keys=True) for r in rows}) > 1]
    return varying[:limit]


def _latest_scored(ledger_rows):
    """The row to show for an experiment: the latest submission with a public score, else the latest."""
    scored = ledger_rows[ledger_rows["public_score"].notna()]
    return (scored if len(scored) else ledger_rows).iloc[-1]


def build_table(exp_json, ledger, param_keys=None):
    rows = experiments(exp_json)
    keys = param_keys if param_keys is not None else varying_params(rows)
    ledger = ledger.copy()
    ledger["file_md5"] = ledger["file_md5"].astype(str)
    used = set()
    table = []
    for r in rows:
        match = ledger[ledger["file_md5"] == str(r["submission_md5"])] if r["submission_md5"] else ledger.iloc[0:0]
        if match.empty and r["rev"] != "workspace":
            match = ledger[ledger["experiment"].astype(str) == str(r["experiment"])]
        line = {"experiment": r["experiment"], "rev": r["rev"]}
        line.update({k: _fmt(r["params"].get(k)) for k in keys})
        line.update(r["metrics"])
        line.update(_scores(match))
        used.update(match.index)
        table.append(line)
    # Submissions of experiments no longer in `dvc exp show`: the ledger outlives them.
    orphans = ledger.drop(index=list(used))
    for name, group in orphans.groupby(orphans["experiment"].astype(str), sort=False):
        line = {"experiment": name, "rev": "ledger", "cv.ensemble": group["cv"].iloc[-1]}
        line.update(_scores(group))
        table.append(line)
    df = pd.DataFrame(table)
    # Fixed columns first, then params, CV, other metrics, scores.
    first = ["experiment", "rev"] + list(keys)
    cv = sorted(c for c in df.columns if c.startswith("cv.") and c != "cv.ensemble")
    cv += ["cv.ensemble"] if "cv.ensemble" in df.columns else []
    last = [c for c in ("public", "private", "submissions") if c in df.columns]
    middle = sorted(c for c in df.columns if c not in first + cv + last)
    return df[[c for c in first + cv + middle + last if c in df.columns]]


def _scores(match):
    if match.empty:
        return {"public": None, "private": None, "submissions": 0}
    best = _latest_scored(match)
    return {"public": best["public_score"], "private": best["private_score"], "submissions": len(match)}


def correlation(ledger):
    """(n, pearson, spearman) of ledger CV against the public score, or None below three scored rows."""
    df = ledger[["cv", "public_score"]].apply(pd.to_numeric, errors="coerce").dropna()
    if len(df) < 3:
        return None
    pearson = df["cv"].corr(df["public_score"])
    spearman = df["cv"].rank().corr(df["public_score"].rank())
    return len(df), pearson, spearman


def sort_table(df, column=None, ascending=False):
    if column is None:
        column = "cv.ensemble" if "cv.ensemble" in df.columns else None
        if column is None:
            return df
    if column not in df.columns:
        raise PaddyError(f"--sort {column}: no such column. Columns: {', '.join(df.columns)}.")
    return df.sort_values(column, ascending=ascending, na_position="last", kind="stable").reset_index(drop=True)


def _cell(value):
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if isinstance(value, float):
        return f"{value:.4f}" if abs(value) < 100 else f"{value:.0f}"
    return str(value)


def to_markdown(df):
    head = "| " + " | ".join(df.columns) + " |"
    rule = "|" + "|".join("---" for _ in df.columns) + "|"
    body = ["| " + " | ".join(_cell(v).replace("|", "\\|") for v in row) + " |" for row in df.itertuples(index=False)]
    return "\n".join([head, rule] + body) + "\n"


def to_text(df):
    cells = [[_cell(v) for v in row] for row in df.itertuples(index=False)]
    widths = [max([len(str(c))] + [len(r[i]) for r in cells]) for i, c in enumerate(df.columns)]
    lines = ["  ".join(str(c).ljust(w) for c, w in zip(df.columns, widths))]
    lines += ["  ".join(v.ljust(w) for v, w in zip(r, widths)) for r in cells]
    return "\n".join(lines)


def add_arguments(parser):
    parser.add_argument("--sort", metavar="COLUMN", help="sort by this column, largest first (default: cv.ensemble)")
    parser.add_argument("--asc", action="store_true", help="sort smallest first")
    parser.add_argument("--params", metavar="KEYS", help="comma-separated params to show (default: those that vary)")
    parser.add_argument("--all-commits", action="store_true", help="experiments of every commit, not just HEAD")
    parser.add_argument("--ledger", default=str(LEDGER), help="ledger file (default: %(default)s)")
    parser.add_argument("--csv", metavar="PATH", help="also write the table as CSV")
    parser.add_argument("--md", metavar="PATH", help="also write the table as markdown")


def run(args, exp_json=None):
    if exp_json is None:
        exp_json = exp_show(all_commits=args.all_commits)
    ledger = read_ledger(args.ledger)
    keys = [k.strip() for k in args.params.split(",") if k.strip()] if args.params else None
    df = sort_table(build_table(exp_json, ledger, keys), args.sort, ascending=args.asc)
    if df.empty:
        print("No experiments yet: `dvc repro` or `dvc exp run` first.", file=sys.stderr)
        return 0
    print(to_text(df))
    corr = correlation(ledger)
    if corr:
        n, pearson, spearman = corr
        print(f"\nCV vs public score over {n} scored submissions: Pearson r = {pearson:.3f}, Spearman = {spearman:.3f}")
    else:
        print(f"\n(CV vs public score correlation appears once {Path(args.ledger)} has 3 scored submissions.)")
    if args.csv:
        write_csv(df, args.csv)
    if args.md:
        write_text(args.md, to_markdown(df))
    return 0
