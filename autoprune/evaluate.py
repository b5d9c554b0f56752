"""Scoring a model on the task's validation split: the task's metric.

A :class:`Metric` has a name, a unit and a direction, and ``evaluate(model, data) ->
float``. Top-1 accuracy (in percent, higher is better) is the default for a classifier;
``MIOU`` scores per-pixel labels. The same metric scores a quantized candidate: its ONNX
file is wrapped as a callable (:class:`OnnxModel`) that the metric runs like a model.

Example:
    >>> error = Metric("error", unit="%", higher_is_better=False,
    ...                evaluate=lambda model, data: 100 - top1(model, data))
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from autoprune import accelerator

if TYPE_CHECKING:  # torch is imported where it is used: showing results stays fast
    import torch


class Examples(Protocol):
    """What a metric scores: a task's validation split (``tasks.Split`` or ``DataSplit``),
    or anything with these three. Declared here so scoring never imports the tasks
    (they import it for their default metric)."""

    def __len__(self) -> int: ...

    def head(self, n: int) -> Examples: ...

    def batches(self, batch_size: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]: ...


def top1(model: Callable[[torch.Tensor], torch.Tensor], data: Examples, batch_size: int = 500) -> float:
    """Top-1 accuracy in percent of ``model`` on every example of ``data``."""
    import torch

    correct = seen = 0
    with torch.no_grad():
        for x, y in data.batches(batch_size):
            correct += int((model(x).argmax(1) == y).sum())
            seen += len(y)
    return 100.0 * correct / seen


def miou(model: Callable[[torch.Tensor], torch.Tensor], data: Examples, batch_size: int = 500) -> float:
    """Mean intersection over union in percent of per-pixel labels (N, H, W) against
    outputs (N, classes, H, W), over the classes present in the labels or predictions
    (a class never seen and never predicted has no IoU), from one confusion matrix
    over the whole split (not an average of per-image figures)."""
    import torch

    confusion = None
    with torch.no_grad():
        for x, y in data.batches(batch_size):
            out = model(x)
            k = out.shape[1]
            if confusion is None:
                confusion = torch.zeros(k, k, dtype=torch.int64)
            pred = out.argmax(1).flatten()
            truth = y.flatten().long()
            confusion += torch.bincount(truth * k + pred, minlength=k * k).reshape(k, k)
    assert confusion is not None
    inter = confusion.diag().double()
    union = confusion.sum(0).double() + confusion.sum(1).double() - inter
    seen = union > 0
    return float(100.0 * (inter[seen] / union[seen]).mean())


@dataclass(frozen=True)
class MetricInfo:
    """A metric as results record it: name, unit, direction (its function stays in code)."""

    name: str = "accuracy"
    unit: str = "%"
    higher_is_better: bool = True

    @classmethod
    def of(cls, described: dict[str, Any] | None) -> MetricInfo:
        """From :meth:`describe`'s dict; studies from before metrics had names scored accuracy."""
        return cls(**described) if described else cls()

    @property
    def sign(self) -> float:
        """+1 if higher is better, -1 if lower: ``sign * (value - base)`` is the gain."""
        return 1.0 if self.higher_is_better else -1.0

    @property
    def direction(self) -> str:
        return "higher is better" if self.higher_is_better else "lower is better"

    @property
    def optuna_direction(self) -> str:
        return "maximize" if self.higher_is_better else "minimize"

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "unit": self.unit, "higher_is_better": self.higher_is_better}

    def fmt(self, value: float | None, digits: int = 2) -> str:
        """e.g. '91.20%'; '-' for none."""
        if value is None or (isinstance(value, float) and math.isnan(value)):
            return "-"
        return f"{value:.{digits}f}{self.unit}"

    def key(self, column: str) -> str:
        """A table column or record key under the metric's name ('accuracy_drop' ->
        'mIoU_drop', 'final_accuracy' -> 'final_mIoU'); other columns unchanged."""
        return column.replace("accuracy", self.name)

    def label(self) -> str:
        """An axis or column title, e.g. 'mIoU (%)'."""
        return f"{self.name} ({self.unit})" if self.unit else self.name


