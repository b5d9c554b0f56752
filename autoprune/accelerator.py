"""Where training runs: the train device and mixed precision.

Recovery, distillation (the teacher and its kept outputs), batch-norm re-estimation,
Taylor gradients and the metric's forward passes run on the *train device*; latency
is always measured by the device profile, whatever this says. Models live on the CPU
between stages (surgery, export and timing read them there): each training or scoring
call moves its model to the train device and back, which costs little next to the call.

The choice is made once per process at set-up (:func:`use`) and kept in the
environment, so the worker processes a search starts train on the same device; a
process on a machine with several GPUs takes one by ``--train-device cuda:N`` or by
``CUDA_VISIBLE_DEVICES``.

Example:
    >>> use(resolve("auto", "auto"))   # CUDA when torch sees it, bf16 there; else CPU, float32
    >>> current().device
    'cpu'
"""

from __future__ import annotations

import contextlib
import os
import re
from dataclasses import dataclass
from typing import Any

from autoprune.errors import ConfigError

ENV_DEVICE, ENV_AMP = "AUTOPRUNE_TRAIN_DEVICE", "AUTOPRUNE_AMP"
AMP_CHOICES = ("auto", "bf16", "fp16", "off")


@dataclass(frozen=True)
class TrainDevice:
    """A resolved train device (``"cpu"``, ``"cuda:0"``) and its mixed precision
    (``"off"``, ``"bf16"``, ``"fp16"``; never on for the CPU)."""

    device: str = "cpu"
    amp: str = "off"

    @property
    def on_cpu(self) -> bool:
        return self.device == "cpu"

    def autocast(self):
        """The context a training forward pass and its loss run in."""
        import torch

        if self.amp == "off":
            return contextlib.nullcontext()
        dtype = torch.bfloat16 if self.amp == "bf16" else torch.float16
        return torch.autocast(device_type=self.device.split(":")[0], dtype=dtype)

    def scaler(self):
        """A gradient scaler for float16 (its small range underflows gradients), else None."""
        import torch

        return torch.amp.GradScaler(self.device.split(":")[0]) if self.amp == "fp16" else None

    def describe(self) -> str:
        return self.device if self.amp == "off" else f"{self.device} ({self.amp})"


def resolve(device: str = "auto", amp: str = "auto") -> TrainDevice:
    """``--train-device`` and ``--amp`` checked against what torch sees.

    Raises:
        ConfigError: an unknown device or precision, a CUDA device torch does not see,
            or mixed precision asked for on the CPU.
    """
    import torch

    device = (device or "auto").strip().lower()
    if amp not in AMP_CHOICES:
        raise ConfigError(f"--amp {amp!r}: choose one of {', '.join(AMP_CHOICES)}.")
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if not re.fullmatch(r"cpu|cuda(:\d+)?", device):
        raise ConfigError(f"--train-device {device!r}: give auto, cpu, cuda or cuda:N.")
    if device.startswith("cuda"):
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        index = int(device.split(":")[1]) if ":" in device else 0
        if count == 0:
            raise ConfigError(f"--train-device {device}: torch sees no CUDA device here (a CPU-only torch build, "
                              "no driver, or CUDA_VISIBLE_DEVICES empty); use --train-device cpu.")
        if index >= count:
            raise ConfigError(f"--train-device {device}: torch sees {count} CUDA device(s), cuda:0 to "
                              f"cuda:{count - 1}.")
        device = f"cuda:{index}"
        if amp == "auto":
            amp = "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    elif amp in ("bf16", "fp16"):
        raise ConfigError(f"--amp {amp} is for a CUDA train device; on the CPU training runs in float32 "
                          "(--amp off).")
    else:
        amp = "off"
    return TrainDevice(device, amp)


def use(train: TrainDevice) -> None:
    """Train on ``train`` in this process and in the processes it starts."""
    os.environ[ENV_DEVICE], os.environ[ENV_AMP] = train.device, train.amp


def current() -> TrainDevice:
    """The train device this process was set to (the CPU, float32, unless :func:`use` ran)."""
    device, amp = os.environ.get(ENV_DEVICE, "cpu"), os.environ.get(ENV_AMP, "off")
    if not re.fullmatch(r"cuda(:\d+)?", device):
        return TrainDevice()
    return TrainDevice(device, amp if amp in ("bf16", "fp16") else "off")


def to(obj: Any, device) -> Any:
    """``obj`` (a tensor, or a tuple, list or dict of them) on ``device``; other values as they are."""
    import torch

    if isinstance(obj, torch.Tensor):
        return obj.to(device, non_blocking=True)
    if isinstance(obj, (tuple, list)):
        return type(obj)(to(o, device) for o in obj)
    if isinstance(obj, dict):
        return {k: to(v, device) for k, v in obj.items()}
    return obj


@contextlib.contextmanager
def placed(model, device: str):
    """``model`` on ``device`` for the block, back on the CPU after it (the stages
    around training read models there)."""
    if device == "cpu":
        yield model
        return
    model.to(device)
    try:
        yield model
    finally:
        model.to("cpu")


class OnDevice:
    """A model on the train device, callable on CPU batches as the metric calls it:
    the batch goes to the device, the outputs come back to the CPU. Other attributes
    are the model's."""

    def __init__(self, model, device: str) -> None:
        self.model, self.device = model, device

    def __call__(self, x, *args, **kwargs):
        return to(self.model(to(x, self.device), *args, **kwargs), "cpu")

    def __getattr__(self, name: str):
        return getattr(self.model, name)
