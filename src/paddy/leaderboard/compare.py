"""`paddy compare`: one table of experiments (`dvc exp show --json`) joined with the ledger's Kaggle scores.

Columns: experiment, revision, every param that differs between the experiments shown (in its own format), the
competition's metric (named: oof_f1_macro.*, test_f1_macro.*, ...), accuracy and log loss out of fold and on the test
set (when it has labels) per model and for the ensemble, each model's train time, then the public/private score of
the experiment's latest submission. Experiments are joined to the ledger by
the md5 of their submission.csv (exact), else by experiment name. Ledger rows whose experiment is gone
(`dvc exp remove`) are kept, marked `ledger`.
"""

import json
import math
import sys
from pathlib import Path, PurePosixPath

import pandas as pd

from paddy.errors import PaddyError
from paddy.files import run_dvc, write_csv, write_text
from paddy.leaderboard.ledger import read_ledger
from paddy.metrics import greater_is_better, is_metric
from paddy.settings.schema import fbeta_of

SUBMISSION = "submission.csv"
ENSEMBLE_JSON = "metrics/ensemble.json"
REPORT = "metrics/report.json"  # the report stage's per-class figures: `paddy compare --per-class`
# What a competitor compares, in this order: the competition's metric out of fold (oof_score, shown under its name:
# oof_<metric>) and out-of-fold accuracy, per model and for the ensemble, the ensemble's log loss, the metric and
# accuracy on the test set (only a synthetic competition has test labels), each model's train time (dvclive's).
# `dvc exp show` has every metric.
METRICS = ("oof_score.*", "oof_acc.*", "oof_loss.ensemble", "test_score.*", "test_acc.*", "train_time_s.*")


def named_score(kind):
    """oof_score or test_score for a column named by its metric, oof_<metric> or test_<metric> (accuracy's is
    oof_acc); None for any other."""
    where, _, metric = kind.partition("_")
    return f"{where}_score" if where in ("oof", "test") and metric != "accuracy" and is_metric(metric) else None


def exp_show(all_commits=False):
    """The parsed output of `dvc exp show --json` run in the current folder."""
    args = ["exp", "show", "--json"] + (["--all-commits"] if all_commits else [])
    out = run_dvc(*args)
    try:
        return json.loads(out or "[]")
    except ValueError:
        raise PaddyError(f"`dvc {' '.join(args)}` printed something that is not JSON; is dvc 3.x installed?") from None


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


def metric_columns(metrics):
    """The columns paddy shows from `dvc exp show`'s metrics block: {file: {'data': {...}}} -> {column: value}. The
    ensemble's oof_score and test_score are named after its metric (oof_f1_macro.vit); under accuracy they repeat
    oof_acc and test_acc, and are left out."""
    cols = {}
    for path, block in (metrics or {}).items():
        data = (block or {}).get("data") or {}
        name = data.get("metric") if path == ENSEMBLE_JSON else None
        for key, value in flatten(data).items():
            if not isinstance(value, int | float) or isinstance(value, bool):
                continue
            column = key if "." in key else f"{key}.{_model_of(path)}"  # a per-model file's key: <key>.<model>
            kind, _, rest = column.partition(".")
            if kind in ("oof_score", "test_score"):
                if not is_metric(name) or name == "accuracy":
                    continue
                column = f"{kind.removesuffix('_score')}_{name}.{rest}"
            if _metric_rank(column) < len(METRICS):
                cols[column] = value
    return cols


def competition_metric(metric_names):
    """The metric the experiments' ensembles share (oof_<metric>.ensemble ranks them), or accuracy when they share
    none, or have none (older experiments)."""
    names = {n for n in metric_names if is_metric(n)}
    return names.pop() if len(names) == 1 else "accuracy"


def score_column(metric, where="oof"):
    """The table's column of the ensemble's score by `metric`: oof_acc.ensemble for accuracy."""
    return f"{where}_acc.ensemble" if metric == "accuracy" else f"{where}_{metric}.ensemble"


def _row(entry, baseline):
    data = entry.get("data") or {}
    params = {}
    for path, block in (data.get("params") or {}).items():
        flat = flatten((block or {}).get("data") or {})
        params.update(flat if path == "params.yaml" else {f"{path}:{k}": v for k, v in flat.items()})
    outs = data.get("outs") or {}
    rev = str(entry.get("rev") or "")
    ensemble = (((data.get("metrics") or {}).get(ENSEMBLE_JSON) or {}).get("data")) or {}
    return {
        "experiment": entry.get("name") or (rev if rev == "workspace" else rev[:7]),
        "rev": rev if rev == "workspace" else rev[:7],
        "baseline": baseline,
        "params": params,
        "metrics": metric_columns(data.get("metrics")),
        "metric": ensemble.get("metric") or "accuracy",
        "recall": ((((data.get("metrics") or {}).get(REPORT) or {}).get("data") or {}).get("recall")) or {},
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


def param_text(value):
    """A param as params.yaml has it: 32, 0.01, 1e-05, true, [128,96]; a param an experiment lacks is None."""
    if value is None:
        return None
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, list | tuple | dict):
        return json.dumps(value, separators=(",", ":"))
    return str(value)


