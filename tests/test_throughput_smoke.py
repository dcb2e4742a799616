"""benchmarks/throughput.py --smoke: the GPU benchmark's code, every section, on the CPU with a tiny model, so the
one GPU command cannot fail on a path no test has run."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SECTIONS = ("ceiling", "pipeline_eager", "pipeline_compiled", "tta")


@pytest.mark.slow  # a couple of minutes on a 2-core CPU: three trainings (one compiled), TTA twice, the loader
def test_smoke_writes_every_section(tmp_path):
    out = tmp_path / "throughput.json"
    env = dict(os.environ, PYTHONPATH=str(ROOT / "src"), PADDY_CACHE=str(tmp_path / "cache"))
    cmd = [sys.executable, str(ROOT / "benchmarks/throughput.py"), "--smoke", "--archs", "test_resnet",
           "--images", "48", "--out", str(out), "--work", str(tmp_path / "work")]  # fmt: skip
    run = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    last = run.stdout.strip().splitlines()[-2]
    assert last.startswith("loader_images_per_s_per_core=") and float(last.split("=")[1]) > 0
    report = json.loads(out.read_text())
    assert report["torch"] and report["timm"] and report["device"] == "cpu"
    model = report["models"]["resnet"]
    assert model["forward_gflops"] > 0
    for section in SECTIONS:
        row = model[section]
        for key in ("images_per_s", "peak_memory_gb"):
            assert row[key] > 0, (section, key, row)
    for section in ("ceiling", "pipeline_eager", "pipeline_compiled"):
        assert model[section]["mfu_of_matmul"] > 0 and model[section]["train_tflops"] > 0
    for section in ("pipeline_eager", "pipeline_compiled"):
        assert model[section]["epoch_s"] > 0 and model[section]["steps_timed"] > 0
    assert model["pipeline_compiled"]["compile_s"] > 0
    parts = model["breakdown"]
    assert parts["step_ms"] > 0 and parts["data_wait"][0] > 0
    for part in ("augment", "forward", "backward", "optimizer"):  # host time; no device time on the CPU
        assert parts[part][0] > 0, (part, parts)
    try:
        import fastai  # noqa: F401

        assert model["fastai"]["images_per_s"] > 0
    except ImportError:
        assert "fastai is not installed" in model["fastai"]["skipped"]
    loader = report["loader"]
    for key in ("jpeg_decode", "timm_imagedataset_create_transform"):
        assert loader[key][0] > 0
    for setting in ("crop_640x480", "squish_480x480"):
        top_ops = loader[setting].pop("augment_cpu_top_ops")
        assert top_ops and all(0 < share <= 1 for _, share in top_ops)
        assert all((v[0] if isinstance(v, list) else v) > 0 for v in loader[setting].values())
    assert loader["loader_images_per_s_per_core"] > 0
