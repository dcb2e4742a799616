"""Memory profile: candidates, the choice rule, out-of-memory handling, the estimate, and train's `auto` micro-batch."""

import copy
import json
from pathlib import Path

import pytest
import torch

from paddy import memory
from paddy.errors import PaddyError
from paddy.params import load_params

ROOT = Path(__file__).resolve().parents[1]
CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def params():
    return load_params(ROOT / "params.yaml")


def with_micro_batch(params, name, micro):
    p = copy.deepcopy(params)
    p["models"][name]["micro_batch"] = micro
    return p


def rows(totals, oom=()):
    return [{"micro_batch": mb, "oom": mb in oom, "total_gb": t} for mb, t in totals.items()]


def test_candidates_halve_down_to_the_floor():
    assert memory.candidates(64, 8) == [64, 32, 16, 8]
    assert memory.candidates(64, 5) == [64, 32, 16, 8]
    assert memory.candidates(48, 6) == [48, 24, 12, 6]
    assert memory.candidates(4, 8) == [4]  # the full batch is always tried
    with pytest.raises(PaddyError):
        memory.candidates(64, 0)


def test_accumulation_counts_samples():
    assert memory.accumulation(64, 32) == 2
    assert memory.accumulation(64, 64) == 1
    assert memory.accumulation(48, 32) == 2  # a short last group of 16


def test_choice_is_the_largest_micro_batch_within_the_limit():
    assert memory.choose(rows({64: 20.0, 32: 11.0, 16: 6.0}), 14.4) == 32
    assert memory.choose(rows({64: 14.4, 32: 8.0}), 14.4) == 64  # at the limit still fits
    assert memory.choose(rows({64: 1.0, 32: 0.8}, oom={64}), 14.4) == 32  # out of memory never fits
    assert memory.choose(rows({64: 30.0, 32: 20.0}), 14.4) is None


def test_out_of_memory_is_caught_and_the_next_candidate_tried():
    tried = []

    def step(mb):
        tried.append(mb)
        if mb > 16:
            raise torch.OutOfMemoryError(f"CUDA out of memory. Tried to allocate {mb} GiB")
        return {"micro_batch": mb, "oom": False, "allocated_gb": mb / 8, "reserved_gb": mb / 8, "total_gb": mb / 4}

    spec = memory.Spec("test_convnext", (64, 64), 10, "bf16")
    profile = memory.profile_model("convnext", spec, [64, 32, 16, 8], 16, 0.1, CPU, 64, step=step)
    assert tried == [64, 32, 16, 8]
    assert [r["oom"] for r in profile["table"]] == [True, True, False, False]
    assert "out of memory" in profile["table"][0]["error"]
    assert (profile["micro_batch"], profile["accumulation"]) == (16, 4)
    assert profile["device"] == "cpu"  # measured (by the injected step), not "estimate"
    bars = memory.plot_rows(profile)
    assert [b["fits"] for b in bars] == [False, False, True, True, True]  # the last bar is the limit


def test_nothing_fits_names_the_model_and_the_smallest_peak():
    spec = memory.Spec("test_convnext", (64, 64), 10, "bf16")
    step = lambda mb: {"micro_batch": mb, "oom": False, "allocated_gb": 20, "reserved_gb": 21, "total_gb": 21.5}  # noqa: E731
    profile = memory.profile_model("bigmodel", spec, [16, 8], 16, 0.1, CPU, 64, step=step)
    assert profile["micro_batch"] is None and profile["accumulation"] is None
    with pytest.raises(PaddyError, match=r"`bigmodel`.*smallest micro-batch, 8, needs 21.5 GB"):
        memory.require_fit(profile)

    def oom(mb):
        raise torch.OutOfMemoryError("CUDA out of memory")

    profile = memory.profile_model("bigmodel", spec, [16, 8], 16, 0.1, CPU, 64, step=oom)
    with pytest.raises(PaddyError, match=r"`bigmodel`.*8, ran out of memory"):
        memory.require_fit(profile)


@pytest.mark.parametrize("budget, headroom", [(0, 0.1), (-4, 0.1), ("16", 0.1), (16, 1.0), (16, -0.1)])
def test_bad_budget_is_refused(params, budget, headroom):
    p = copy.deepcopy(params)
    p["profile"].update(budget_gb=budget, headroom=headroom)
    with pytest.raises(PaddyError, match="profile.budget_gb|profile.headroom"):
        memory.profile_from_params("convnext", p, 10, CPU)


def test_unknown_architecture_is_refused():
    with pytest.raises(PaddyError, match="timm has no architecture 'convnext_lrage'.*convnext_large"):
        memory.parse_arch("convnext_lrage:224")
    with pytest.raises(PaddyError, match="fixed input"):
        memory.parse_arch("vit_base_patch16_224:320")
    assert memory.parse_arch("vit_base_patch16_224") == ("vit_base_patch16_224", (224, 224))
    assert memory.parse_arch("test_convnext:320x224") == ("test_convnext", (320, 224))


