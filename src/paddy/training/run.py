"""One model's run: what training it needs (its settings, device, precision, vocabulary and target sizes, batches and
data), built once by create_run and passed whole, the way timm's train.py passes its `args`. Training
(paddy.training.folds, loop, step), the learning-rate finder, the memory profile (which chooses its batches where
params.yaml says auto: paddy.memory.profile.resolve_batches), TTA and the benchmarks all take it."""

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass

import torch

from paddy.data.prepare import read_targets
from paddy.errors import PaddyError
from paddy.metrics import Metric
from paddy.settings import ModelSettings, Settings
from paddy.training import distributed
from paddy.training.checkpoints import checkpoint_normalization, model_settings, read_meta
from paddy.training.model_data import ModelData, create_model_data
from paddy.training.precision import resolve_precision
from paddy.training.step import Heads


@dataclass
class TrainingRun:
    """Everything fixed about training one model (settings.models[name]) on this device."""

    settings: Settings
    name: str
    device: torch.device
    precision: str  # resolved for the device: bf16 | fp16 | fp32
    vocab: dict  # target -> its classes (data/prepared/targets.json)
    micro_batch: int | str  # samples per forward/backward; "auto" only before the profile chose (its own stage)
    eval_batch: int | str  # validation and TTA batch, likewise
    data: ModelData | None = None  # the split table's items, targets, augmentation and loaders
    on_epoch: Callable | None = None  # on_epoch(split, epoch, metrics) after every epoch
    on_step: Callable | None = None  # on_step(split, epoch, step, model, optimizer) after every optimizer step

    @property
    def model(self) -> ModelSettings:
        return self.settings.model(self.name)

    @property
    def train(self):
        return self.settings.train

    @property
    def sizes(self):
        """Outputs per target, in the model's target order (one target: its classes)."""
        return tuple(len(self.vocab[t]) for t in self.model.targets)

    @property
    def heads(self):
        """What the model's outputs are: its targets' sizes, and whether the label is a multi-label set of tags."""
        return Heads(self.sizes, self.settings.competition.multi_label)

    @property
    def metric(self):
        """The competition's metric over the label's classes, which validation reports beside the loss."""
        return Metric.of(self.settings.competition, self.vocab["label"])


def create_run(settings, name, device, prepared_dir, split_csv=None, batches=None):
    """The run of settings.models[name] on `device` over the prepared competition at `prepared_dir`.

    batches: (micro_batch, eval_batch); None keeps params.yaml's values, auto included, for the memory profile to
    choose (paddy.memory.profile.resolve_batches). split_csv: the split table whose data the run trains on; without
    it the run has no data (the profile needs none)."""
    model = settings.model(name)  # a clear error for a model params.yaml lacks
    vocab = read_targets(prepared_dir)
    precision = resolve_precision(settings.train.precision, device)
    run = TrainingRun(settings, name, device, precision, vocab, model.micro_batch, settings.train.eval_batch)
    if batches is not None:
        run.micro_batch, run.eval_batch = batches
    if split_csv is not None:
        train = settings.train
        processes = distributed.local_world_size()  # DDP's ranks on this machine share its loader workers
        multi_label = settings.competition.multi_label
        run.data = create_model_data(model, train, prepared_dir, split_csv, device, processes, multi_label=multi_label)
    return run


def checkpoint_run(settings, ckpt_dir, device, prepared_dir=None, split_csv=None):
    """The run of a trained model, from its checkpoint (paddy.training.checkpoints): the model settings, classes,
    batches and input normalisation it was trained with; params.yaml's precision, augmentation and TTA. With
    split_csv, its data over that split table (TTA of the test set and of each split's validation rows)."""
    meta = read_meta(ckpt_dir)
    if meta.get("multi_label", False) != settings.competition.multi_label:
        trained = "multi-label (form tags: a sigmoid per tag)" if meta.get("multi_label") else "single-label (softmax)"
        raise PaddyError(
            f"{ckpt_dir} holds a {trained} model, but `competition.form` in params.yaml is now "
            f"{settings.competition.form}: its outputs would be read as the other kind. Retrain it (`dvc repro`), or "
            "set competition.form back to what it was trained with."
        )
    model = model_settings(meta)
    settings = dataclasses.replace(settings, models={model.name: model})
    precision = resolve_precision(settings.train.precision, device)
    vocab = dict(meta["targets"])
    run = TrainingRun(settings, model.name, device, precision, vocab, meta["micro_batch"], meta["eval_batch"])
    if split_csv is not None:
        run.data = create_model_data(
            model,
            settings.train,
            prepared_dir,
            split_csv,
            device,
            1,
            checkpoint_normalization(meta),
            settings.competition.multi_label,
        )
    return run
