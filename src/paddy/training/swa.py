"""Weight averaging (train.swa_epochs; Izmailov et al. 2018's SWA, torch.optim.swa_utils): the weights at the end of
each of the last N epochs averaged into the model's final weights, BatchNorm's statistics then recomputed for them
over the training images without augmentation (the average of N sets of weights has statistics of its own)."""

import torch
from torch.optim.swa_utils import AveragedModel, update_bn

from paddy.training.precision import autocast
from paddy.training.step import stream_seeds


class WeightAverage:
    """The running average of `model`'s parameters at the ends of epochs `first` and after (counted from the run's
    first epoch, frozen ones included). Its AveragedModel (a copy of the model, made at the first epoch averaged) is
    never called: only its parameters are read, so a compiled model's copy, which would call the original, is safe."""

    def __init__(self, model, first):
        self.model, self.first, self.averaged = model, first, None

    @property
    def started(self):
        return self.averaged is not None

    def _start(self):
        if self.averaged is None:
            self.averaged = AveragedModel(self.model)

    def state_dict(self):
        return self.averaged.state_dict()

    def load_state_dict(self, state):
        self._start()
        self.averaged.load_state_dict(state)

    def epoch_end(self, epoch):
        """Add the model's weights at the end of `epoch` to the average, from epoch `first` on."""
        if epoch >= self.first:
            self._start()
            self.averaged.update_parameters(self.model)

    def apply(self, loader, augment, fit, progress):
        """Put the average into the model and recompute BatchNorm's statistics over `loader`'s images with the plain
        transform, micro-batch by micro-batch in the order of the last epoch, under the run's autocast; dropout (in
        training mode, as BatchNorm is) draws from a seed of its own (the run's seed, the epoch, the step after its
        last), so a resumed run gets the same statistics."""
        with torch.no_grad():
            for mine, average in zip(self.model.parameters(), self.averaged.module.parameters()):
                mine.copy_(average)
        epoch, micro_batch = progress.epoch, progress.micro_batch  # the last epoch's, before it is counted done
        device = next(self.model.parameters()).device
        loader.batch_sampler.set_epoch(epoch)
        torch.manual_seed(stream_seeds(fit.seed, epoch, len(loader))[1])

        def images():
            for items, _ in loader:
                items = items.to(device, non_blocking=True)
                for start in range(0, len(items), micro_batch):  # the batches BatchNorm saw in training
                    yield augment.plain(items[start : start + micro_batch])

        with autocast(device, fit.run.precision):
            update_bn(images(), self.model)
