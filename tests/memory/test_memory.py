"""Memory profile: candidates, the choice rule, out-of-memory handling, the estimate of the real training step
(accumulation included), the prediction step's batch, and what train takes from the profile."""

import copy
import json
import re

import pytest
import torch
from helpers.pipeline import ROOT
from helpers.settings import settings_with

from paddy.commands.profile import parse_arch
from paddy.errors import PaddyError
from paddy.memory import display
from paddy.memory import measure as memory
from paddy.memory import profile as prof
from paddy.settings import ModelSettings, ProfileSettings, TrainSettings, parse_settings, read_params
from paddy.training.models import create_model
from paddy.training.run import TrainingRun

CPU = torch.device("cpu")
VOCAB = {"label": [f"d{i}" for i in range(10)], "variety": [f"v{i}" for i in range(10)]}
LIMITS = ProfileSettings(budget_gb=16, headroom=0.1)


def run_of(settings, device=CPU, name="vit"):
    """The run of models.<name> whose settings, vocabulary and device the profile reads."""
    model = settings.model(name)
    return TrainingRun(settings, name, device, "fp32", VOCAB, model.micro_batch, settings.train.eval_batch)


@pytest.fixture(scope="module")
def params():
    return read_params(ROOT / "params.yaml")


def with_batches(params, name, micro, evals=None):
    changes = {f"models.{name}.micro_batch": micro}
    if evals is not None:
        changes["train.eval_batch"] = evals
    return settings_with(params, changes)


def spec(arch="test_convnext", size=(64, 64), precision="bf16", effective=64, item=None):
    model = ModelSettings("m", arch, False, "fastai", ("label",), item or size, "squish", size, "auto", 1)
    return memory.Spec(model, TrainSettings(effective_batch=effective), 10, precision)


def fake_run(train_totals, eval_totals=None, oom=()):
    """A stand-in for the measurement: given peaks per micro-batch and eval batch, with out-of-memory where asked."""

    def run(mb, eval_batches):
        if mb in oom:
            raise torch.OutOfMemoryError(f"CUDA out of memory. Tried to allocate {mb} GiB")
        row = {"oom": False, "allocated_gb": 0.0, "reserved_gb": 0.0, "total_gb": train_totals[mb]}
        evals = [{"oom": False, "allocated_gb": 0.0, "reserved_gb": 0.0, "total_gb": (eval_totals or {}).get(e, 1.0)}
                 for e in eval_batches]  # fmt: skip
        return row, evals

    return run


def test_candidates_halve_down_to_the_floor():
    assert prof.candidates(64, 8) == [64, 32, 16, 8]
    assert prof.candidates(64, 5) == [64, 32, 16, 8]
    assert prof.candidates(48, 6) == [48, 24, 12, 6]
    assert prof.candidates(4, 8) == [4]  # the full batch is always tried
    assert prof.eval_candidates(64, 16) == [256, 128, 64, 32, 16]
    with pytest.raises(PaddyError):
        prof.candidates(64, 0)


def test_accumulation_counts_samples():
    assert prof.accumulation(64, 32) == 2
    assert prof.accumulation(64, 64) == 1
    assert prof.accumulation(48, 32) == 2  # a short last group of 16


def test_choice_is_the_largest_batch_within_the_limit():
    rows = lambda totals, oom=(): [{"micro_batch": m, "oom": m in oom, "total_gb": t} for m, t in totals.items()]  # noqa: E731
    assert prof.choose(rows({64: 20.0, 32: 11.0, 16: 6.0}), 14.4) == 32
    assert prof.choose(rows({64: 14.4, 32: 8.0}), 14.4) == 64  # at the limit still fits
    assert prof.choose(rows({64: 1.0, 32: 0.8}, oom={64}), 14.4) == 32  # out of memory never fits
    assert prof.choose(rows({64: 30.0, 32: 20.0}), 14.4) is None


