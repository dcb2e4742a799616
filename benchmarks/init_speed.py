"""How long `paddy init FOLDER --dry-run` takes on a competition of 10,000 images (it must stay under 5 s).

    python benchmarks/init_speed.py                    # 10,000 images in the Paddy layout
    python benchmarks/init_speed.py --images 100000 --layout folders

Builds the folder in a temporary directory (every image the same tiny JPEG: init reads names, never pixels), then
times the real command in a fresh interpreter, imports included, as a user runs it: the listing, the CSVs, the
inference and the check stage's check of the description against the files.
"""

import argparse
import io
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
LABELS = ["bacterial_leaf_blight", "blast", "brown_spot", "dead_heart", "hispa", "normal", "tungro"]


def build(root, n_images, layout):
    """A competition of n_images (9 of 10 training, 1 of 10 test) laid out like Paddy (a train.csv, class folders
    named in it) or like plant seedlings (class folders only)."""
    buffer = io.BytesIO()
    Image.new("RGB", (16, 16), (40, 150, 50)).save(buffer, format="JPEG")
    tiny = buffer.getvalue()
    n_test = n_images // 10
    rows = []
    for i in range(n_images - n_test):
        label, image_id = LABELS[i % len(LABELS)], f"{100001 + i}.jpg"
        folder = root / ("train_images" if layout == "paddy" else "train") / label
        folder.mkdir(parents=True, exist_ok=True)
        (folder / image_id).write_bytes(tiny)
        rows.append(f"{image_id},{label},ADT45,{45 + i % 5}")
    test = root / ("test_images" if layout == "paddy" else "test")
    test.mkdir(parents=True)
    for i in range(n_test):
        (test / f"{200001 + i}.jpg").write_bytes(tiny)
    if layout == "paddy":
        (root / "train.csv").write_text("image_id,label,variety,age\n" + "\n".join(rows) + "\n")
    header = "image_id,label" if layout == "paddy" else "file,species"
    (root / "sample_submission.csv").write_text(header + "\n" + "".join(f"{200001 + i}.jpg,\n" for i in range(n_test)))


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=10_000)
    parser.add_argument("--layout", choices=["paddy", "folders"], default="paddy")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs; the fastest and the slowest are shown")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        start = time.perf_counter()
        build(tmp / "competition", args.images, args.layout)
        print(f"built {args.images:,} images ({args.layout} layout) in {time.perf_counter() - start:.1f} s")
        shutil.copy(ROOT / "params.yaml", tmp / "params.yaml")
        cmd = [sys.executable, "-c", "import sys; from paddy.commands import main; sys.exit(main())", "init",
               str(tmp / "competition"), "--params", str(tmp / "params.yaml"), "--dry-run"]  # fmt: skip
        times = []
        for _ in range(args.repeats):
            start = time.perf_counter()
            out = subprocess.run(cmd, capture_output=True, text=True)
            times.append(time.perf_counter() - start)
            if out.returncode != 0:
                sys.exit(out.stdout[-2000:] + out.stderr[-2000:])
        print(out.stdout.split("\ncompetition:")[0].rstrip())
        print(f"paddy init --dry-run on {args.images:,} images: {min(times):.2f} s (slowest of {args.repeats}: "
              f"{max(times):.2f} s)")  # fmt: skip


if __name__ == "__main__":
    main()
