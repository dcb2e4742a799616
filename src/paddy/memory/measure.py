"""How much GPU memory the training step and the prediction step take: measured on CUDA, estimated without one.

Both run the real steps (paddy.training.step: the optimizer, the augmentation from uint8 items, accumulation of
micro-batches, mixed precision, mixup/CutMix, train.ema's and train.swa_epochs' copies of the weights), `STEPS`
training steps at a micro-batch then the prediction step at each eval batch with the training state still alive, as
in validation.
On CUDA the peaks come from the caching allocator and the driver. Without CUDA the same code runs on fake tensors
(shapes and dtypes, no data) while a tracker adds up the bytes of every live storage, the figure the caching
allocator calls `allocated`; a calibrated allowance adds what tensors do not show (allocator segments and the CUDA
context). See docs/memory.md for the calibration.
"""

import dataclasses
import time
import warnings
import weakref
from dataclasses import dataclass

import torch

from paddy.settings import ModelSettings, TrainSettings
from paddy.training.augment import create_augment
from paddy.training.models import create_model, fake_model, input_normalization
from paddy.training.optim import create_optimizer
from paddy.training.precision import create_scaler
from paddy.training.step import Heads, Step, create_ema, predict_step, train_step
from paddy.training.swa import WeightAverage

GiB = 2**30

# What the fake-tensor count misses, one factor and one constant calibrated on an H100 (torch 2.11, CUDA 13) over
# nine architectures at micro-batch 16-64 (docs/memory.md): the caching allocator reserves whole segments and keeps
# freed blocks, and cuDNN/cuBLAS workspaces are not tensors of the step, so reserved = allocated x 1.15. The process
# also owns a CUDA context (CUDA, cuBLAS and cuDNN kernels) that the driver counts: 0.75 GB there.
RESERVED_FACTOR = 1.15
CONTEXT_GB = 0.75

# The first step allocates the optimizer state after the backward pass; from the second on it is there while the
# activations peak, so one step would understate the steady state.
STEPS = 2


@dataclass(frozen=True)
class Spec:
    """Everything about a model's training and prediction steps that decides their memory: the model's settings
    (arch, head, sizes; `pretrained` loads no weights here, it decides the input normalisation, as in training), the
    training settings it runs with (effective batch, optimizer, augmentation), its outputs and its precision."""

    model: ModelSettings
    train: TrainSettings
    num_classes: int
    precision: str  # bf16 | fp16 | fp32 (resolved, never auto)
    multi_label: bool = False  # one sigmoid and binary cross-entropy per output (a multi-label competition's)


def exercise(model, spec, micro_batch, eval_batches, meter, on_oom=None):
    """The real steps on `model`: STEPS optimizer steps of spec.train.effective_batch samples at `micro_batch`, then the
    prediction step at each of `eval_batches`. meter.start()/meter.read() bracket each part; returns the training
    reading and one per eval batch (on_oom(error) stands in for a prediction step that ran out of memory)."""
    device = next(model.parameters()).device
    optimizer = create_optimizer(model, spec.train.weight_decay, spec.train.lr_mult, spec.train.lr_groups)
    scaler = create_scaler(spec.precision, device)
    augment = create_augment(
        spec.model.size, spec.train.aug, input_normalization(spec.model.arch, spec.model.pretrained)
    )
    generator = torch.Generator(device)
    h, w = spec.model.item_size
    ema = create_ema(model, spec.train)  # train.ema: a second copy of the weights, alive all along
    if spec.train.swa_epochs:  # its average's copy of the weights, alive through the last epochs' steps
        average = WeightAverage(model, 0)
        average.epoch_end(0)
    meter.start()
    items = torch.randint(0, 256, (spec.train.effective_batch, h, w, 3), dtype=torch.uint8, device=device)
    heads = Heads((spec.num_classes,), spec.multi_label)
    if spec.multi_label:
        targets = torch.randint(0, 2, (spec.train.effective_batch, spec.num_classes), dtype=torch.uint8, device=device)
    else:
        targets = torch.randint(0, spec.num_classes, (spec.train.effective_batch,), device=device)
    step = Step.of(spec.train, augment, spec.precision, micro_batch, scaler, heads)
    for i in range(STEPS):
        train_step(model, optimizer, items, targets, generator, step)
        if ema is not None:
            ema.update(model, step=i + 1)
    del items, targets
    train = meter.read()
    evals = []
    for batch in eval_batches:
        meter.start()
        try:
            items = torch.randint(0, 256, (batch, h, w, 3), dtype=torch.uint8, device=device)
            predict_step(model, items, augment, spec.precision, heads=heads)
            del items
            evals.append(meter.read())
        except torch.OutOfMemoryError as e:
            evals.append(on_oom(e))
    return train, evals