def test_out_of_memory_is_caught_and_the_next_candidate_tried():
    run = fake_run({16: 4.0, 8: 2.0}, eval_totals={256: 20.0, 128: 12.0}, oom={64, 32})
    profile = prof.profile_model("convnext", spec(), ([64, 32, 16, 8], [256, 128, 64]), LIMITS, CPU, measure=run)
    assert [r["oom"] for r in profile["table"]] == [True, True, False, False]
    assert "out of memory" in profile["table"][0]["error"]
    assert (profile["micro_batch"], profile["accumulation"]) == (16, 4)
    assert profile["eval_batch"] == 128  # 256 needs 20 GB > 14.4
    assert profile["device"] == "cpu"  # measured (by the injected run), not "estimate"
    bars = display.plot_rows(profile)
    assert [b["fits"] for b in bars] == [False, False, True, True, False, True, True, True]  # last: the limit


def test_nothing_fits_names_the_model_and_the_smallest_peak():
    run = fake_run({16: 21.5, 8: 21.5})
    profile = prof.profile_model("bigmodel", spec(), ([16, 8], [64]), LIMITS, CPU, measure=run)
    assert profile["micro_batch"] is None and profile["accumulation"] is None and profile["eval_table"] == []
    with pytest.raises(PaddyError, match=r"`bigmodel`.*smallest training batch, 8, needs 21.5 GB"):
        prof.require_fit(profile)
    profile = prof.profile_model("bigmodel", spec(), ([16, 8], [64]), LIMITS, CPU, measure=fake_run({}, oom={16, 8}))
    with pytest.raises(PaddyError, match=r"`bigmodel`.*8, ran out of memory"):
        prof.require_fit(profile)


def test_an_explicit_micro_batch_is_measured_and_its_run_sizes_the_eval_batch():
    run = fake_run({64: 20.0, 32: 10.0, 24: 12.0, 16: 6.0})
    profile = prof.profile_model("m", spec(), ([64, 32, 16], [128]), LIMITS, CPU, micro_batch=24, measure=run)
    assert [r["micro_batch"] for r in profile["table"]] == [64, 32, 24, 16]
    assert profile["micro_batch"] == 32 and profile["eval_batch"] == 128


def test_only_the_micro_batch_training_uses_runs_the_prediction_steps():
    """The eval table comes from one run; the other candidates skip the prediction steps (seconds each on the CPU)."""
    asked = {}
    train_totals = {64: 20.0, 32: 10.0, 24: 12.0, 16: 6.0}

    def run(mb, eval_batches):
        asked[mb] = list(eval_batches)
        return fake_run(train_totals)(mb, eval_batches)

    profile = prof.profile_model("m", spec(), ([64, 32, 16], [128, 64]), LIMITS, CPU, measure=run)
    assert asked == {64: [128, 64], 32: [128, 64], 16: []}  # 64 did not fit, 32 is the chosen one
    assert [r["eval_batch"] for r in profile["eval_table"]] == [128, 64]
    asked.clear()
    profile = prof.profile_model("m", spec(), ([64, 32, 16], [128, 64]), LIMITS, CPU, micro_batch=24, measure=run)
    assert asked == {64: [], 32: [], 24: [128, 64], 16: []}
    assert [r["eval_batch"] for r in profile["eval_table"]] == [128, 64]


@pytest.mark.parametrize("budget, headroom", [(0, 0.1), (-4, 0.1), ("16", 0.1), (16, 1.0), (16, -0.1)])
def test_bad_budget_is_refused(params, budget, headroom):
    with pytest.raises(PaddyError, match="profile.budget_gb|profile.headroom"):
        settings_with(params, {"profile.budget_gb": budget, "profile.headroom": headroom})