def test_estimate_grows_with_batch_and_image_size():
    spec = memory.Spec("test_convnext", (64, 64), 10, "bf16")
    small = memory.estimate(spec, [32, 16])
    assert small[0]["allocated_gb"] > small[1]["allocated_gb"]
    large = memory.estimate(memory.Spec("test_convnext", (128, 128), 10, "bf16"), [16])[0]
    assert large["allocated_gb"] > small[1]["allocated_gb"]  # 128x128 > 64x64 at micro-batch 16
    for r in small:  # the allowance for what tensors do not show is on top of the tensors
        assert r["total_gb"] > r["reserved_gb"] >= r["allocated_gb"]


def test_estimate_holds_weights_gradients_and_adam_state():
    from paddy.models import create_model

    model = create_model("test_resnet", 10)
    weight_bytes = sum(p.numel() * 4 for p in model.parameters())
    fp32 = memory.estimate(memory.Spec("test_resnet", (64, 64), 10, "fp32"), [2])[0]
    # weights, gradients and AdamW's two moments, all fp32, live at once during the second step
    assert fp32["allocated_gb"] * memory.GiB >= 4 * weight_bytes
    bf16 = memory.estimate(memory.Spec("test_vit", (160, 160), 10, "bf16"), [32])[0]
    fp32 = memory.estimate(memory.Spec("test_vit", (160, 160), 10, "fp32"), [32])[0]
    assert bf16["allocated_gb"] < fp32["allocated_gb"]  # mixed precision keeps half-size activations


def test_profile_from_params_estimates_on_the_cpu(params):
    profile = memory.profile_from_params("vit", params, 10, CPU)
    assert profile["device"] == memory.ESTIMATE
    assert [r["micro_batch"] for r in profile["table"]] == memory.candidates(
        params["train"]["effective_batch"], params["profile"]["min_micro_batch"]
    )
    assert profile["precision"] == "bf16"  # auto plans for a CUDA card's mixed precision
    assert profile["micro_batch"] == params["train"]["effective_batch"]  # a tiny model fits 16 GB at full batch
    metrics = memory.metrics_of(profile)
    assert metrics["accumulation"] == 1 and metrics["measured"] is False


def test_train_honours_an_explicit_micro_batch(params, tmp_path):
    p = with_micro_batch(params, "vit", 8)
    assert memory.resolve_micro_batch("vit", p, tmp_path / "missing.json", CPU) == 8


def test_train_auto_reads_the_profile(params, tmp_path):
    p = with_micro_batch(params, "vit", "auto")
    profile = memory.profile_from_params("vit", p, 10, CPU)
    profile["micro_batch"], profile["accumulation"] = 16, 4  # a choice only the file can have made
    path = tmp_path / "vit.json"
    path.write_text(json.dumps(profile))
    assert memory.resolve_micro_batch("vit", p, path, CPU) == 16
    with pytest.raises(PaddyError, match="dvc repro profile@vit"):
        memory.resolve_micro_batch("vit", p, tmp_path / "missing.json", CPU)


def test_train_auto_recomputes_a_profile_for_other_settings(params, tmp_path, capsys):
    p = with_micro_batch(params, "vit", "auto")
    profile = memory.profile_from_params("vit", p, 10, CPU)
    profile.update(arch="test_convnext", micro_batch=8)  # made for another architecture
    path = tmp_path / "vit.json"
    path.write_text(json.dumps(profile))
    assert memory.resolve_micro_batch("vit", p, path, CPU) == p["train"]["effective_batch"]
    assert "profiling vit again" in capsys.readouterr().out


def test_cli_prints_the_estimate_table(monkeypatch, capsys):
    from paddy.cli import main

    monkeypatch.chdir(ROOT)
    assert main(["profile", "--estimate", "--arch", "test_vit", "test_convnext:96x64", "--batch", "8", "4"]) == 0
    out = capsys.readouterr().out
    assert "test_convnext" in out and "96x64" in out and "estimate" in out
    assert main(["profile", "--estimate", "--arch", "nonsense_net"]) == 2


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_measures_and_reprofiles_an_estimate(params, tmp_path):
    from paddy.device import device_name

    cuda = torch.device("cuda")
    p = with_micro_batch(params, "convnext", "auto")
    profile = memory.profile_from_params("convnext", p, 10, cuda)
    assert profile["device"] == device_name(cuda)
    assert all(r["reserved_gb"] >= r["allocated_gb"] > 0 for r in profile["table"])
    estimate = memory.profile_from_params("convnext", p, 10, CPU)
    estimate["micro_batch"] = 8  # the estimate's choice must not be used on a GPU: it is measured again
    path = tmp_path / "convnext.json"
    path.write_text(json.dumps(estimate))
    assert memory.resolve_micro_batch("convnext", p, path, cuda) == profile["micro_batch"]
