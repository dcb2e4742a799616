"""`head: fastai` on every timm family the pipeline meets, whatever layout its features come in (NCHW maps, Swin's
NHWC maps, tokens the model pools itself), and the check stage's training step on fake tensors, which refuses a model
that cannot train before any stage runs."""

import pytest
import timm
import torch
import yaml
from helpers.pipeline import ROOT, run_script

from paddy.errors import PaddyError
from paddy.settings import parse_settings
from paddy.settings.parse import as_hw
from paddy.training import models
from paddy.training.model_checks import CHECK_CLASSES_PER_TARGET, check_models_train, dry_run
from paddy.training.models import add_fastai_head, create_model, to_fake

PARAMS_FILES = [ROOT / "params.yaml", *sorted((ROOT / "presets").glob("*.yaml"))]


def distinct_models():
    """(arch, head, size, outputs) of every model of params.yaml and the presets, each once (the seed trains each
    architecture twice, from two item methods), with the first model that uses it."""
    found = {}
    for path in PARAMS_FILES:
        for name, cfg in yaml.safe_load(path.read_text())["models"].items():
            outputs = CHECK_CLASSES_PER_TARGET * len(cfg["targets"])
            found.setdefault((cfg["arch"], cfg["head"], as_hw(cfg["size"]), outputs), f"{path.name}:{name}")
    return found


MODELS = distinct_models()


@pytest.mark.parametrize("arch,head,size,outputs", list(MODELS), ids=list(MODELS.values()))
def test_every_model_of_params_and_the_presets_takes_a_training_step(arch, head, size, outputs):
    """The seed's convnext, ViT, Swin and SwinV2 at their sizes: built with their head, forward and backward (fake
    tensors, no weights: seconds for the large models). Swin and SwinV2 with `head: fastai` failed here before."""
    dry_run(arch, outputs, size, head)


def body_output(arch, batch=2):
    """The fastai body's output shape, the body and the timm model, for `arch` at its own size, on fake tensors."""
    from torch._subclasses.fake_tensor import FakeTensorMode

    with torch.device("meta"):
        model = create_model(arch, 10, head="fastai")
    size = model[0].model.pretrained_cfg["input_size"][1:]
    with FakeTensorMode(allow_non_fake_inputs=True):
        model = model.to_empty(device=torch.device("cpu"))
        return tuple(model[0](torch.empty(batch, 3, *size)).shape), model[0], model[0].model


@pytest.mark.parametrize(
    "arch,layout",
    [
        ("test_resnet", "NCHW"),
        ("test_efficientnet", "NCHW"),
        ("test_convnext", "NCHW"),
        ("swin_tiny_patch4_window7_224", "NHWC"),  # forward_features returns (B, H, W, C): permuted by the body
        ("swinv2_tiny_window8_256", "NHWC"),
        ("test_mambaout", "NHWC"),  # MambaOut and Hiera-Det are NHWC too (fastai 2.8's body fails on them as well)
        ("test_vit", "pooled"),  # tokens, pooled by the model itself (class token)
        ("deit_tiny_distilled_patch16_224", "pooled"),  # two tokens, averaged by the model
        ("eva02_tiny_patch14_224", "pooled"),  # average of the patch tokens
    ],
)
def test_the_body_gives_the_head_nchw_maps_or_pooled_features(arch, layout):
    """fastai's head pools (N, C, H, W) with C = num_features, or takes (N, num_features) as it is, going by timm's
    own metadata (pretrained_cfg's pool_size, output_fmt), never by the shape."""
    shape, body, model = body_output(arch)
    nf = model.num_features
    assert body.needs_pool == (layout != "pooled")
    assert body.permute == (layout == "NHWC") == (models._output_fmt(model) == "NHWC")
    if layout == "pooled":
        assert shape == (2, nf)
    else:
        assert len(shape) == 4 and shape[1] == nf and shape[2] == shape[3] > 1


