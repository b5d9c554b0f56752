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
