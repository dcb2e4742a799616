"""torch.compile, decided in one place (train.compile), and the clock that tells how long compiling took."""

import os
import time

import torch


def compiles(setting, device):
    """train.compile: auto compiles on CUDA only. On a CPU the tiny models of a test run train in seconds and
    inductor's code generation takes minutes, so it never pays back there; on a GPU a run of large models does."""
    return setting is True or (setting == "auto" and device.type == "cuda")


def maybe_compile(model, setting, device, backend=None):
    """torch.compile the model in place when `setting` (train.compile) says so; returns a CompileClock to time the
    compilation with, or None when the model stays eager.

    In place (nn.Module.compile): the module, its parameters and state_dict keys stay the same, so the optimizer's
    groups, freezing and checkpoints work unchanged. backend: inductor, or $PADDY_COMPILE_BACKEND (aot_eager: the
    same graph capture without code generation, what CPU tests use, since inductor's C++ build is slow there).
    """
    if not compiles(setting, device):
        return None
    model.compile(backend=backend or os.environ.get("PADDY_COMPILE_BACKEND", "inductor"))
    return CompileClock(device)


class CompileClock:
    """The compile time of a run: its first optimizer step less a steady one, from the run's first few steps.

    tick() at the start of every step; only the first `steps` + 1 ticks wait for the device (the steps after run
    without a sync, as always). A step's time includes fetching the next batch, which is the same for every step.
    """

    def __init__(self, device, steps=3):
        self.device, self.steps, self.times = device, steps, []

    def tick(self):
        if len(self.times) > self.steps:
            return
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        self.times.append(time.perf_counter())
        if len(self.times) == self.steps + 1:
            print(f"torch.compile: first step {self.first_step_s:.1f} s, steady {self.steady_step_s:.3f} s, "
                  f"so about {self.compile_s:.1f} s compiling", flush=True)  # fmt: skip

    @property
    def first_step_s(self):
        return self.times[1] - self.times[0] if len(self.times) > 1 else None

    @property
    def steady_step_s(self):
        steps = [b - a for a, b in zip(self.times[1:], self.times[2:])]
        return min(steps) if steps else None

    @property
    def compile_s(self):
        if self.steady_step_s is None:
            return None
        return max(self.first_step_s - self.steady_step_s, 0.0)
