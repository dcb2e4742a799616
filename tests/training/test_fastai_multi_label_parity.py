"""Parity with fastai's multi-label learner (a DataBlock with MultiCategoryBlock, vision_learner, its
BCEWithLogitsLossFlat and accuracy_multi), compared by the tensors: what the model receives, what the loss and the
optimizer do with it, and what validation reports, fastai's own code on one side, the pipeline's on the other.

- The loss: target_loss of the multi-label heads is BCEWithLogitsLossFlat, value and gradient, in fp32 and under
  CPU autocast (bf16).
- The targets: MultiCategoryBlock's multi-hot vectors are tag_matrix's, in the same tag order (tag_classes); the
  one deliberate difference is the order of tags that are all integers (iMet's), numeric here, as text in fastai.
- The model's input: fastai's loaders (ImageBlock, Resize, aug_transforms) over the prepared images give the same
  pixels and targets as create_model_data(multi_label=True)'s loaders and the plain transform.
- The optimizer: vision_learner + GradientAccumulation + fine_tune against the pipeline's fine_tune, single- and
  multi-label, from the same weights on the same batches: the same weights after every optimizer step.
- Validation: validate_tags' valid_loss and valid_acc are fastai's valid loss and accuracy_multi (thresh 0.5,
  sigmoid) on the same predictions.

Skipped without fastai (`pip install -e ".[fastai]"`). tests/training/test_multi_label.py checks the loss against
torch's and trains a tiny multi-label model without it.
"""

# fastai, and what needs it, is imported after the skip that applies when it is not installed
# ruff: noqa: E402
import types

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

pytest.importorskip("fastai")

import fastai.callback.schedule  # noqa: F401 (adds Learner.fine_tune)
from fastai.callback.core import Callback
from fastai.callback.training import GradientAccumulation
from fastai.data.block import CategoryBlock, DataBlock, MultiCategoryBlock, TransformBlock
from fastai.data.core import DataLoaders
from fastai.data.load import DataLoader
from fastai.data.transforms import ColReader, ColSplitter, IntToFloatTensor
from fastai.learner import Learner
from fastai.losses import BCEWithLogitsLossFlat, CrossEntropyLossFlat
from fastai.metrics import accuracy, accuracy_multi
from fastai.torch_core import TensorImage, TensorMultiCategory
from fastai.vision.augment import Resize, aug_transforms
from fastai.vision.data import ImageBlock
from fastai.vision.learner import vision_learner
from helpers.data import make_tags_competition, prepared_tags_work, tags_settings
from helpers.settings import settings_with, shrunk_params

from paddy.data.competition import tag_classes
from paddy.data.loaders import ItemDataset, create_loader
from paddy.metrics import Metric
from paddy.settings import ModelSettings
from paddy.tags import tag_matrix
from paddy.training.augment import create_augment
from paddy.training.loop import fine_tune, validate_tags
from paddy.training.model_data import create_model_data
from paddy.training.models import create_model
from paddy.training.run import TrainingRun
from paddy.training.step import Heads, stream_seeds, target_loss

CPU = torch.device("cpu")
# Planet's tags (some of its 17), an image with none among them
PLANET = [
    "agriculture clear primary water", "clear primary", "haze primary", "partly_cloudy primary road", "cloudy", "",
    "clear primary road habitation", "blow_down clear primary", "agriculture clear cultivation primary", "haze",
]  # fmt: skip
IMET = ["13 147 1059", "2 10 813", "1 2", "1092", "10 100 147", "2"]  # iMet's tags are attribute ids


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Tiny tensors: one thread runs them several times faster than two on a busy 2-core machine."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


