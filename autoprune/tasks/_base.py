from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn


@dataclass(frozen=True, eq=False)
class Split:
    """A labelled split held in memory: ``x`` float (N, C, H, W), ``y`` int64 (N,)."""

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

    def __post_init__(self) -> None:
        if not isinstance(self.model, nn.Module):
            raise TypeError(f"Task.model must be a torch.nn.Module, got {type(self.model).__name__}.")
        names = dict(self.model.named_modules())
        missing = [n for n in self.ignored_layers if n not in names]
        if missing:
            raise ValueError(f"Task.ignored_layers names modules the model lacks: {missing}.")
        if tuple(self.train.x.shape[1:]) != tuple(self.input_shape):
            raise ValueError(
                f"Task.input_shape {tuple(self.input_shape)} does not match the data's "
                f"{tuple(self.train.x.shape[1:])}."
            )

    def example_input(self, batch_size: int = 1) -> torch.Tensor:
        """A deterministic batch of real validation inputs (repeated if needed)."""
        idx = torch.arange(batch_size) % len(self.val)
        return self.val.x[idx].clone()
