"""Stand-ins for the training loop's parts."""


class CaptureGradients:
    """Stands in for the optimizer: keeps the gradients the step would apply (None for a frozen parameter)."""

    def __init__(self, model):
        self.model, self.grads = model, None

    def step(self):
        self.grads = [None if p.grad is None else p.grad.detach().clone() for p in self.model.parameters()]

    def zero_grad(self, set_to_none=True):
        self.model.zero_grad(set_to_none=set_to_none)
