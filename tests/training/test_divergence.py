"""A diverging run stops at the step its loss goes NaN or infinite, in one paragraph naming the model, split, epoch,
step, the last losses and what to try, and the last finished model stays (fastai's TerminateOnNaNCallback). It used
to train on for hours on NaN weights, replace the model, and hand TTA and the ensemble NaN probabilities."""

import math
import subprocess
import sys

import pytest
import torch
import yaml
from helpers.pipeline import ROOT
from helpers.settings import shrunk_params
from helpers.training import train

from paddy.data.prepare import prepare_competition
from paddy.data.split import make_splits
from paddy.errors import PaddyError
from paddy.files import write_csv
from paddy.predict.tta import predict_model
from paddy.settings import parse_settings
from paddy.training.checkpoints import save_checkpoint
from paddy.training.divergence import CHECK_EVERY, FP16_SKIPS, Diverged, LossWatch
from paddy.training.run import checkpoint_run

CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def work(competition, tmp_path_factory):
    """data/prepared and data/split.csv of the tiny competition, and params.yaml with the vit alone."""
    work = tmp_path_factory.mktemp("diverge")
    params = shrunk_params()
    params["models"] = {"vit": params["models"]["vit"]}
    (work / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    index, _ = prepare_competition(competition[0], work / "prepared", parse_settings(params).competition, 64, 1)
    write_csv(make_splits(index[index.split == "train"], "bag", 1, 0.2, 0), work / "split.csv")
    return work


def nan_after_epoch_2_step_2(steps):
    """An on_step hook that records each (epoch, step) in `steps` and makes a weight NaN after step 2 of epoch 2
    (0-based (1, 1)): step 3's loss is the run's first NaN."""

    def on_step(split, epoch, step, model, optimizer):
        steps.append((epoch, step))
        if (epoch, step) == (1, 1):
            with torch.no_grad():
                next(model.parameters()).view(-1)[0] = math.nan

    return on_step


def test_a_nan_loss_stops_the_run_at_its_step(work, tmp_path):
    """A weight made NaN after step 2 of epoch 2: step 3's loss is NaN, and nothing runs after it."""
    params = shrunk_params()
    params["train"]["epochs"] = 4
    steps = []
    on_step = nan_after_epoch_2_step_2(steps)

    with pytest.raises(Diverged) as err:
        train(parse_settings(params), work, tmp_path / "models", on_step=on_step, resume_dir=tmp_path / "resume")
    assert steps[-1] == (1, 2)  # the NaN step ran, no other after it
    message = str(err.value)
    assert message.startswith("resnet, split v0, diverged: the training loss is nan at epoch 2, step 3 of 3")
    assert message.endswith("Try a lower `train.lr` (now 0.01), e.g. `dvc exp run -S train.lr=...` with a tenth of "
                            "it (`paddy lr-find` suggests one).")  # fmt: skip
    losses = message.split("the losses up to it: ")[1].split(". ")[0].split(", ")
    assert len(losses) == 5 and losses[-1] == "nan" and all(math.isfinite(float(v)) for v in losses[:-1])
    assert not (tmp_path / "models").exists()  # no checkpoint of the split
    resume = torch.load(next((tmp_path / "resume").rglob("v0.pt")), weights_only=False)
    assert resume["progress"]["epoch"] == 1  # the last checkpoint is the one before the NaN: epoch 1's end
    assert all(torch.isfinite(t).all() for t in resume["model"].values() if t.is_floating_point())


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_on_cuda_a_nan_stops_the_run_within_check_every_steps(work, tmp_path, precision):
    """On CUDA the watch waits for the device every CHECK_EVERY steps (not each step): a NaN from step 3 of epoch 2
    on must still stop the run within that many steps, with the paragraph and no checkpoint of the split."""
    params = shrunk_params()
    params["train"]["epochs"] = 12  # 36 steps: room for two CHECK_EVERY windows after the NaN
    steps = []
    on_step = nan_after_epoch_2_step_2(steps)

    with pytest.raises(Diverged, match="diverged: the training loss is nan"):
        params["train"]["precision"] = precision
        settings, cuda = parse_settings(params), torch.device("cuda")
        train(settings, work, tmp_path / "models", device=cuda, on_step=on_step, resume_dir=tmp_path / "resume")
    first_nan = steps.index((1, 2))
    assert len(steps) - 1 - first_nan < CHECK_EVERY, steps
    assert not (tmp_path / "models").exists()


def test_fp16s_skipped_steps_are_its_scale_search_until_they_go_on_and_on():
    watch = LossWatch(CPU, fp16=True)
    inf, yes, no = torch.tensor(math.inf), torch.tensor(True), torch.tensor(False)
    for i in range(FP16_SKIPS - 1):  # the grad scaler halving its scale: skipped, the weights untouched
        watch.step(inf, 0, i, 100, 0.01, yes)
        watch.check()
    watch.step(torch.tensor(2.3), 0, FP16_SKIPS - 1, 100, 0.01, no)  # a scale that fits: the streak ends
    watch.check()
    for i in range(FP16_SKIPS - 1):
        watch.step(inf, 0, FP16_SKIPS + i, 100, 0.01, yes)
        watch.check()
    watch.step(inf, 0, 2 * FP16_SKIPS - 1, 100, 0.01, yes)
    with pytest.raises(Diverged) as err:
        watch.check()
    assert err.value.step == 2 * FP16_SKIPS - 1 and err.value.skipped == FP16_SKIPS
    err.value.precision = "fp16"
    assert f"fp16's grad scaler had skipped the last {FP16_SKIPS} steps in a row" in str(err.value)
    assert "or `train.precision: bf16` (fp32 on GPUs without bf16)" in str(err.value)
    watch = LossWatch(CPU, fp16=True)
    watch.step(torch.tensor(math.nan), 0, 0, 100, 0.01, no)  # a NaN loss the scaler did not skip: NaN weights
    with pytest.raises(Diverged):
        watch.check()


def test_on_cuda_the_watch_waits_for_the_device_every_few_steps_and_names_the_first_bad_one():
    watch = LossWatch(CPU, every=CHECK_EVERY)  # CUDA's: the device is asked every CHECK_EVERY steps
    for i, v in enumerate([2.0, 1.9, math.nan, 1.0, math.inf]):
        watch.step(torch.tensor(v), 3, i, 20, 0.5)
        watch.check()  # not due yet: no wait
    with pytest.raises(Diverged) as err:
        watch.check(force=True)  # before a checkpoint, at the end of an epoch
    assert (err.value.epoch, err.value.step, err.value.losses[-1]) == (3, 2, pytest.approx(math.nan, nan_ok=True))


def test_a_diverging_vit_stops_with_one_paragraph_and_the_last_model_stays(work, tmp_path):
    """The issue's `train.lr=10` (the largest rate the check allows), on the tiny competition: the vit's loss is NaN
    in its 4th epoch. The train stage stops there, exit 2, and data/models/vit is the last finished run's."""
    params = yaml.safe_load((work / "params.yaml").read_text())
    params["train"].update(lr=10, epochs=12, eval_batch=16)
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    last = tmp_path / "models" / "vit"
    last.mkdir(parents=True)
    (last / "meta.json").write_text('{"the": "last finished run"}')
    command = [
        sys.executable, str(ROOT / "stages/train.py"), "vit", str(work / "prepared"), str(work / "split.csv"),
        str(last), str(tmp_path / "live"), "--resume-dir", str(tmp_path / "resume"),
    ]  # fmt: skip
    out = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert out.returncode == 2 and "Traceback" not in out.stderr, out.stderr[-3000:]
    error = "error: " + out.stderr.split("\nerror: ", 1)[1].strip()  # after the progress lines
    assert error.startswith("error: vit, split v0, diverged: the training loss is nan at epoch ")
    assert f"{last} and {tmp_path / 'live'} are still the last finished run's. Try a lower `train.lr` (now 10)" in error
    epochs = [line for line in out.stdout.splitlines() if line.startswith("vit split 0 epoch ")]
    stopped = int(error.split("at epoch ")[1].split(",")[0])
    assert len(epochs) == stopped - 1 < 12  # every epoch before the NaN one logged, none after
    assert (last / "meta.json").read_text() == '{"the": "last finished run"}'
    assert sorted(p.name for p in last.iterdir()) == ["meta.json"]


def test_tta_refuses_weights_that_hold_nan(work, tmp_path):
    """A model trained before runs were stopped: TTA names it instead of writing NaN rows for the ensemble."""
    params = shrunk_params()
    settings = parse_settings(params)
    train(settings, work, tmp_path / "resnet")
    from paddy.training.checkpoints import load_checkpoint, read_meta

    model, meta = load_checkpoint(tmp_path / "resnet", "v0")
    with torch.no_grad():
        for p in model.parameters():
            p.fill_(math.nan)
    (tmp_path / "resnet/meta.json").unlink()
    save_checkpoint(model, meta, tmp_path / "resnet", "v0")
    assert read_meta(tmp_path / "resnet")["splits"] == ["v0"]
    with pytest.raises(PaddyError) as err:
        predict_model(
            checkpoint_run(settings, tmp_path / "resnet", CPU, work / "prepared", work / "split.csv"),
            tmp_path / "resnet",
        )
    assert f"{tmp_path / 'resnet'}/v0.safetensors gives NaN or infinite probabilities for 24 of 24 images" in str(
        err.value
    )
    assert "`dvc repro -f train@resnet`" in str(err.value)
