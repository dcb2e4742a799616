"""Device and precision: CUDA gets mixed precision and channels_last by default, the CPU fp32 unless
asked for bf16 or fp16 (torch's CPU autocast and grad scaler: mixed precision tested without a GPU)."""

import contextlib

import torch
from torch.utils._python_dispatch import TorchDispatchMode

from paddy.errors import PaddyError


def device_name(device):
    """What a memory profile is tied to: the GPU model and its memory, or 'cpu'."""
    if device.type != "cuda":
        return "cpu"
    props = torch.cuda.get_device_properties(device)
    return f"{props.name} ({props.total_memory / 2**30:.0f} GiB)"


def resolve_precision(precision, device):
    """auto: bf16 where the GPU has it natively (native_bf16), else fp16 (with a grad scaler), and fp32 on the CPU,
    where mixed precision is slower for the small models a CPU trains. An explicit bf16 or fp16 is honoured on the CPU
    too, with the same autocast and grad scaler as on CUDA: Kaggle's T4 and P100 have no bf16, so fp16 is what most
    competitors run, and this is how it is tested without a GPU."""
    if device.type != "cuda":
        return "fp32" if precision == "auto" else precision
    if precision == "auto":
        return "bf16" if native_bf16(device) else "fp16"
    if precision == "bf16" and not native_bf16(device):
        raise PaddyError("train.precision is bf16 but this GPU does not support bfloat16: set it to fp16 or auto.")
    return precision


def native_bf16(device):
    """Whether the GPU computes in bfloat16 itself: compute capability 8.0 (Ampere) or later, or ROCm.

    Not `torch.cuda.is_bf16_supported()`: by default it also says yes for GPUs that only emulate bf16 (Kaggle's T4,
    7.5, and P100, 6.0), where bf16 autocast runs far slower than fp16, so auto would pick the wrong one there."""
    return bool(torch.version.hip) or torch.cuda.get_device_capability(device)[0] >= 8


def autocast(device, precision):
    if precision == "fp32":
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    return torch.autocast(device_type=device.type, dtype=dtype)


def backward_mode(device, precision):
    """The context a backward pass runs in: on the CPU in fp16, _HalfConvGradsInFloat; elsewhere nothing."""
    if device.type == "cpu" and precision == "fp16":
        return _HalfConvGradsInFloat()
    return contextlib.nullcontext()


class _HalfConvGradsInFloat(TorchDispatchMode):
    """fp16 convolution gradients computed in fp32 from the fp16 tensors, then rounded to fp16.

    torch's CPU kernel for an fp16 convolution's weight gradient is a reference loop, 40-100x slower than fp32 (1.3 s
    of a test_vit step's 2.1 s); cuDNN, which this stands in for, reads and writes fp16 and accumulates in fp32. So
    the tensors stay fp16 on both sides of the op, as on CUDA; only the sum inside is done the way cuDNN does it.
    """

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func is torch.ops.aten.convolution_backward.default and args[0].dtype == torch.float16:
            up = [a.float() if isinstance(a, torch.Tensor) and a.dtype == torch.float16 else a for a in args]
            return tuple(o.half() if isinstance(o, torch.Tensor) else o for o in func(*up, **kwargs))
        return func(*args, **kwargs)


def create_scaler(precision, device):
    """fp16's dynamic loss scaling (a torch.amp.GradScaler, on CUDA and the CPU alike), or None for the others:
    fp16 gradients underflow without it; bf16 has fp32's exponent range and needs none."""
    return torch.amp.GradScaler(device.type) if precision == "fp16" else None