@dataclass(frozen=True)
class Metric(MetricInfo):
    """What a candidate is scored by.

    Attributes:
        name: shown everywhere the score is (trial lines, tables, CSV columns, plots).
        evaluate: ``evaluate(model, data) -> float``; ``data`` is the validation subset
            autoprune scores on: iterate ``data.batches(batch_size)`` for ``(x, y)``
            batches (in memory or read from a Dataset alike). ``model`` is an
            ``nn.Module`` in eval mode, or an :class:`OnnxModel` (also callable on a batch).
        unit: printed after the figure, e.g. ``%`` (empty for none).
        higher_is_better: the direction; a drop against the baseline is measured in it.
    """

    # (a default only because MetricInfo's fields have them: a Metric needs its function)
    evaluate: Callable[[Any, Examples], float] | None = None

    def __post_init__(self) -> None:
        if not self.name or not isinstance(self.name, str) or "," in self.name or "@" in self.name:
            raise ValueError(f"a metric needs a short name without commas or '@', got {self.name!r}.")
        if not callable(self.evaluate):
            raise TypeError(f"Metric.evaluate must be callable as evaluate(model, data), got "
                            f"{type(self.evaluate).__name__}.")

    @property
    def info(self) -> MetricInfo:
        return MetricInfo(self.name, self.unit, self.higher_is_better)

    def __call__(self, model: Any, data: Examples, samples: int | None = None) -> float:
        """The metric on the first ``samples`` examples of ``data`` (all if None).

        The validation split is shuffled once when the task is built, so its first
        ``samples`` examples are a fixed random subset: every candidate sees the same
        one. Raises MetricError for a value that is not a finite number.
        """
        import torch

        from autoprune.errors import MetricError

        part = data if samples is None or samples >= len(data) else data.head(samples)
        device = accelerator.current().device
        if isinstance(model, torch.nn.Module):
            model.eval()
        if isinstance(model, torch.nn.Module) and device != "cpu":
            # its forward passes on the train device; the metric sees CPU batches and outputs
            with torch.no_grad(), accelerator.placed(model, device):
                value = self.evaluate(accelerator.OnDevice(model, device), part)
        else:
            with torch.no_grad():
                value = self.evaluate(model, part)
        if isinstance(value, torch.Tensor) and value.numel() == 1:
            value = value.item()
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise MetricError(f"metric {self.name!r} returned {type(value).__name__} ({value!r:.60}); "
                              "it must return one number (a float)")
        if not math.isfinite(value):
            raise MetricError(f"metric {self.name!r} returned {value}; it must return a finite number "
                              "(a NaN often means an empty class or a division by zero in it)")
        return float(value)


ACCURACY = Metric("accuracy", "%", True, top1)
MIOU = Metric("mIoU", "%", True, miou)


class OnnxModel:
    """An ONNX file run by ONNX Runtime's CPU provider, callable on a batch like a model.

    A model exported at a fixed batch size runs batches of that size; a shorter batch
    is padded and the padding's outputs dropped.
    """

    def __init__(self, path) -> None:
        import onnxruntime as ort

        opts = ort.SessionOptions()
        opts.log_severity_level = 3
        self.session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
        spec = self.session.get_inputs()[0]
        self.name = spec.name
        self.batch = spec.shape[0] if isinstance(spec.shape[0], int) and spec.shape[0] > 0 else None
        self.output_names = [o.name for o in self.session.get_outputs()]

    def __call__(self, x: torch.Tensor):
        """The outputs for ``x``, shaped as the PyTorch model's were (a tensor, or a tuple
        or dict of them: :func:`autoprune.outputs.rebuild`)."""
        import numpy as np
        import torch

        from autoprune.outputs import rebuild

        x = x.detach().numpy().astype(np.float32)
        if self.batch is None:
            return rebuild(self.output_names, [torch.from_numpy(o) for o in self.session.run(None, {self.name: x})])
        parts: list[list] = [[] for _ in self.output_names]
        for start in range(0, len(x), self.batch):
            chunk = x[start:start + self.batch]
            real = len(chunk)
            if real < self.batch:
                chunk = np.concatenate([chunk, np.repeat(chunk[-1:], self.batch - real, axis=0)])
            for part, got in zip(parts, self.session.run(None, {self.name: chunk}), strict=True):
                part.append(got[:real])
        return rebuild(self.output_names, [torch.from_numpy(np.concatenate(p)) for p in parts])


def accuracy(model, data: Examples, samples: int | None = None) -> float:
    """Top-1 accuracy in percent on the first ``samples`` validation examples (all if None)."""
    return ACCURACY(model, data, samples)


def onnx_accuracy(path, data: Examples, samples: int | None = None) -> float:
    """Top-1 accuracy in percent of an ONNX model on the same examples as :func:`accuracy`."""
    return ACCURACY(OnnxModel(path), data, samples)