# ---------------------------------------------------------------------------------------------------------------------
# The loss and the targets


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_the_loss_is_fastais_bce_with_logits_loss_flat(precision):
    """target_loss(logits, uint8 tags, multi-label heads) against BCEWithLogitsLossFlat(logits, the float multi-hot
    targets fastai's OneHotEncode gives), value and the logits' gradient: equal to the last bit, in fp32 and under
    CPU autocast (bf16 logits; both compute the loss in float32). Measured: 0 difference."""
    g = torch.Generator().manual_seed(0)
    layer = nn.Linear(32, 17)
    x, tags = torch.randn(64, 32, generator=g) * 3, (torch.rand(64, 17, generator=g) < 0.3).to(torch.uint8)
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16"):
        logits = layer(x)
        ours = target_loss(logits, tags, Heads((17,), multi_label=True))
        theirs = BCEWithLogitsLossFlat()(logits, TensorMultiCategory(tags.float()))
    assert ours.item() == theirs.item()
    (grad_ours,) = torch.autograd.grad(ours, logits, retain_graph=True)
    (grad_theirs,) = torch.autograd.grad(theirs, logits)
    assert torch.equal(grad_ours, grad_theirs.as_subclass(torch.Tensor))


def fastai_targets(labels):
    """fastai's vocab and multi-hot targets of space-separated tag strings: MultiCategoryBlock with get_y splitting
    the string (ColReader(label_delim=' '), as fastai's Planet tutorial does)."""
    df = pd.DataFrame({"tags": labels})
    block = DataBlock(
        blocks=(TransformBlock, MultiCategoryBlock),
        get_x=ColReader("tags"),
        get_y=ColReader("tags", label_delim=" "),
        splitter=lambda items: (list(range(len(items))), []),
    )
    dsets = block.datasets(df)
    return list(dsets.vocab), torch.stack([dsets.train[i][1] for i in range(len(labels))])


def test_the_targets_are_fastais_multi_hot_vectors_in_its_tag_order():
    """Planet's tags: fastai's vocab is tag_classes', and each image's target tag_matrix's row (an image with no tag:
    zeros on both sides), as float the loss reads it."""
    vocab, theirs = fastai_targets(PLANET)
    classes = tag_classes(PLANET)
    assert vocab == classes
    assert theirs.dtype == torch.float32
    assert torch.equal(torch.from_numpy(tag_matrix(PLANET, classes)).float(), theirs)
    assert theirs[PLANET.index("")].sum() == 0


def test_integer_tags_are_in_numeric_order_where_fastai_sorts_them_as_text():
    """Deliberate: tags that are all integers (iMet's attribute ids) keep their numeric order (class_order's rule,
    which keeps ordinal grades in order), where fastai sorts them as text (1, 10, 100, ...). Each image's set of tags
    is the same; only the columns are permuted, which changes nothing a model learns (the head's output units are
    initialised alike, and the tags are written back by name)."""
    vocab, theirs = fastai_targets(IMET)
    classes = tag_classes(IMET)
    assert classes == sorted(vocab, key=int) and vocab == sorted(classes) and vocab != classes
    ours = torch.from_numpy(tag_matrix(IMET, classes)).float()
    assert torch.equal(ours[:, [classes.index(t) for t in vocab]], theirs)


# ---------------------------------------------------------------------------------------------------------------------
# The model's input: fastai's loaders against create_model_data's


@pytest.fixture(scope="module")
def tags_work(tmp_path_factory):
    """A prepared tags competition (64 images of 32 x 32, one tag-balanced bag) and its prepared index."""
    work = tmp_path_factory.mktemp("tags")
    make_tags_competition(work / "raw", n_train=64, seed=1)
    return work, prepared_tags_work(shrunk_params(), work / "raw", work)


