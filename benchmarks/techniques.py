"""Which of issue 27's techniques earn their place? Each alone, and the best combination, against the default
recipe, through the real pipeline (`dvc repro` of a copy of this repository with the technique's settings, as `dvc exp
run -S` would set them), on two competitions: the default generated one (hard, Paddy's classes) and a folder source
(a generated Cassava-shaped folder entered with `paddy init FOLDER`). Every configuration trains the default models
for the same epochs (progressive resizing's smaller phase counted in them; its wall time is in the table), seeds 0 1
2 (the training's; the data stay). Prints a table and writes benchmarks/results/techniques.json; docs/techniques.md's
table comes from it.

    python benchmarks/techniques.py                              # everything: about 2 minutes a run on 2 cores
    python benchmarks/techniques.py --configs default mixup --seeds 0
    python benchmarks/techniques.py --configs best --best mixup ema  # the best combination, after the singles
    python benchmarks/techniques.py --table                      # the table of benchmarks/results/techniques.json

The two competitions run side by side (one thread each); configurations of one competition run one after the other
in one repository, so a configuration that changes only the pseudo stage (pseudo after default, same seed) reuses
round one's models.
"""

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "techniques.json"

# Each at the default's 15 epochs: progressive trains 5 at half size then 10 at full size; sgdr's cycles 1+2+4+8 = 15
CONFIGS = {
    "default": {},
    "pseudo": {"pseudo.enabled": True},  # right after default: round one's models are default's, reused
    "mixup": {"train.mixup": 0.4, "train.label_smoothing": 0.1},
    "ema": {"train.ema": True},
    "progressive": {"train.progressive.scales": [0.5], "train.progressive.epochs": [5], "train.epochs": 10},
    "cutmix": {"train.cutmix": 1.0, "train.label_smoothing": 0.1},
    "swa": {"train.swa_epochs": 3},
    "sgdr": {"train.recipe": "sgdr", "train.cycle_len": 1, "train.cycle_mult": 2},
    "snapshots": {"train.recipe": "sgdr", "train.cycle_len": 1, "train.cycle_mult": 2, "train.snapshots": True},
}
COMPETITIONS = ("synthetic", "folder")


