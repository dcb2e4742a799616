"""Device, precision and determinism: CUDA gets mixed precision and channels_last, the CPU plain fp32."""

import contextlib
import os
import random

import numpy as np
import torch

from paddy.errors import PaddyError


def device_name(device):
    """What a memory profile is tied to: the GPU model and its memory, or 'cpu'."""
    if device.type != "cuda":
        return "cpu"
    props = torch.cuda.get_device_properties(device)
    return f"{props.name} ({props.total_memory / 2**30:.0f} GiB)"


def resolve_precision(precision, device):
    """auto: bf16 where the GPU supports it, else fp16 (with a grad scaler); always fp32 on the CPU."""
    if device.type != "cuda":
        if precision in ("bf16", "fp16"):
            print(f"note: train.precision={precision} needs CUDA; using fp32 on the CPU")
        return "fp32"
    if precision == "auto":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    if precision == "bf16" and not torch.cuda.is_bf16_supported():
        raise PaddyError("train.precision is bf16 but this GPU does not support bfloat16: set it to fp16 or auto.")
    return precision


def autocast(device, precision):
    if precision == "fp32":
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    return torch.autocast(device_type=device.type, dtype=dtype)


def seed_everything(seed):
    """Same params, same numbers on the CPU: the DVC run-cache may restore outputs, so runs must repeat."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