def test_fake_tensors_keep_a_module_shared_by_several_blocks_shared():
    """timm's CoaT shares one position-encoding convolution between blocks; to_empty failed on its second visit."""
    from torch._subclasses.fake_tensor import FakeTensor, FakeTensorMode

    def build():
        with torch.device("meta"):
            shared = torch.nn.Conv2d(3, 3, 3, padding=1)
            return torch.nn.Sequential(shared, torch.nn.Sequential(shared, torch.nn.BatchNorm2d(3)))

    with FakeTensorMode(allow_non_fake_inputs=True):
        with pytest.raises(RuntimeError, match="Couldn't swap"):  # why to_fake exists
            build().to_empty(device="cpu")
        model = to_fake(build())
        assert model[0].weight is model[1][0].weight and isinstance(model[0].weight, torch.nn.Parameter)
        assert all(isinstance(t, FakeTensor) and t.device.type == "cpu" for t in model.state_dict().values())
        model(torch.empty(2, 3, 8, 8)).sum().backward()
        assert model[0].weight.grad.shape == (3, 3, 3, 3)


def tiny_swin(arch):
    """A real Swin (or SwinV2) of timm's own class, shrunk to train in a fraction of a second on the CPU."""
    kwargs = dict(img_size=64, embed_dim=16, depths=(1, 1), num_heads=(1, 2), window_size=4, num_classes=0)
    return timm.create_model(arch, pretrained=False, **kwargs)


@pytest.mark.parametrize("arch", ["swin_tiny_patch4_window7_224", "swinv2_tiny_window8_256"])
def test_a_swin_with_the_fastai_head_pools_its_map_as_timm_does_and_learns(arch):
    torch.manual_seed(0)
    model = add_fastai_head(tiny_swin(arch), 10)
    body, timm_model = model[0], model[0].model
    x, y = torch.rand(8, 3, 64, 64), torch.arange(8) % 10
    with torch.no_grad():
        maps = body.eval()(x)
        nhwc = timm_model.forward_features(x)
        # The head's concat pooling sees the channels: its average half is timm's own pooled features
        assert maps.shape == (8, timm_model.num_features, 8, 8)  # 64 / patch 4 / one downsampling
        torch.testing.assert_close(maps.mean((2, 3)), timm_model.forward_head(nhwc, pre_logits=True))
        torch.testing.assert_close(model[1][0](maps).flatten(1), torch.cat([nhwc.amax((1, 2)), nhwc.mean((1, 2))], 1))

    loss = lambda: torch.nn.functional.cross_entropy(model(x), y)  # noqa: E731
    with torch.no_grad():
        before = loss().item()
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    for _ in range(5):
        model.train()
        optimizer.zero_grad()
        loss().backward()
        assert all(p.grad is not None and p.grad.isfinite().all() for p in model.parameters())
        optimizer.step()
    model.eval()
    with torch.no_grad():
        assert loss().item() < before


def test_swin_tiny_with_the_fastai_head_trains_one_real_step():
    """The user's report: swin_tiny_patch4_window7_224 with `head: fastai` failed on its first batch. Random weights,
    real tensors, the model at its own size: one optimizer step changes every parameter that learns."""
    torch.manual_seed(0)
    model = create_model("swin_tiny_patch4_window7_224", 20, head="fastai").train()
    assert model[1][2].num_features == 2 * 768  # concat pooling over the 768 channels, not over a width of 7
    before = [p.detach().clone() for p in model.parameters()]
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    out = model(torch.rand(2, 3, 224, 224))
    assert out.shape == (2, 20)
    torch.nn.functional.cross_entropy(out, torch.tensor([3, 7])).backward()
    optimizer.step()
    changed = [not torch.equal(b, p) for b, p in zip(before, model.parameters())]
    assert sum(changed) == len(changed), f"{len(changed) - sum(changed)} parameters did not change"


