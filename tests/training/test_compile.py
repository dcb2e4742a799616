"""train.compile: torch.compile of the model in the one training path. `true` trains through the compiled graph to
the eager run's losses, its compile time is measured and reported, checkpoints keep their keys; auto stays eager
on a CPU; a bad value is refused with a message naming the key."""

import pytest
import torch
import yaml
from helpers.data import prepared_work
from helpers.pipeline import ROOT
from helpers.settings import settings_with, shrunk_params
from helpers.training import train
from torch._dynamo import list_backends, register_backend
from torch._dynamo.backends.registry import lookup_backend

from paddy.errors import PaddyError
from paddy.training.checkpoints import load_checkpoint
from paddy.training.compile import compiles, maybe_compile

CPU = torch.device("cpu")
GRAPHS = []


def _counting(gm, example_inputs):
    """aot_eager (dynamo's graph capture and AOTAutograd's forward/backward split, without inductor's C++ build,
    which takes minutes on this CPU), counting the graphs it is handed so the test knows the model was compiled."""
    GRAPHS.append(len(gm.graph.nodes))
    return lookup_backend("aot_eager")(gm, example_inputs)


if "paddy_counting" not in list_backends(exclude_tags=()):
    register_backend(_counting, name="paddy_counting")


@pytest.fixture(scope="module")
def workspace(competition, tmp_path_factory):
    work = tmp_path_factory.mktemp("compile")
    prepared_work(competition, work)
    params = shrunk_params()
    params["train"].update(epochs=2, eval_batch=32)
    params["models"] = {"resnet": params["models"]["resnet"]}
    return work, params


def train_with(work, params, setting, run):
    settings = settings_with(params, {"train.compile": setting})
    return train(settings, work, work / run, (8, 32))[0]


@pytest.mark.slow  # about a minute on a 2-core CPU: dynamo traces the train and eval graphs
def test_compiled_training_matches_eager(workspace, monkeypatch, capsys):
    work, params = workspace
    monkeypatch.setenv("PADDY_COMPILE_BACKEND", "paddy_counting")
    GRAPHS.clear()
    eager = train_with(work, params, False, "eager")
    assert not GRAPHS and "compile_s" not in eager
    compiled = train_with(work, params, True, "compiled")
    assert GRAPHS, "train.compile true trained without compiling the model"
    assert torch.isfinite(torch.tensor(compiled["train_loss"]))
    assert compiled["train_loss"] == pytest.approx(eager["train_loss"], rel=1e-3)
    assert compiled["valid_loss"] == pytest.approx(eager["valid_loss"], rel=1e-3)
    assert compiled["compile_s"] >= 0
    assert "torch.compile: first step" in capsys.readouterr().out
    # compiled in place: the checkpoint has the eager model's keys and loads into a fresh eager model
    model, _ = load_checkpoint(work / "compiled", "v0")
    reference, _ = load_checkpoint(work / "eager", "v0")
    assert model.state_dict().keys() == reference.state_dict().keys()


def test_auto_compiles_on_cuda_only():
    assert compiles("auto", torch.device("cuda")) and not compiles("auto", CPU)
    assert compiles(True, CPU) and not compiles(False, torch.device("cuda"))
    model = torch.nn.Linear(2, 2)
    assert maybe_compile(model, "auto", CPU) is None and model._compiled_call_impl is None


@pytest.mark.parametrize("value", ["yes", 1, None, "true"])
def test_bad_compile_setting_is_refused(value):
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    with pytest.raises(PaddyError, match=r"`train.compile` in params.yaml is .*auto"):
        settings_with(params, {"train.compile": value})


def test_compile_settings_are_accepted():
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    assert params["train"]["compile"] == "auto"
    for value in ("auto", True, False):
        settings_with(params, {"train.compile": value})