def test_unknown_architecture_is_refused():
    with pytest.raises(PaddyError, match="--arch convnext_lrage:224 is 'convnext_lrage'.*convnext_large"):
        parse_arch("convnext_lrage:224")
    assert parse_arch("vit_base_patch16_224:320") == ("vit_base_patch16_224", (320, 320))  # 20 patches a side
    with pytest.raises(PaddyError, match="not a multiple of 16"):
        parse_arch("vit_base_patch16_224:328")
    with pytest.raises(PaddyError, match="fixed input"):
        parse_arch("mixer_s16_224:320")
    assert parse_arch("vit_base_patch16_224") == ("vit_base_patch16_224", (224, 224))
    assert parse_arch("test_convnext:320x224") == ("test_convnext", (320, 224))


def test_estimate_grows_with_batch_and_image_size():
    big, _ = memory.estimate(spec(effective=32), 32)
    small, _ = memory.estimate(spec(effective=16), 16)
    assert big["allocated_gb"] > small["allocated_gb"]
    large, _ = memory.estimate(spec(size=(128, 128), effective=16), 16)
    assert large["allocated_gb"] > small["allocated_gb"]  # 128x128 > 64x64 at micro-batch 16
    for r in (big, small):  # the allowance for what tensors do not show is on top of the tensors
        assert r["total_gb"] > r["reserved_gb"] >= r["allocated_gb"]


def test_estimate_holds_weights_gradients_and_adam_state():
    model = create_model("test_resnet", 10)
    weight_bytes = sum(p.numel() * 4 for p in model.parameters())
    fp32, _ = memory.estimate(spec("test_resnet", precision="fp32", effective=2), 2)
    # weights, gradients and AdamW's two moments, all fp32, live at once during the second step
    assert fp32["allocated_gb"] * memory.GiB >= 4 * weight_bytes
    bf16, _ = memory.estimate(spec("test_vit", (160, 160), effective=32), 32)
    fp32, _ = memory.estimate(spec("test_vit", (160, 160), "fp32", effective=32), 32)
    assert bf16["allocated_gb"] < fp32["allocated_gb"]  # mixed precision keeps half-size activations


def test_accumulation_adds_the_gradients_to_the_peak():
    """With accumulation 2 the first micro-batch's gradients live while the second runs forward: the estimate of
    16 x 2 exceeds 16 x 1 by at least the gradients' bytes (the extra 16 uint8 items it holds aside)."""
    s1 = spec("test_convnext", (128, 128), "fp32", effective=16)
    s2 = spec("test_convnext", (128, 128), "fp32", effective=32)
    one, _ = memory.estimate(s1, 16)
    two, _ = memory.estimate(s2, 16)
    grad_bytes = sum(p.numel() * 4 for p in create_model("test_convnext", 10).parameters())
    extra_items = 16 * 128 * 128 * 3
    assert (two["allocated_gb"] - one["allocated_gb"]) * memory.GiB - extra_items >= grad_bytes


def test_the_prediction_step_is_estimated_with_the_training_state_alive():
    train, evals = memory.estimate(spec(effective=16), 16, eval_batches=[64, 16])
    assert evals[0]["allocated_gb"] > evals[1]["allocated_gb"]
    model = create_model("test_convnext", 10)
    state_bytes = 3 * sum(p.numel() * 4 for p in model.parameters())  # weights and Adam's two moments
    assert evals[1]["allocated_gb"] * memory.GiB >= state_bytes


def test_profile_settings_estimates_on_the_cpu(params):
    profile = prof.profile_settings(run_of(parse_settings(params)))
    assert profile["device"] == prof.ESTIMATE
    effective, floor = params["train"]["effective_batch"], params["profile"]["min_micro_batch"]
    assert [r["micro_batch"] for r in profile["table"]] == sorted(
        set(prof.candidates(effective, floor)) | {params["models"]["vit"]["micro_batch"]}, reverse=True
    )
    assert [r["eval_batch"] for r in profile["eval_table"]] == prof.eval_candidates(effective, floor)
    assert profile["precision"] == "bf16"  # auto plans for a CUDA card's mixed precision
    assert profile["micro_batch"] == effective  # a tiny model fits 16 GB at full batch
    assert profile["eval_batch"] == 4 * effective
    metrics = display.summary_of(profile)
    assert metrics["accumulation"] == 1 and metrics["measured"] is False


