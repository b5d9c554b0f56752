from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn


@dataclass(frozen=True, eq=False)
class Split:
    """A labelled split held in memory: ``x`` float (N, *input_shape), ``y`` the labels
    (int64 (N,) class indices for a classifier, (N, H, W) for per-pixel labels, or
    whatever the task's loss and metric read)."""

    x: torch.Tensor
    y: torch.Tensor

    def __post_init__(self) -> None:
        if len(self.x) != len(self.y) or len(self.x) == 0:
            raise ValueError(
                f"a split needs as many labels as inputs (> 0), but got {len(self.x)} "
                f"inputs and {len(self.y)} labels."
            )

    def __len__(self) -> int:
        return len(self.x)

    def head(self, n: int) -> Split:
        """The first ``n`` examples (a view, no copy)."""
        return Split(self.x[:n], self.y[:n])


@dataclass(frozen=True, eq=False)
class Task:
    """What the search prunes and how it scores a candidate.

    Attributes:
        name: short name, recorded with every result.
        model: the trained base model (autoprune never mutates it).
        input_shape: one example's shape without the batch dimension, e.g. (1, 28, 28).
        train: data for BN recalibration, Taylor gradients and fine-tuning.
        val: data for the accuracy objective.
        ignored_layers: module names never pruned (the classifier's output width is fixed).
        base_accuracy: validation accuracy (%) the base model reached when it was trained.
        description: one line for listings.
        hflip: whether horizontal flips are a valid augmentation for fine-tuning.
        notes: what autoprune changed about the task when loading it, said at set-up.
        metric: what a candidate is scored by (name, unit, direction, evaluate);
            top-1 accuracy in percent by default. ``base_accuracy`` is in its units.
        loss: ``loss(model, (x, y)) -> scalar tensor``, what recovery minimises and
            Taylor importance differentiates; cross-entropy of ``model(x)`` against
            ``y`` by default (which also fits per-pixel labels (N, H, W)). With
            distillation on, the last output ``model`` returned in the call is the
            one distilled.
    """

    name: str
    model: nn.Module
    input_shape: tuple[int, ...]
    train: Split
    val: Split
    ignored_layers: tuple[str, ...] = ()
    base_accuracy: float | None = None
    description: str = ""
    hflip: bool = False
    extra: dict = field(default_factory=dict)
    notes: tuple[str, ...] = ()
    metric: Any = None  # autoprune.evaluate.Metric; None: top-1 accuracy
    loss: Callable[[nn.Module, tuple[torch.Tensor, torch.Tensor]], torch.Tensor] | None = None

    def __post_init__(self) -> None:
        from autoprune.evaluate import ACCURACY, Metric

        if self.metric is None:
            object.__setattr__(self, "metric", ACCURACY)
        elif not isinstance(self.metric, Metric):
            raise TypeError(f"Task.metric must be an autoprune.evaluate.Metric, got {type(self.metric).__name__}.")
        if self.loss is not None and not callable(self.loss):
            raise TypeError(f"Task.loss must be callable as loss(model, (x, y)), got {type(self.loss).__name__}.")
        for label, split in (("train", self.train), ("val", self.val)):
            if not isinstance(split, Split):
                raise TypeError(f"Task.{label} must be an autoprune.tasks.Split, got {type(split).__name__}.")
        if not isinstance(self.model, nn.Module):
            raise TypeError(f"Task.model must be a torch.nn.Module, got {type(self.model).__name__}.")
        names = dict(self.model.named_modules())
        missing = [n for n in self.ignored_layers if n not in names]
        if missing:
            raise ValueError(f"Task.ignored_layers names modules the model lacks: {missing}.")
        for label, split in (("train", self.train), ("val", self.val)):
            if tuple(split.x.shape[1:]) != tuple(self.input_shape):
                raise ValueError(
                    f"the {label} split's inputs are {tuple(split.x.shape[1:])} per example, but the task "
                    f"declares input_shape {tuple(self.input_shape)} (every candidate is timed at that shape); "
                    "make them agree."
                )
            if not split.x.is_floating_point():
                raise ValueError(
                    f"the {label} split's inputs are {split.x.dtype}; the model takes floats. Convert them "
                    "when building the task, e.g. x.float() / 255 and the model's normalisation."
                )

    def loss_of(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """The task's training loss on one batch (cross-entropy by default)."""
        if self.loss is None:
            return nn.functional.cross_entropy(model(x), y)
        return self.loss(model, (x, y))

    def example_input(self, batch_size: int = 1) -> torch.Tensor:
        """A deterministic batch of real validation inputs (repeated if needed)."""
        idx = torch.arange(batch_size) % len(self.val)
        return self.val.x[idx].clone()