# ---------------------------------------------------------------------------------------------------------------------
# Measured on CUDA


class CudaMeter:
    def __init__(self, device):
        self.device = device

    def start(self):
        torch.cuda.synchronize(self.device)
        torch.cuda.reset_peak_memory_stats(self.device)

    def read(self):
        torch.cuda.synchronize(self.device)
        free, total = torch.cuda.mem_get_info(self.device)
        allocated = torch.cuda.max_memory_allocated(self.device) / GiB
        reserved = torch.cuda.max_memory_reserved(self.device) / GiB
        # The driver's figure for this process: its context plus what the caching allocator holds, which has not
        # shrunk since the peak. (On a GPU shared with other processes this includes them.)
        return _row(allocated, reserved, (total - free) / GiB)


def measure(spec, micro_batch, device, eval_batches=()):
    """Peaks (GB) of the real steps on CUDA: (training row, eval rows). Raises torch.OutOfMemoryError in training."""
    start = time.perf_counter()
    with torch.device(device):  # initialising on the GPU is faster than on the CPU and ends in the same memory
        model = create_model(spec.model.arch, spec.num_classes, False, spec.model.head, spec.model.size)
    model = model.to(memory_format=torch.channels_last).train()
    train, evals = exercise(model, spec, micro_batch, eval_batches, CudaMeter(device), on_oom=oom_row)
    train["seconds"] = round(time.perf_counter() - start, 2)
    return train, evals


def oom_row(error):
    return {"oom": True, "error": str(error).splitlines()[0][:200]}


# ---------------------------------------------------------------------------------------------------------------------
# Estimated without a GPU


class _StorageTracker(torch.utils._python_dispatch.TorchDispatchMode):
    """Adds up the bytes of every live tensor storage, the way the CUDA caching allocator counts `allocated`."""

    def __init__(self):
        super().__init__()
        from torch.utils.weak import WeakIdKeyDictionary

        self.live = WeakIdKeyDictionary()
        self.current = 0
        self.peak = 0

    def track(self, tensor):
        storage = tensor.untyped_storage()
        if storage in self.live:  # a view or an in-place result: no new memory
            return
        nbytes = -(-storage.nbytes() // 512) * 512  # the allocator rounds every block up to 512 bytes
        self.live[storage] = nbytes
        self.current += nbytes
        self.peak = max(self.peak, self.current)
        weakref.finalize(storage, self._release, nbytes)

    def _release(self, nbytes):
        self.current -= nbytes

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in torch.utils._pytree.tree_leaves(out):
            if isinstance(t, torch.Tensor):
                self.track(t)
        return out

    def start(self):
        self.peak = self.current

    def read(self):
        allocated = self.peak / GiB
        reserved = allocated * RESERVED_FACTOR
        return _row(allocated, reserved, reserved + CONTEXT_GB)


def estimate(spec, micro_batch, eval_batches=()):
    """The peaks a CUDA card would show for `measure`, computed on fake tensors: no GPU, no weights, seconds.

    The step is the CUDA one: channels_last, mixed precision (bf16 stands in for fp16, same bytes), the fused AdamW.
    CPU autocast on fake CPU tensors stands in for CUDA autocast, which refuses to start without a GPU; both cast
    the same matmuls and convolutions down and keep reductions and norms in fp32.
    """
    start = time.perf_counter()
    spec = dataclasses.replace(spec, precision="fp32" if spec.precision == "fp32" else "bf16")
    tracker = _StorageTracker()
    with fake_model(spec.model.arch, spec.num_classes, spec.model.head, torch.channels_last, spec.model.size) as model:
        for t in [*model.parameters(), *model.buffers()]:
            tracker.track(t)
        with tracker, warnings.catch_warnings():
            # train.ema's copy of the fake weights (copy.deepcopy) asks for their data pointer, which is harmless here
            warnings.filterwarnings("ignore", message="Accessing the data pointer of FakeTensor")
            train, evals = exercise(model, spec, micro_batch, eval_batches, tracker)
    train["seconds"] = round(time.perf_counter() - start, 2)
    return train, evals


def _row(allocated, reserved, total):
    return {
        "oom": False,
        "allocated_gb": round(allocated, 3),
        "reserved_gb": round(reserved, 3),
        "total_gb": round(total, 3),
    }
