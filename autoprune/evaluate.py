"""Scoring a model on the task's validation split (top-1 accuracy, in percent)."""

from __future__ import annotations

import torch
from torch import nn

# _base, not the package: the package's loader builds the built-in tasks with ``accuracy``
from autoprune.tasks._base import Split


def accuracy(model: nn.Module, data: Split, samples: int | None = None, batch_size: int = 500) -> float:
    """Top-1 accuracy in percent on the first ``samples`` validation examples (all if None).

    The validation split is shuffled once when the task is built, so its first
    ``samples`` examples are a fixed random subset: every candidate sees the same one.
    """
    n = len(data.x) if samples is None else min(samples, len(data.x))
    model.eval()
    correct = 0
    with torch.no_grad():
        for start in range(0, n, batch_size):
            stop = min(start + batch_size, n)
            pred = model(data.x[start:stop]).argmax(1)
            correct += int((pred == data.y[start:stop]).sum())
    return 100.0 * correct / n


def onnx_accuracy(path, data: Split, samples: int | None = None) -> float:
    """Top-1 accuracy in percent of an ONNX model (e.g. a quantized candidate) on the same
    first ``samples`` validation examples as :func:`accuracy`, run by ONNX Runtime's CPU
    provider at the model's own batch size (the last short batch is padded and the
    padding not scored)."""
    import numpy as np
    import onnxruntime as ort

    n = len(data.x) if samples is None else min(samples, len(data.x))
    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    spec = session.get_inputs()[0]
    batch = spec.shape[0] if isinstance(spec.shape[0], int) and spec.shape[0] > 0 else 500
    x = data.x[:n].numpy().astype(np.float32)
    y = data.y[:n].numpy()
    correct = 0
    for start in range(0, n, batch):
        chunk = x[start:start + batch]
        real = len(chunk)
        if real < batch:
            chunk = np.concatenate([chunk, np.repeat(chunk[-1:], batch - real, axis=0)])
        pred = session.run(None, {spec.name: chunk})[0][:real].argmax(1)
        correct += int((pred == y[start:start + real]).sum())
    return 100.0 * correct / n