def test_train_depends_only_on_the_choices_it_takes(params):
    """batches_of holds the auto choices and nothing else: a profile rerun that changes only timings, the budget
    or the table leaves the file, and so train, as it was."""
    params = copy.deepcopy(params)
    params["train"]["effective_batch"] = 64  # the candidates the fake run below knows: 64, 32, 16, 8
    p = with_batches(params, "vit", "auto")
    profile = prof.profile_settings(run_of(p), measure=fake_run({64: 3.0, 32: 2.0, 16: 1.0, 8: 1.0}))
    assert prof.batches_of(profile, p) == {"micro_batch": 64, "eval_batch": 256, "device": "cpu"}
    other = dict(profile, headroom=0.3, limit_gb=11.2, table=[])
    assert prof.batches_of(other, p) == prof.batches_of(profile, p)
    explicit = with_batches(params, "vit", 16, evals=64)
    assert prof.batches_of(profile, explicit) == {}


def test_train_takes_explicit_values_and_the_profile_for_auto(params, tmp_path):
    assert prof.resolve_batches(run_of(with_batches(params, "vit", 8, 32)), tmp_path / "none.json") == (8, 32)
    p = with_batches(params, "vit", "auto", 48)
    path = tmp_path / "vit.batches.json"
    path.write_text(json.dumps({"micro_batch": 16, "device": "estimate"}))  # a choice only the file can have made
    assert prof.resolve_batches(run_of(p), path) == (16, 48)
    # no profile yet (`paddy lr-find` before any `dvc repro`): the model is profiled now
    chosen = prof.profile_settings(run_of(p))["micro_batch"]
    assert prof.resolve_batches(run_of(p), tmp_path / "missing.json") == (chosen, 48)


def test_cli_prints_the_estimate_table_with_accumulation(monkeypatch, capsys):
    from paddy.commands import main

    monkeypatch.chdir(ROOT)
    args = ["profile", "--estimate", "--arch", "test_vit", "test_convnext:96x64", "--effective-batch", "16"]
    args += ["--num-classes", "10"]  # no data/prepared/targets.json to take the head's size from
    assert main([*args, "--batch", "8", "4", "--eval-batch", "32"]) == 0
    out = capsys.readouterr().out
    assert "test_convnext" in out and "96x64" in out and "estimate" in out
    assert "8x2" in out and "4x4" in out and "eval" in out  # micro-batch x accumulation, and the eval batch
    # train.precision auto plans bf16 for a CUDA card, while this CPU trains in fp32: the table says it is a plan.
    assert "bf16 (CUDA plan)" in out and "an estimate for a CUDA card" in out
    assert not re.search(r"bf16(?! \(CUDA plan\))", out)  # never a bare bf16
    assert main(["profile", "--estimate", "--arch", "nonsense_net"]) == 2


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_measures_and_reprofiles_an_estimate(params, tmp_path):
    from paddy.training.precision import device_name

    cuda = torch.device("cuda")
    p = with_batches(params, "vit", "auto")
    profile = prof.profile_settings(run_of(p, cuda))
    assert profile["device"] == device_name(cuda)
    assert all(r["reserved_gb"] >= r["allocated_gb"] > 0 for r in profile["table"])
    estimate = prof.profile_settings(run_of(p))
    estimate["micro_batch"] = 8  # the estimate's choice must not be used on a GPU: it is measured again
    path = tmp_path / "vit.batches.json"
    path.write_text(json.dumps(prof.batches_of(estimate, p)))
    assert prof.resolve_batches(run_of(p, cuda), path) == (profile["micro_batch"], profile["eval_batch"])