def swin_params(params, **model):
    vit = params["models"]["vit"]
    return dict(params, models={"swin": dict(vit, arch="swin_tiny_patch4_window7_224", size=224, **model)})


def test_fastai_28s_body_on_a_swin_is_refused_with_a_clear_message(params, monkeypatch):
    """fastai 2.8's own TimmBody hands Swin's NHWC map to the head unpermuted (what `_output_fmt` ignored would do):
    the check stage's function refuses it in seconds, naming the model and the way out."""
    monkeypatch.setattr(models, "_output_fmt", lambda model: "NCHW")
    with pytest.raises(PaddyError) as refused:
        check_models_train(parse_settings(swin_params(params, targets=["label", "variety"])).models)
    message = str(refused.value)
    assert message.startswith("`models.swin` in params.yaml cannot train: swin_tiny_patch4_window7_224 with ")
    assert "`head: fastai` at size [224, 224] (4 outputs)" in message  # two per target
    assert "running_mean should contain 14 elements not 1536" in message
    assert "Set `head: timm` for this model" in message
    check_models_train(parse_settings(swin_params(params, head="timm")).models)  # which does pass


def test_a_size_too_small_for_the_model_is_refused_whatever_the_head(params):
    params["models"]["resnet"].update(arch="test_convnext", size=[16, 16])
    with pytest.raises(PaddyError, match=r"`models.resnet` in params.yaml cannot train: test_convnext .* \[16, 16\]"
                       r".*Kernel size can't be greater than actual input size.*Set another size"):  # fmt: skip
        check_models_train(parse_settings(params).models)


def test_the_check_stage_refuses_a_model_that_cannot_train_before_writing(tmp_path):
    text = (ROOT / "params.yaml").read_text().replace("arch: test_resnet", "arch: test_convnext")
    text = text.replace("size:            # [height, width] the model sees\n    - 128\n    - 96", "size: 16")
    assert "size: 16" in text
    (tmp_path / "params.yaml").write_text(text)
    out = run_script("stages/check.py", "data/checked", cwd=tmp_path)
    assert out.returncode == 2
    # the size is below test_convnext's total stride (32): check_archs says so before the dry run would fail
    assert "error: `models.resnet.arch` in params.yaml is test_convnext, which shrinks its input 32 times" in out.stderr
    assert "the size asked is [16, 16]" in out.stderr
    assert "Traceback" not in out.stderr
    assert not (tmp_path / "data").exists()


@pytest.mark.parametrize("arch", ["test_resnet", "test_vit", "swin_tiny_patch4_window7_224", "swinv2_tiny_window8_256"])
def test_the_same_state_dict_as_fastais_own_model_which_fails_on_swin(arch):
    """Against fastai 2.8's own create_timm_model (an optional extra: skipped without it): the same module tree,
    parameter names and shapes, so checkpoints load either way; and fastai's model fails on a Swin's first batch."""
    learner = pytest.importorskip("fastai.vision.learner")
    kwargs = dict(img_size=64, embed_dim=16, depths=(1, 1), num_heads=(1, 2), window_size=4) if "swin" in arch else {}
    theirs, _ = learner.create_timm_model(arch, 10, pretrained=False, **kwargs)
    ours = add_fastai_head(timm.create_model(arch, pretrained=False, num_classes=0, **kwargs), 10)
    assert {k: v.shape for k, v in ours.state_dict().items()} == {k: v.shape for k, v in theirs.state_dict().items()}
    ours.load_state_dict(theirs.state_dict())
    x = torch.rand(2, 3, *(kwargs.get("img_size", 160),) * 2)  # the tiny Swins' size, or test_resnet's and test_vit's
    if "swin" in arch:
        with pytest.raises(RuntimeError, match="running_mean should contain"):
            theirs.eval()(x)
        assert ours.eval()(x).shape == (2, 10)
    else:
        torch.testing.assert_close(ours.eval()(x), theirs.eval()(x))