def test_the_model_receives_fastais_pixels_and_targets(tags_work):
    """The seed's DataBlock for tags, ImageBlock with Resize(item size, squish) and aug_transforms(size,
    min_scale=0.75), MultiCategoryBlock with the tags split on spaces, over the prepared images; against
    create_model_data(multi_label=True) over the same split table. Validation batches: fastai's pixels are the
    pipeline's plain transform of its items to 1e-5 (item 32 x 32, size 24 x 24: the centre crop, resized) and its
    targets the pipeline's, exactly, in the same order; training batches (unshuffled, to line them up): the same
    targets. The training augmentation's pixels carry no label and are test_fastai_pixel_parity.py's. Batches of 8,
    a short last one. Measured: max pixel difference 3.7e-7, targets identical."""
    work, index = tags_work
    model = ModelSettings("resnet", "test_resnet", False, "fastai", ("label",), (32, 32), "squish", (24, 24), 16, 1)
    train = settings_with(shrunk_params()).train
    data = create_model_data(model, train, work / "prepared", work / "split.csv", CPU, multi_label=True)
    train_rows, valid_rows = data.rows("v0")
    assert data.targets.dtype == np.uint8 and data.targets.shape == (len(data.table), len(data.vocab["label"]))

    paths = index.set_index("image_id").path
    df = data.table.assign(path=[str(work / "prepared" / paths[i]) for i in data.table.image_id])
    df["is_valid"] = df.v0 == 1
    block = DataBlock(
        blocks=(ImageBlock, MultiCategoryBlock),
        get_x=ColReader("path"),
        get_y=ColReader("label", label_delim=" "),
        splitter=ColSplitter("is_valid"),
        item_tfms=Resize(model.item_size, method="squish"),
        batch_tfms=aug_transforms(size=model.size, min_scale=0.75),
    )
    dls = block.dataloaders(df, bs=8, shuffle=False, drop_last=False, device=CPU, num_workers=0)
    assert list(dls.vocab) == data.vocab["label"]

    worst = 0.0
    ours = data.loader(valid_rows, 8)
    for (x, y), (items, targets) in zip(dls.valid, ours, strict=True):
        x = x.as_subclass(torch.Tensor)
        worst = max(worst, (data.augment.plain(items) - x).abs().max().item())
        assert torch.equal(y.as_subclass(torch.Tensor), targets.float())
    print(f"\nvalidation pixels: max difference {worst:.2e} over {len(valid_rows)} images")
    assert worst < 1e-5
    fastai_train = torch.cat([y.as_subclass(torch.Tensor) for _, y in dls.train])
    ours_train = torch.cat([targets for _, targets in data.loader(train_rows, 8)])
    assert torch.equal(fastai_train, ours_train.float())


# ---------------------------------------------------------------------------------------------------------------------
# The optimizer: fastai's fine_tune against the pipeline's, step by step

# The recipe of benchmarks/fastai_parity.py (the seed's): one frozen epoch, then the whole model with the body at
# lr/2/100; 64 training images in steps of 32 as 2 micro-batches of 16 (GradientAccumulation): 6 optimizer steps.
EPOCHS, FROZEN, LR, LR_MULT, EFFECTIVE, MICRO, SEED = 2, 1, 0.01, 100, 32, 16, 42
N_TRAIN, N_VALID, SIZE = 64, 24, (32, 32)
# Measured over the 6 steps: 3.1e-6 (tags), 5.8e-6 (label). What it catches, measured: weight decay on norm layers
# and biases 4.3e-4, the loss doubled (a wrong accumulation scale) 3.6e-3, BCE summed over tags 1.7e-2.
WEIGHT_TOLERANCE = 2e-5


class NoAugment:
    """fastai's IntToFloatTensor, as the pipeline's augmentation: both sides feed the model the same tensor. The
    pipeline's BatchAugment with every transform off comes within 4e-6 of it (a resampling) and hands over a
    channels_last tensor, whose BatchNorm rounds differently; Adam turns such 1e-6 differences of near-zero
    gradients into 1e-5 of the weights, which would hide what this test looks for."""

    def draw(self, items, generator):
        return {}

    def apply(self, items, draws):
        return items.permute(0, 3, 1, 2).float().contiguous() / 255

    def plain(self, items):
        return self.apply(items, None)


