"""Every stage of `dvc repro` on a large generated competition: its wall time and peak memory, and the disk it fills.

    python benchmarks/scale.py --images 300000 --classes 10000

builds a copy of the pipeline in --work (the repository's dvc.yaml, stages and src, params.yaml shrunk to what a
scale run needs: the cassava layout, 16x16 photos, two tiny CNNs at 32x32, one epoch, one TTA pass), enters the
generated competition with `paddy init synthetic`, then runs each stage alone with `dvc repro --single-item`
under GNU time: the wall seconds and the largest resident memory of the stage's process tree (DVC's hashing and
caching of the stage's outputs included, as a user meets them). The test set is a tenth of the training set. Each
run appends one record to --out (benchmarks/results/scale.json by default) and prints a table; the table in
docs/competitions.md comes from that file.
"""

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
MODELS = {
    "resnet": {"arch": "test_resnet", "weight": 1},
    "convnext": {"arch": "test_convnext", "weight": 1},
}


def build(work, images, classes, test_fraction, seed):
    """The pipeline's copy in `work`, params.yaml set for the run, committed (dvc exp and repro need a commit)."""
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    for name in ("dvc.yaml", "params.yaml", ".dvcignore", ".gitignore"):
        shutil.copy(ROOT / name, work / name)
    for name in ("stages", "src", ".dvc"):
        shutil.copytree(ROOT / name, work / name, ignore=shutil.ignore_patterns("tmp", "cache", "__pycache__"))
    params = yaml.safe_load((work / "params.yaml").read_text())
    n_test = max(1, int(images * test_fraction))
    params["data"]["synthetic"].update(
        n_train=images, n_test=n_test, width=16, height=16, seed=seed, difficulty="easy", layout="cassava",
        classes=classes,
    )  # fmt: skip
    params["prepare"].update(max_size=16, workers=os.cpu_count() or 1)
    params["train"].update(epochs=1, frozen_epochs=0, effective_batch=64, eval_batch=256, workers="auto")
    params["tta"]["n"] = 1
    params["report"]["top_losses"] = 4
    base = params["models"]["resnet"]
    params["models"] = {
        name: dict(base, **spec, item_size=[32, 32], item_method="squish", size=[32, 32], micro_batch=64)
        for name, spec in MODELS.items()
    }
    (work / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    env = os.environ | {"PADDY_CACHE": str(work / "cache")}
    subprocess.run(["paddy", "init", "synthetic"], cwd=work, env=env, check=True, capture_output=True)
    git = "git init -q && git add -A && git -c user.name=scale -c user.email=scale@local commit -qm scale"
    subprocess.run(git, shell=True, cwd=work, check=True)
    return n_test


def stages(work):
    """The stages in dvc.yaml's order, each model's expanded: the order `dvc repro` runs them."""
    out = subprocess.run(["dvc", "stage", "list", "--name-only"], cwd=work, check=True, capture_output=True, text=True)
    return out.stdout.split()


def run_stage(work, stage):
    """(wall seconds, peak resident GB) of `dvc repro --single-item stage` and everything it starts."""
    env = os.environ | {"PADDY_CACHE": str(work / "cache")}
    stats = work / ".time"
    cmd = ["/usr/bin/time", "-f", "%e %M", "-o", str(stats), "dvc", "repro", "--single-item", stage]
    out = subprocess.run(cmd, cwd=work, env=env, capture_output=True, text=True)
    if out.returncode != 0:
        sys.exit(f"{stage} failed:\n{out.stdout[-3000:]}\n{out.stderr[-3000:]}")
    seconds, kb = stats.read_text().split()[-2:]
    return float(seconds), int(kb) / 2**20


def disk(path):
    """Bytes under `path` (0 if it is not there)."""
    path = Path(path)
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) if path.exists() else 0


def table(runs):
    """The markdown table of docs/competitions.md: a row per stage, a column per run (seconds / peak GB)."""
    stages = list(dict.fromkeys(s for r in runs for s in r["stages"]))
    head = [f"{r['images']:,} x {r['classes']:,}" for r in runs]
    lines = ["| stage | " + " | ".join(head) + " |", "|---|" + "---:|" * len(runs)]
    for stage in stages:
        cells = [f"{r['stages'][stage]['seconds']:.0f} s, {r['stages'][stage]['peak_gb']:.1f} GB" for r in runs]
        lines.append(f"| {stage} | " + " | ".join(cells) + " |")
    lines.append("| all (min) | " + " | ".join(f"{r['total_s'] / 60:.1f}" for r in runs) + " |")
    disk = [f"{sum(r['disk_gb'].values()):.1f}" for r in runs]
    lines.append("| disk (GB: data, items, DVC cache) | " + " | ".join(disk) + " |")
    return "\n".join(lines)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, help="training images")
    parser.add_argument("--classes", type=int)
    parser.add_argument("--table", action="store_true", help="print --out's runs as docs/competitions.md's table")
    parser.add_argument("--test-fraction", type=float, default=0.1, help="test images per training image")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--work", type=Path, default=Path("/tmp/paddy-scale"), help="the pipeline's copy (replaced)")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "scale.json")
    args = parser.parse_args()
    if args.table:
        print(table(json.loads(args.out.read_text())))
        return
    if args.images is None or args.classes is None:
        parser.error("--images and --classes, or --table")
    started = time.time()
    # the code the run copies (uncommitted edits aside)
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout
    commit = commit.strip()
    n_test = build(args.work, args.images, args.classes, args.test_fraction, args.seed)
    rows = {}
    for stage in stages(args.work):
        seconds, gb = run_stage(args.work, stage)
        rows[stage] = {"seconds": round(seconds, 1), "peak_gb": round(gb, 2)}
        print(f"{stage:>18}: {seconds:8.1f} s  {gb:6.2f} GB", flush=True)
    record = {
        "images": args.images,
        "test_images": n_test,
        "classes": args.classes,
        "cores": len(os.sched_getaffinity(0)),
        "commit": commit,
        "stages": rows,
        "total_s": round(time.time() - started, 1),
        "disk_gb": {
            name: round(disk(args.work / path) / 2**30, 2)
            for name, path in (
                ("raw", "data/raw"),
                ("prepared", "data/prepared"),
                ("preds", "data/preds"),
                ("items", "cache/items"),
                ("dvc_cache", ".dvc/cache"),
            )  # fmt: skip
        },
        "metrics": json.loads((args.work / "metrics" / "ensemble.json").read_text())["oof_score"],
    }
    runs = json.loads(args.out.read_text()) if args.out.exists() else []
    runs = [r for r in runs if (r["images"], r["classes"]) != (args.images, args.classes)] + [record]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(sorted(runs, key=lambda r: (r["images"], r["classes"])), indent=1) + "\n")
    print(f"{args.images} images x {args.classes} classes: {record['total_s'] / 60:.1f} min, disk {record['disk_gb']}")


if __name__ == "__main__":
    main()
