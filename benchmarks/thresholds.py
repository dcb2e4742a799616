"""Do fitted thresholds beat the fixed 0.5 on a multi-label competition? The generated Planet-shaped competition
(`data.synthetic.layout: planet`), entered with `paddy init synthetic` and run by `dvc repro ensemble` at the
default settings, once per seed (the data's and the training's): the ensemble's mean F2 at the fixed threshold, the
fitted global one and the fitted per-tag ones, out of fold (in-sample), cross-validated (fitted on the other folds)
and on the test set (the generator's truth). Prints a table and writes benchmarks/results/thresholds.json; the
figures in docs/competitions.md come from it.

    python benchmarks/thresholds.py            # seeds 0 1 2, about 5 minutes each on 2 cores
    python benchmarks/thresholds.py --seeds 0
"""

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import yaml

ROOT = Path(__file__).resolve().parents[1]
FIGURES = ("oof_fixed", "oof_global", "oof_per_tag", "cv_score", "test_fixed", "test_global", "test_per_tag")


def sh(cmd, cwd):
    env = dict(os.environ, PYTHONPATH=str(cwd / "src"))
    done = subprocess.run(cmd, shell=True, cwd=cwd, env=env, capture_output=True, text=True)
    if done.returncode:
        sys.exit(f"{cmd} failed in {cwd}:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
    return done.stdout


def run_seed(seed, where):
    repo = where / f"seed{seed}"
    repo.mkdir()
    for name in ("dvc.yaml", "params.yaml", ".dvcignore", ".gitignore"):
        shutil.copy(ROOT / name, repo / name)
    for name in ("stages", "src", ".dvc"):
        shutil.copytree(ROOT / name, repo / name, ignore=shutil.ignore_patterns("tmp", "cache", "__pycache__"))
    params = yaml.safe_load((repo / "params.yaml").read_text())
    params["seed"] = seed
    params["data"]["synthetic"].update(layout="planet", seed=seed)
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    sh("git init -q && paddy init synthetic > /dev/null && git add -A && git -c user.name=b -c user.email=b@b "
       "commit -qm planet", repo)  # fmt: skip
    start = time.perf_counter()
    sh("dvc repro ensemble", repo)
    found = json.loads((repo / "metrics" / "ensemble.json").read_text())["thresholds"]
    return {k: found[k] for k in FIGURES} | {
        "global": found["threshold_global"],
        "minutes": (time.perf_counter() - start) / 60,
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        rows = {seed: run_seed(seed, Path(tmp)) for seed in args.seeds}
    print(f"{'seed':>4} " + " ".join(f"{k:>12}" for k in FIGURES) + "  global")
    for seed, row in rows.items():
        print(f"{seed:>4} " + " ".join(f"{row[k]:12.4f}" for k in FIGURES) + f"  {row['global']:.2f}")
    mean = {k: float(np.mean([r[k] for r in rows.values()])) for k in FIGURES}
    sd = {k: float(np.std([r[k] for r in rows.values()], ddof=1)) if len(rows) > 1 else 0.0 for k in FIGURES}
    print("mean " + " ".join(f"{mean[k]:12.4f}" for k in FIGURES))
    print("  sd " + " ".join(f"{sd[k]:12.4f}" for k in FIGURES))
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout
    out = {"commit": commit.strip(), "seeds": rows, "mean": mean, "sd": sd}
    (ROOT / "benchmarks" / "results" / "thresholds.json").write_text(json.dumps(out, indent=2) + "\n")


if __name__ == "__main__":
    main()