def varying_params(rows):
    """Every param whose value differs between experiments (one an experiment lacks counts): what explains the
    differences in the table."""
    keys = sorted({k for r in rows for k in r["params"]})
    return [k for k in keys if len({json.dumps(r["params"].get(k), sort_keys=True) for r in rows}) > 1]


def _latest_scored(ledger_rows):
    """The row to show for an experiment: the latest submission with a public score, else the latest."""
    scored = ledger_rows[ledger_rows["public_score"].notna()]
    return (scored if len(scored) else ledger_rows).iloc[-1]


def select(rows, names):
    """The experiments named, in that order (all of them when none is named); a PaddyError names the unknown."""
    if not names:
        return rows
    known = {r["experiment"]: r for r in rows}
    unknown = [n for n in names if n not in known]
    if unknown:
        raise PaddyError(
            f"No experiment named {', '.join(unknown)} in `dvc exp show`; experiments: {', '.join(known)}. "
            "Name them as `dvc exp show` does (`--all-commits` adds other commits' experiments)."
        )
    return [known[n] for n in names]


def _ledger_rows(r, ledger):
    """The ledger's submissions of experiment row r: by its submission's md5 (exact), else by its name."""
    match = ledger[ledger["file_md5"] == str(r["submission_md5"])] if r["submission_md5"] else ledger.iloc[0:0]
    if match.empty and r["rev"] != "workspace":
        match = ledger[ledger["experiment"].astype(str) == str(r["experiment"])]
    return match


def _string_md5(ledger):
    ledger = ledger.copy()
    ledger["file_md5"] = ledger["file_md5"].astype(str)
    return ledger


def build_table(exp_json, ledger, param_keys=None, names=None):
    rows = select(experiments(exp_json), names)
    keys = param_keys if param_keys is not None else varying_params(rows)
    ledger = _string_md5(ledger)
    used = set()
    table = []
    for r in rows:
        match = _ledger_rows(r, ledger)
        line = {"experiment": r["experiment"], "rev": r["rev"]}
        line.update({k: param_text(r["params"].get(k)) for k in keys})
        line.update(r["metrics"])
        line.update(_scores(match))
        used.update(match.index)
        table.append(line)
    # Submissions of experiments no longer in `dvc exp show`: the ledger outlives them (unless experiments are named).
    # Their ledger CV is the ensemble's oof_score (paddy.leaderboard.submit.cv_figures), in the metric the ledger
    # names; a row from before the ledger named one: the experiments' metric.
    orphans = ledger.drop(index=list(used)) if not names else ledger.iloc[0:0]
    shared = competition_metric(r["metric"] for r in rows)
    for name, group in orphans.groupby(orphans["experiment"].astype(str), sort=False):
        metric = group["metric"].iloc[-1]
        metric = metric if is_metric(metric) else shared
        line = {"experiment": name, "rev": "ledger", score_column(metric): group["cv"].iloc[-1]}
        line.update(_scores(group))
        table.append(line)
    df = pd.DataFrame(table)
    # Fixed columns first, then params, the scores (per model, the ensemble last), train times, ledger scores.
    first = ["experiment", "rev"] + list(keys)
    last = [c for c in ("public", "private", "submissions") if c in df.columns]
    middle = [c for c in df.columns if c not in first + last]
    return df[[c for c in first + sorted(middle, key=_metric_order) + last if c in df.columns]]


def _metric_rank(column):
    """The column's place in METRICS (a metric's named column, oof_<metric>, in oof_score's); len(METRICS) where it
    is not one."""
    kind, _, rest = column.partition(".")
    kind = named_score(kind) or kind
    return next((i for i, m in enumerate(METRICS) if m in (f"{kind}.{rest}", f"{kind}.*")), len(METRICS))


def _metric_order(column):
    return _metric_rank(column), column.endswith(".ensemble"), column


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
    """Sorted by `column`, largest first (ascending: smallest first). By default by the ensemble's out-of-fold score
    of the competition's metric, best first (log loss: smallest first; ascending: worst first), else by
    oof_acc.ensemble."""
    if column is None:
        named = [c for c in df.columns if c.endswith(".ensemble") and named_score(c.partition(".")[0]) == "oof_score"]
        if len(named) == 1:
            column = named[0]
            ascending = ascending != (not greater_is_better(column.partition(".")[0].removeprefix("oof_")))
        elif "oof_acc.ensemble" in df.columns:
            column = "oof_acc.ensemble"
        else:
            return df
    if column not in df.columns:
        raise PaddyError(f"--sort {column}: no such column. Columns: {', '.join(df.columns)}.")
    return df.sort_values(column, ascending=ascending, na_position="last", kind="stable").reset_index(drop=True)


def _cell(value, column=""):
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if isinstance(value, float):
        seconds = column.startswith("train_time_s")
        return f"{value:.4f}" if abs(value) < 100 and not seconds else f"{value:.0f}"
    return str(value)


