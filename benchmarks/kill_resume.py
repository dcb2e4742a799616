"""Work lost per kill point: the real train@MODEL command killed with SIGKILL at several points, then run again.

    python benchmarks/kill_resume.py                   # on a prepared workspace (after `dvc repro split`)

For each kill point (a fraction of an uninterrupted run's time) and each checkpoint interval: the time from the
last checkpoint to the kill (the work lost), the epoch and step the rerun continued from, the rerun's time against
what was left of the uninterrupted run, and whether the final weights are identical to the uninterrupted run's.
Writes benchmarks/results/kill_resume.json (docs/reliability.md quotes it).
"""

import argparse
import json
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import torch
import yaml


def command(model, run, root):
    return [
        sys.executable, "stages/train.py", model, "data/prepared", "data/split.csv", str(root / run / "models"),
        str(root / run / "live"), "--resume-dir", str(root / run / "resume"),
    ]  # fmt: skip


def timed(cmd):
    start = time.perf_counter()
    out = subprocess.run(cmd, capture_output=True, text=True)
    if out.returncode != 0:
        sys.exit(out.stdout[-2000:] + out.stderr[-2000:])
    return time.perf_counter() - start, out.stdout


def newest_checkpoint(resume):
    found = sorted(resume.glob("*/*.pt"), key=lambda p: p.stat().st_mtime)
    if not found:
        return None, None
    state = torch.load(found[-1], map_location="cpu", weights_only=False)
    return found[-1], state["progress"]


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="vit")
    parser.add_argument("--points", type=float, nargs="+", default=[0.2, 0.5, 0.8])
    parser.add_argument("--minutes", type=float, nargs="+", default=[10, 0.05], help="train.checkpoint_minutes")
    parser.add_argument("--root", type=Path, default=Path("/tmp/paddy_kill"))
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/kill_resume.json"))
    args = parser.parse_args()
    params_text = Path("params.yaml").read_text()
    shutil.rmtree(args.root, ignore_errors=True)
    rows = []
    try:
        for minutes in args.minutes:
            params = yaml.safe_load(params_text)
            params["train"]["checkpoint_minutes"] = minutes
            params["train"]["eval_batch"] = 128  # explicit: no profile needed
            Path("params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
            whole, _ = timed(command(args.model, f"whole{minutes}", args.root))
            reference = (args.root / f"whole{minutes}" / "models" / "v0.safetensors").read_bytes()
            for point in args.points:
                run = f"killed{minutes}_{point}"
                proc = subprocess.Popen(command(args.model, run, args.root), stdout=subprocess.DEVNULL,
                                        stderr=subprocess.DEVNULL)  # fmt: skip
                time.sleep(point * whole)
                killed_at = time.time()
                proc.send_signal(signal.SIGKILL)
                proc.wait()
                path, progress = newest_checkpoint(args.root / run / "resume")
                where = None if progress is None else f"epoch {progress['epoch'] + 1} step {progress['step']}"
                lost = killed_at - path.stat().st_mtime if path else point * whole
                again, log = timed(command(args.model, run, args.root))
                identical = (args.root / run / "models" / "v0.safetensors").read_bytes() == reference
                row = {
                    "checkpoint_minutes": minutes, "kill_point": point, "uninterrupted_s": round(whole, 1),
                    "killed_after_s": round(point * whole, 1), "work_lost_s": round(lost, 1),
                    "resumed_from": where,
                    "rerun_s": round(again, 1), "left_of_uninterrupted_s": round(whole * (1 - point), 1),
                    "identical_weights": identical,
                }  # fmt: skip
                rows.append(row)
                print(json.dumps(row), flush=True)
    finally:
        Path("params.yaml").write_text(params_text)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(rows, indent=1) + "\n")


if __name__ == "__main__":
    main()