class StepSeeds(Callback):
    """fastai draws its dropout masks from torch's global generator, which the pipeline seeds before every optimizer
    step (paddy.training.step.seed_step, from (seed, epoch, step)): seeded the same way here, fastai's head draws the
    same masks. Also keeps the weights after every optimizer step and each epoch's validation figures."""

    order, run_valid = 50, False

    def __init__(self):
        self.epoch_seen, self.weights, self.validation = -1, [], []

    def before_epoch(self):
        self.epoch_seen, self.batch = self.epoch_seen + 1, 0  # the pipeline counts epochs across fine_tune's phases

    def before_batch(self):
        per_step = EFFECTIVE // MICRO
        if self.batch % per_step == 0:  # a step's first micro-batch
            torch.manual_seed(stream_seeds(SEED, self.epoch_seen, self.batch // per_step)[1])
        self.batch += 1

    def after_step(self):  # GradientAccumulation cancels the micro-batches that do not step
        self.weights.append({k: v.detach().clone() for k, v in self.learn.model.state_dict().items()})

    def after_fit(self):
        self.validation += [values[1:3] for values in self.learn.recorder.values]  # valid loss, the metric


def learner_parity_data(multi_label):
    """uint8 items (N, 32, 32, 3) and their labels: tag strings (Planet's), or one class each."""
    rng = np.random.default_rng(0)
    n = N_TRAIN + N_VALID
    items = torch.from_numpy(rng.integers(0, 256, (n, *SIZE, 3), dtype=np.uint8))
    tags = ["clear", "haze", "primary", "road", "water"]
    if multi_label:
        labels = [" ".join(t for t in tags if rng.random() < 0.4) for _ in range(n)]
    else:
        labels = [str(rng.choice(tags)) for _ in range(n)]
    return items, labels


def fastai_fine_tune(items, labels, multi_label):
    """The seed notebook's training on these items, with fastai's IntToFloatTensor as the only batch transform;
    the learner (its weights at the start kept) and the StepSeeds record."""
    chw = items.permute(0, 3, 1, 2).contiguous()
    df = pd.DataFrame({"i": range(len(items)), "label": labels, "is_valid": np.arange(len(items)) >= N_TRAIN})
    y = (
        (MultiCategoryBlock, ColReader("label", label_delim=" "))
        if multi_label
        else (CategoryBlock, ColReader("label"))
    )
    block = DataBlock(
        blocks=(TransformBlock(batch_tfms=IntToFloatTensor), y[0]),
        get_x=lambda row: TensorImage(chw[row.i]),
        get_y=y[1],
        splitter=ColSplitter("is_valid"),
    )
    # unshuffled, to give the pipeline's loader the same batches; drop_last as fastai's training loader
    dls = block.dataloaders(df, bs=MICRO, val_bs=16, shuffle=False, drop_last=True, device=CPU, num_workers=0)
    record = StepSeeds()
    torch.manual_seed(0)  # the random initial weights, which the pipeline's model then copies
    metric = accuracy_multi if multi_label else accuracy
    cbs = [GradientAccumulation(EFFECTIVE), record]
    learn = vision_learner(dls, "test_resnet", pretrained=False, metrics=metric, cbs=cbs)
    assert isinstance(learn.loss_func, BCEWithLogitsLossFlat if multi_label else CrossEntropyLossFlat)
    start = {k: v.clone() for k, v in learn.model.state_dict().items()}
    with learn.no_bar(), learn.no_logging():
        learn.fine_tune(EPOCHS, LR, freeze_epochs=FROZEN, lr_mult=LR_MULT)
    return list(dls.vocab), start, record


def pipeline_fine_tune(items, targets, classes, start, multi_label, tmp_path):
    """The pipeline's fine_tune (paddy.training.loop: its schedule, freezing, optimizer and train_step, and validate)
    of create_model's model from fastai's initial weights, on the same batches; the weights after every step and
    each epoch's figures."""
    recipe = {
        "seed": SEED, "train.epochs": EPOCHS, "train.frozen_epochs": FROZEN, "train.lr": LR,
        "train.lr_mult": LR_MULT, "train.effective_batch": EFFECTIVE,
    }  # fmt: skip
    settings = (tags_settings if multi_label else settings_with)(shrunk_params(), recipe)
    data = types.SimpleNamespace(augment=NoAugment())  # what fine_tune reads of the run's data
    run = TrainingRun(settings, "resnet", CPU, "fp32", {"label": classes}, MICRO, 16, data=data)
    assert run.heads == Heads((len(classes),), multi_label)
    weights = []
    run.on_step = lambda split, epoch, step, model, optimizer: weights.append(
        {k: v.detach().clone() for k, v in model.state_dict().items()}
    )
    model = create_model("test_resnet", len(classes), head="fastai")
    model.load_state_dict(start)
    np.save(tmp_path / "items.npy", items.numpy())
    train_rows, valid_rows = np.arange(N_TRAIN), np.arange(N_TRAIN, len(items))
    loaders = [
        create_loader(ItemDataset(str(tmp_path / "items.npy"), rows, targets[rows]), size, CPU, drop_last=drop)
        for rows, size, drop in ((train_rows, EFFECTIVE, True), (valid_rows, 16, False))
    ]
    progress = fine_tune(run, model, loaders, 0)
    return weights, [(m["valid_loss"], m["valid_acc"]) for m in progress.history]


@pytest.mark.parametrize("multi_label", [True, False], ids=["tags", "label"])
def test_fine_tune_steps_are_fastais(multi_label, tmp_path):
    """vision_learner(test_resnet) + GradientAccumulation + fine_tune(2, 0.01, freeze_epochs=1, lr_mult=100), the
    multi-label learner (MultiCategoryBlock: BCEWithLogitsLossFlat, accuracy_multi) and the single-label one for
    reference, against the pipeline's fine_tune with the same heads, from the same weights, on the same batches and
    dropout masks: the weights and BatchNorm statistics after each of the 6 optimizer steps (frozen and unfrozen,
    Adam's state cleared at the unfreeze) agree to 2e-5 (fastai's Adam and torch's fused AdamW round differently;
    the gradients of the first step are identical), while they move by up to 3; each epoch's valid loss and
    accuracy (accuracy_multi / accuracy) agree to 1e-5 (measured: under 4e-7 relative)."""
    items, labels = learner_parity_data(multi_label)
    vocab, start, record = fastai_fine_tune(items, labels, multi_label)
    if multi_label:
        classes, targets = tag_classes(labels), tag_matrix(labels, tag_classes(labels))
    else:
        classes = sorted(set(labels))
        targets = np.array([classes.index(label) for label in labels])
    assert vocab == classes
    weights, validation = pipeline_fine_tune(items, targets, classes, start, multi_label, tmp_path)

    assert len(weights) == len(record.weights) == 6
    lines, worst = [], 0.0
    for step, (ours, theirs) in enumerate(zip(weights, record.weights)):
        assert ours.keys() == theirs.keys()
        floats = [k for k in ours if ours[k].is_floating_point()]  # weights and BatchNorm's statistics
        assert all(torch.equal(ours[k], theirs[k]) for k in ours if k not in floats)  # its batch counts
        diff = max((ours[k] - theirs[k]).abs().max().item() for k in floats)
        moved = max((theirs[k] - start[k]).abs().max().item() for k in floats)
        worst = max(worst, diff)
        lines.append(f"step {step + 1}: max weight difference {diff:.2e}, fastai's weights moved by up to {moved:.3f}")
    print("\n" + "\n".join(lines))
    assert worst <= WEIGHT_TOLERANCE, "\n".join(lines)
    assert moved > 0.5  # the steps above did train
    assert len(validation) == len(record.validation) == EPOCHS + FROZEN
    for (loss, acc), (their_loss, their_acc) in zip(validation, record.validation):
        assert loss == pytest.approx(their_loss, rel=1e-5) and acc == pytest.approx(their_acc, abs=1e-6)


# ---------------------------------------------------------------------------------------------------------------------
# Validation: validate_tags against fastai's valid loss and accuracy_multi on the same predictions


class Linear(nn.Module):
    """A model whose logits spread over +-`scale`: a linear map of the pixels."""

    def __init__(self, scale, tags, seed=0):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.weight = nn.Parameter(torch.randn(tags, 3 * 8 * 8, generator=g) * scale / 14)
        self.logits = []

    def forward(self, x):
        out = (x.flatten(1) - 0.5) @ self.weight.T
        self.logits.append(out.detach())
        return out


class Given(nn.Module):
    """Hands its input on: fastai's learner over predictions already made (a parameter, for the device it reads)."""

    def __init__(self):
        super().__init__()
        self.unused = nn.Parameter(torch.zeros(1))

    def forward(self, x):
        return x


def fastai_validate(logits, targets, bs):
    """fastai's Learner.validate over the same predictions in batches of bs: its valid loss (BCEWithLogitsLossFlat,
    each batch's mean weighted by its size) and accuracy_multi(thresh=0.5, sigmoid=True), fastai's defaults."""
    pairs = [(p, TensorMultiCategory(t.float())) for p, t in zip(logits, targets)]
    dl = DataLoader(pairs, bs=bs)
    learn = Learner(DataLoaders(dl, dl), Given(), loss_func=BCEWithLogitsLossFlat(), metrics=accuracy_multi)
    with learn.no_bar(), learn.no_logging():
        return learn.validate(dl=dl)


@pytest.mark.parametrize("scale", [8.0, 30.0])
def test_validation_is_fastais_valid_loss_and_accuracy_multi(scale, tmp_path):
    """validate_tags (batches of 32 over 70 images: a short last one) against fastai's Learner.validate on the logits
    the model gave it: valid_acc is accuracy_multi, valid_loss fastai's valid loss, for logits within +-8 and for a
    confident model's, within +-30. Before validate_tags read the logits it computed the loss from the float32
    probabilities, where one within 6e-8 of 1 rounds to 1: a wrong tag then scored at most 15.9, and at logits to
    +-30 valid_loss was 3.5 % under fastai's (2e-7 at +-8). Measured now: equal to the last bit in both cases."""
    rng = np.random.default_rng(1)
    n, tags = 70, 17
    items = rng.integers(0, 256, (n, 8, 8, 3), dtype=np.uint8)
    targets = (rng.random((n, tags)) < 0.3).astype(np.uint8)
    np.save(tmp_path / "items.npy", items)
    loader = create_loader(ItemDataset(str(tmp_path / "items.npy"), np.arange(n), targets), 32, CPU)
    model = Linear(scale, tags)
    classes = [f"tag{k:02d}" for k in range(tags)]
    settings = tags_settings(shrunk_params())
    metric = Metric.of(settings.competition, classes, settings.tags)
    assert metric.threshold == 0.5
    ours = validate_tags(model, loader, create_augment((8, 8)), "fp32", Heads((tags,), True), metric)
    logits = torch.cat(model.logits)
    assert len(model.logits) == 3 and scale * 0.7 < logits.abs().max() < scale * 1.3
    their_loss, their_acc = fastai_validate(logits, torch.from_numpy(targets), 32)
    loss, acc = ours["valid_loss"], ours["valid_acc"]
    print(f"\nlogits to {logits.abs().max():.1f}: valid_loss {loss:.7f} fastai {their_loss:.7f} "
          f"({loss / their_loss - 1:+.1e}), valid_acc {acc:.6f} fastai {their_acc:.6f}")  # fmt: skip
    assert acc == pytest.approx(their_acc, abs=1e-7)
    assert loss == pytest.approx(their_loss, rel=1e-6)