def to_markdown(df):
    head = "| " + " | ".join(df.columns) + " |"
    rule = "|" + "|".join("---" for _ in df.columns) + "|"
    body = [
        "| " + " | ".join(_cell(v, c).replace("|", "\\|") for c, v in zip(df.columns, row)) + " |"
        for row in df.itertuples(index=False)
    ]
    return "\n".join([head, rule] + body) + "\n"


def to_text(df):
    cells = [[_cell(v, c) for c, v in zip(df.columns, row)] for row in df.itertuples(index=False)]
    widths = [max([len(str(c))] + [len(r[i]) for r in cells]) for i, c in enumerate(df.columns)]
    lines = ["  ".join(str(c).ljust(w) for c, w in zip(df.columns, widths))]
    lines += ["  ".join(v.ljust(w) for v, w in zip(r, widths)) for r in cells]
    return "\n".join(lines)


def per_class_table(exp_json, ledger, names=None, model="ensemble"):
    """(table, changes): each class's out-of-fold recall (the report stage's metrics/report.json) per experiment side
    by side, each later experiment's change from the first beside it, then the ensemble's out-of-fold accuracy and
    the leaderboard's public score; changes: {experiment: (better, worse)}, each [(class, change)], largest first,
    or None where there is no recall to compare. Experiments of a multi-label competition (a mean F-beta metric)
    get a row per tag (its first column named `tag`) and the ensemble's out-of-fold metric in place of its
    accuracy, which counts every tag an image rightly lacks."""
    rows = select(experiments(exp_json), names)
    ledger = _string_md5(ledger)
    recalls = {r["experiment"]: (r["recall"].get(model) or {}) for r in rows}
    reported = [r["metric"] for r in rows if recalls[r["experiment"]]]
    kind, score = "class", "oof_acc.ensemble"
    if reported and all(fbeta_of(m) is not None for m in reported):
        kind, score = "tag", score_column(competition_metric(reported))
    classes = list(dict.fromkeys(c for recall in recalls.values() for c in recall))
    if not classes:
        raise PaddyError(
            f"No experiment shown has per-class recall of {model!r} ({REPORT}, the report stage's): run `dvc repro` "
            "(or `dvc exp run`) with the report stage first. A competition with more classes than report.max_classes "
            "keeps its per-class figures in metrics/report/per_class.csv instead, and macro averages in the metrics."
        )
    first = rows[0]["experiment"]
    table = pd.DataFrame({kind: classes + [score, "public"]})
    changes = {}
    for r in rows:
        name = r["experiment"]
        recall = recalls[name]
        public = _scores(_ledger_rows(r, ledger))["public"]
        column = [recall.get(c) for c in classes] + [r["metrics"].get(score), public]
        table[name] = pd.to_numeric(pd.Series(column, dtype=object), errors="coerce")
        if name != first:
            delta = {c: recall[c] - recalls[first][c] for c in classes if c in recall and c in recalls[first]}
            better = sorted(((c, d) for c, d in delta.items() if d > 0), key=lambda x: -x[1])
            worse = sorted(((c, d) for c, d in delta.items() if d < 0), key=lambda x: x[1])
            changes[name] = (better, worse) if delta else None
            table[f"{name} vs {first}"] = [_change(delta.get(c)) for c in classes] + ["", ""]
    return table, changes


def _change(delta):
    """A recall's change as the table shows it: +0.0500 better, -0.0100 worse, = unchanged, - not comparable."""
    if delta is None:
        return "-"
    return "=" if abs(delta) < 5e-5 else f"{delta:+.4f}"


def show_per_class(args, exp_json):
    ledger = read_ledger(args.ledger)
    table, changes = per_class_table(exp_json, ledger, args.experiments, args.model)
    kind = table.columns[0]  # class, or a multi-label competition's tag
    print(f"Out-of-fold recall per {kind}, {args.model} ({REPORT}); 'vs': the change from the first experiment")
    print(to_text(table))
    first = table.columns[1]
    for name, change in changes.items():
        if change is None:
            print(f"\n{name} vs {first}: nothing to compare (one of them has no {REPORT}: an older experiment)")
            continue
        better, worse = (", ".join(f"{c} {d:+.4f}" for c, d in pairs) or "none" for pairs in change)
        print(f"\n{name} vs {first}: better {better}; worse {worse}")
    write_table(table, args)
    return 0


def write_table(table, args):
    """The printed table as CSV (--csv) and markdown (--md), where asked."""
    if args.csv:
        write_csv(table, args.csv)
    if args.md:
        write_text(args.md, to_markdown(table))


def show_experiments(args, exp_json=None):
    """`paddy compare`: print the experiments table (and write it as CSV or markdown where asked); with
    --per-class, the per-class recall of the experiments side by side."""
    if exp_json is None:
        exp_json = exp_show(all_commits=args.all_commits)
    if args.per_class:
        return show_per_class(args, exp_json)
    ledger = read_ledger(args.ledger)
    keys = [k.strip() for k in args.params.split(",") if k.strip()] if args.params else None
    df = sort_table(build_table(exp_json, ledger, keys, args.experiments), args.sort, ascending=args.asc)
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
    write_table(df, args)
    return 0
