"""Stand-ins for the training loop's parts."""


class CaptureGradients:
    """Stands in for the optimizer: keeps the gradients the step would apply (None for a frozen parameter)."""

    def __init__(self, model):
        self.model, self.grads = model, None

    def step(self):
        self.grads = [None if p.grad is None else p.grad.detach().clone() for p in self.model.parameters()]

    def zero_grad(self, set_to_none=True):
        self.model.zero_grad(set_to_none=set_to_none)


def train(settings, work, out, batches=(8, 16), name="resnet", device=None, **hooks):
    """train_model of settings.models[name] on `work`'s prepared data and split table (prepared_work's) into `out`
    on the CPU; hooks: on_epoch, on_step (set on the run) and resume_dir."""
    import torch

    from paddy.training.folds import train_model
    from paddy.training.run import create_run

    run = create_run(settings, name, device or torch.device("cpu"), work / "prepared", work / "split.csv", batches)
    run.on_epoch, run.on_step = hooks.pop("on_epoch", None), hooks.pop("on_step", None)
    return train_model(run, out, **hooks)