def sh(cmd, cwd, **env):
    env = dict(os.environ, PYTHONPATH=str(cwd / "src"), PATH=f"{Path(sys.executable).parent}:{os.environ['PATH']}",
               **env)  # fmt: skip
    done = subprocess.run(cmd, shell=True, cwd=cwd, env=env, capture_output=True, text=True)
    if done.returncode:
        raise RuntimeError(f"{cmd} failed in {cwd}:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
    return done.stdout


def setup(competition, where):
    """A copy of this repository entered into `competition`, data prepared: the repository's path."""
    repo = where / competition
    repo.mkdir()
    for name in ("dvc.yaml", "params.yaml", ".dvcignore", ".gitignore"):
        shutil.copy(ROOT / name, repo / name)
    for name in ("stages", "src", ".dvc"):
        shutil.copytree(ROOT / name, repo / name, ignore=shutil.ignore_patterns("tmp", "cache", "__pycache__"))
    sh("git init -q", repo)
    if competition == "folder":
        sys.path.insert(0, str(ROOT / "src"))
        from paddy.data.synthetic import make_competition

        make_competition(where / "cassava", where / "cassava_truth.csv", n_train=480, n_test=500, layout="cassava",
                         difficulty="hard")  # fmt: skip
        sh(f"paddy init {where / 'cassava'} > /dev/null", repo)
    sh("git add -A && git -c user.name=b -c user.email=b@b commit -qm bench && dvc repro split > /dev/null", repo)
    return repo


def with_settings(params, changes):
    params = json.loads(json.dumps(params))
    for dotted, value in changes.items():
        node = params
        *parents, last = dotted.split(".")
        for part in parents:
            node = node[part]
        node[last] = value
    return params


def run_one(repo, base, seed, changes):
    """`dvc repro` at the base params with `changes` and `seed`; the ensemble's scores and the training time."""
    (repo / "params.yaml").write_text(yaml.safe_dump(with_settings(base, {"seed": seed, **changes}), sort_keys=False))
    start = time.perf_counter()
    sh("dvc repro", repo, OMP_NUM_THREADS="1")
    wall = time.perf_counter() - start
    ensemble = json.loads((repo / "metrics" / "ensemble.json").read_text())
    models = list(base["models"])
    train_s = sum(json.loads((repo / "dvclive" / m / "metrics.json").read_text())["train_time_s"] for m in models)
    test = ensemble["test_score"]["ensemble"] if "test_score" in ensemble else test_accuracy(repo, "submission.csv")
    row = {
        "oof": ensemble["oof_score"]["ensemble"],
        "test": test,
        "train_s": train_s,
        "wall_s": wall,
    }
    pseudo = repo / "metrics" / "pseudo.json"
    if changes.get("pseudo.enabled"):  # round two's ensemble is what is sent; its wall time is in wall_s
        found = json.loads(pseudo.read_text())
        sent = "data/pseudo/submission.csv"
        test = found["test_score"]["round2"] if "test_score" in found else test_accuracy(repo, sent)
        row.update(oof=found["oof_score"]["round2"], test=test, kept=found["kept"]["total"])
        row["wrong"] = (found.get("wrong") or {}).get("total")
    return row


def test_accuracy(repo, submission):
    """A folder source's test accuracy (the pipeline has no truth for it): `submission` against the generator's
    truth, which setup left beside the folder."""
    assert json.loads((repo / "metrics" / "ensemble.json").read_text())["metric"] == "accuracy"
    sent = pd.read_csv(repo / submission, dtype=str)
    truth = pd.read_csv(repo.parent / "cassava_truth.csv", dtype=str).set_index("image_id").label
    return float((sent.set_index(sent.columns[0]).iloc[:, 0] == truth.loc[sent.iloc[:, 0]].to_numpy()).mean())


def run_competition(competition, configs, seeds, where, best):
    repo = setup(competition, where)
    base = yaml.safe_load((repo / "params.yaml").read_text())
    rows = {}
    for seed in seeds:
        for name in configs:
            changes = CONFIGS[name] if name != "best" else combine(best)
            print(f"{competition} seed {seed} {name}: {changes}", flush=True)
            rows.setdefault(name, {})[str(seed)] = run_one(repo, base, seed, changes)
            print(f"  {competition} seed {seed} {name}: {rows[name][str(seed)]}", flush=True)
    return rows


def combine(names):
    changes = {}
    for name in names:
        changes.update(CONFIGS[name])
    if "progressive" in names and changes.get("train.recipe") == "sgdr":
        raise SystemExit("progressive (10 full-size epochs) and sgdr's 15-epoch cycles do not combine here")
    return changes


def summarise(rows):
    """{config: {figure: (mean, sd)}} over seeds."""
    out = {}
    for name, seeds in rows.items():
        figures = {}
        for key in ("oof", "test", "train_s", "wall_s"):
            values = [r[key] for r in seeds.values()]
            figures[key] = [float(np.mean(values)), float(np.std(values, ddof=1)) if len(values) > 1 else 0.0]
        out[name] = figures
    return out


def table(results):
    lines = []
    for competition, rows in results["competitions"].items():
        summary = summarise(rows)
        lines.append(f"\n{competition} (seeds {', '.join(next(iter(rows.values())))})")
        lines.append(f"{'config':<12} {'test':>15} {'out of fold':>15} {'train s':>9} {'wall s':>8}")
        for name, f in summary.items():
            lines.append(
                f"{name:<12} {f['test'][0]:.4f} ± {f['test'][1]:.4f} {f['oof'][0]:.4f} ± {f['oof'][1]:.4f} "
                f"{f['train_s'][0]:9.0f} {f['wall_s'][0]:8.0f}"
            )
    return "\n".join(lines)


def markdown(results):
    """The table of docs/techniques.md: per competition and configuration, mean ± sd over the seeds run."""
    lines = [
        "| competition | configuration | seeds | test | out of fold | train s | wall s |",
        "|---|---|---|---|---|---|---|",
    ]
    for competition, rows in results["competitions"].items():
        for name, f in summarise(rows).items():
            n = len(rows[name])
            lines.append(
                f"| {competition} | {name} | {n} | {f['test'][0]:.3f} ± {f['test'][1]:.3f} | "
                f"{f['oof'][0]:.3f} ± {f['oof'][1]:.3f} | {f['train_s'][0]:.0f} | {f['wall_s'][0]:.0f} |"
            )
    return "\n".join(lines)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--competitions", nargs="+", default=list(COMPETITIONS), choices=COMPETITIONS)
    parser.add_argument("--configs", nargs="+", default=list(CONFIGS), choices=[*CONFIGS, "best"])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--best", nargs="+", default=[], choices=list(CONFIGS), help="the configs `best` combines")
    parser.add_argument("--table", action="store_true", help="print the saved results' table only")
    parser.add_argument("--markdown", action="store_true", help="print the saved results as docs/techniques.md's table")
    args = parser.parse_args()
    results = json.loads(RESULTS.read_text()) if RESULTS.exists() else {"competitions": {}}
    if not (args.table or args.markdown):
        with tempfile.TemporaryDirectory() as tmp, ThreadPoolExecutor(max_workers=len(args.competitions)) as pool:
            runs = {c: pool.submit(run_competition, c, args.configs, args.seeds, Path(tmp), args.best)
                    for c in args.competitions}  # fmt: skip
            found = {c: run.result() for c, run in runs.items()}
        results = json.loads(RESULTS.read_text()) if RESULTS.exists() else results  # another run may have saved
        for competition, rows in found.items():  # merged into what earlier runs saved
            saved = results["competitions"].setdefault(competition, {})
            for name, seeds in rows.items():
                saved.setdefault(name, {}).update(seeds)
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True)
        results["commit"] = commit.stdout.strip()
        if args.best:
            results["best"] = args.best
        results["summary"] = {c: summarise(rows) for c, rows in results["competitions"].items()}
        RESULTS.write_text(json.dumps(results, indent=2) + "\n")
    print(markdown(results) if args.markdown else table(results))


if __name__ == "__main__":
    main()
