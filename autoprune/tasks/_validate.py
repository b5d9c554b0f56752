"""A task checked before trial 0: a task that cannot run its own baseline stops the
search with what is wrong, instead of failing every trial (or blaming the budget).

Checked: the model's forward on the example input, the splits' labels against the
model's outputs (for the default cross-entropy loss: integer class indices within the
output's classes, per-pixel labels the output's spatial size), the metric on the
unpruned model (one finite number), and one training step with the task's loss.
"""

from __future__ import annotations

import copy

import torch

from autoprune import outputs
from autoprune.errors import MetricError, TaskError, first_line
from autoprune.evaluate import ACCURACY
from autoprune.tasks._base import Split, Task

CHECK_SAMPLES = 64  # examples the metric is checked on (the baseline trial scores the subset)


def _shape(t) -> str:
    return "x".join(str(d) for d in t.shape) if isinstance(t, torch.Tensor) else type(t).__name__


def _forward(task: Task, x: torch.Tensor):
    model = task.model.eval()
    try:
        with torch.no_grad():
            return model(x)
    except Exception as exc:  # noqa: BLE001 - the user's model: its message, with the shapes
        raise TaskError(
            f"task {task.name!r}: the model's forward fails on an input of shape {_shape(x)} "
            f"(batch x input_shape {tuple(task.input_shape)}): {type(exc).__name__}: {first_line(exc)[:300]}. "
            "Make input_shape and the data match what the model takes."
        ) from None


LABEL_SAMPLES = 512  # labels of a streamed split checked (an in-memory one: all)


def _labels(task: Task, label: str, split: Split, out: torch.Tensor) -> None:
    """With the default loss: labels must be class indices the output can score."""
    y = split.y if isinstance(split, Split) else split.first(LABEL_SAMPLES)[1]
    if y.dtype.is_floating_point or y.dtype == torch.bool:
        raise TaskError(f"task {task.name!r}: the {label} split's labels are {y.dtype}; cross-entropy needs "
                        "integer class indices (int64). Convert them (y.long()), or give the task a loss.")
    want = (out.shape[0], *out.shape[2:])
    if tuple(y.shape[1:]) != tuple(want[1:]):
        raise TaskError(
            f"task {task.name!r}: the {label} split's labels are {_shape(y)}, but the model outputs "
            f"{_shape(out)}; with the default loss a label is one class index per output position "
            f"({'x'.join(map(str, want[1:])) or 'one per example'}). Fix the labels or give the task a loss."
        )
    classes = out.shape[1]
    low, high = int(y.min()), int(y.max())
    if low < 0 or high >= classes:
        raise TaskError(
            f"task {task.name!r}: the {label} split has labels from {low} to {high}, but the model scores "
            f"{classes} classes (0..{classes - 1}). Fix the labels, or the model's number of outputs."
        )


def validate(task: Task) -> float:
    """Check ``task`` (see the module docstring); return its metric on the first
    ``CHECK_SAMPLES`` validation examples. Raises TaskError saying what is wrong."""
    out = _forward(task, task.example_input(2))
    try:
        names = outputs.names(out) if outputs.flat(out) else []
        outputs.distill_modes(names, task.distill)
    except (TypeError, ValueError) as exc:
        raise TaskError(f"task {task.name!r}: {exc}") from None
    if len(names) > 1 and (task.loss is None or task.metric is ACCURACY):
        raise TaskError(f"task {task.name!r}: the model returns {len(names)} outputs {outputs.describe(out)}; "
                        "give the task its own loss and metric (Task(loss=..., metric=...)): the default "
                        "cross-entropy and accuracy score one tensor of class scores.")
    if task.loss is None:
        if not isinstance(out, torch.Tensor) or out.dim() < 2:
            raise TaskError(f"task {task.name!r}: the model outputs {_shape(out)}; the default loss "
                            "(cross-entropy) needs a tensor (batch, classes, ...). Give the task a loss.")
        for label, split in (("train", task.train), ("val", task.val)):
            _labels(task, label, split, out)
    try:
        value = task.metric(task.model, task.val, CHECK_SAMPLES)
    except MetricError as exc:
        raise TaskError(f"task {task.name!r}: on the unpruned model, {exc}.") from None
    except Exception as exc:  # noqa: BLE001 - the user's metric
        raise TaskError(f"task {task.name!r}: the metric {task.metric.name!r} fails on the unpruned model: "
                        f"{type(exc).__name__}: {first_line(exc)[:300]}") from None
    _one_step(task)
    return value


def _one_step(task: Task) -> None:
    """One optimiser step with the task's loss on a copy (recovery and Taylor run it)."""
    model = copy.deepcopy(task.model).train()
    x, y = task.train.first(8)
    try:
        loss = task.loss_of(model, x, y)
        if not isinstance(loss, torch.Tensor) or loss.numel() != 1:
            raise TaskError(f"task {task.name!r}: the loss returned {_shape(loss)}; it must return one "
                            "number as a tensor (e.g. .mean() of per-example losses).")
        if not torch.isfinite(loss):
            raise TaskError(f"task {task.name!r}: the loss on a training batch of the unpruned model is "
                            f"{loss.item()}; it must be finite.")
        loss.backward()
    except TaskError:
        raise
    except Exception as exc:  # noqa: BLE001 - the user's loss or model in training mode
        raise TaskError(f"task {task.name!r}: one training step on a batch of {len(x)} fails: "
                        f"{type(exc).__name__}: {first_line(exc)[:300]}") from None
