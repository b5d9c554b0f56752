from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from autoprune import accelerator


def default_loss(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Cross-entropy of ``model(x)`` against class indices ``y`` (also per pixel): a
    task's loss unless it brings its own (training, Taylor importance)."""
    return nn.functional.cross_entropy(model(x), y)


@dataclass(frozen=True, eq=False)
class Split:
    """A labelled split held in memory: ``x`` float (N, *input_shape), ``y`` the labels
    (int64 (N,) class indices for a classifier, (N, H, W) for per-pixel labels, or
    whatever the task's loss and metric read).

    Every reader of a split goes through :meth:`take`, :meth:`sample` and
    :meth:`batches`, which :class:`DataSplit` (data read batch by batch from a PyTorch
    ``Dataset`` or ``DataLoader``) also has; ``x`` and ``y`` exist only here.
    """

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

    def take(self, idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The examples at ``idx`` as one batch."""
        return self.x[idx], self.y[idx]

    def sample(self, batch_size: int, steps: int, generator: torch.Generator) -> Iterator[Batch]:
        """``steps`` random batches (with replacement), each with its example indices."""
        for _ in range(steps):
            idx = torch.randint(len(self.x), (batch_size,), generator=generator)
            yield idx, self.x[idx], self.y[idx]

    def batches(self, batch_size: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Every example once, in order, ``batch_size`` at a time."""
        for start in range(0, len(self.x), batch_size):
            yield self.x[start:start + batch_size], self.y[start:start + batch_size]

    def first(self, n: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The first ``n`` examples (fewer if the split is smaller) as one batch."""
        return self.x[:n], self.y[:n]


Batch = tuple["torch.Tensor | None", torch.Tensor, torch.Tensor]  # (example indices or None, x, y)


def default_workers() -> int:
    """Data-loading processes when ``--workers`` is not given: one core is left to the
    training itself (0 on a 1-core machine: loading in the main process)."""
    return min(4, max(0, (os.cpu_count() or 1) - 1))


class DataSplit:
    """A split read batch by batch from a PyTorch ``Dataset`` (map-style or iterable)
    or a ``DataLoader`` (its dataset and ``collate_fn``; autoprune sets the batch size
    and order itself). Each example is ``(input, label)``. Memory does not grow with
    the data: nothing is kept but what one batch holds (and the teacher outputs of
    distillation, capped by ``Distill.cache_mb``).

    ``workers``: loading processes (``--workers``; default :func:`default_workers`).
    An iterable dataset must have ``__len__``, and is read in its own order: random
    batches come from cycling through it.
    """

    def __init__(self, data, workers: int | None = None, *, _limit: int | None = None) -> None:
        from torch.utils.data import DataLoader, IterableDataset
        from torch.utils.data._utils.collate import default_collate

        if isinstance(data, DataLoader):
            self.dataset, self.collate = data.dataset, data.collate_fn or default_collate
        else:
            self.dataset, self.collate = data, default_collate
        self.iterable = isinstance(self.dataset, IterableDataset)
        self.workers = default_workers() if workers is None else workers
        try:
            total = len(self.dataset)
        except TypeError:
            raise ValueError(f"a {type(self.dataset).__name__} has no length; autoprune needs len(dataset) "
                             "(define __len__ on an IterableDataset).") from None
        self._len = total if _limit is None else min(_limit, total)
        self._limit = _limit
        self._persistent = None  # the loader whose processes serve every pass (``_read``)
        self._passes: _Passes | None = None
        self._active = False
        self._source: DataSplit | None = None  # set on a view by ``head``
        if self._len == 0:
            raise ValueError(f"the {type(self.dataset).__name__} is empty: a split needs at least one example.")

    def __len__(self) -> int:
        return self._len

    def __repr__(self) -> str:
        return f"DataSplit({type(self.dataset).__name__}, {self._len} examples, workers={self.workers})"

    def head(self, n: int) -> DataSplit:
        from torch.utils.data import DataLoader

        # through a DataLoader: the view keeps the user's collate_fn
        view = DataSplit(DataLoader(self.dataset, collate_fn=self.collate), self.workers, _limit=min(n, self._len))
        view._source = self._source or self  # the same examples: read by the same processes
        return view

    def _pair(self, batch) -> tuple[torch.Tensor, torch.Tensor]:
        if not isinstance(batch, (tuple, list)) or len(batch) != 2:
            raise ValueError(f"a dataset example must be (input, label); a batch of them collated to "
                             f"{type(batch).__name__} of {len(batch) if hasattr(batch, '__len__') else '?'} parts.")
        return batch[0], batch[1]

    def _loader(self, data=None, **kwargs):
        from torch.utils.data import DataLoader

        # pinned pages copy to a CUDA train device without a staging copy
        return DataLoader(self.dataset if data is None else data, collate_fn=self.collate,
                          num_workers=self.workers, pin_memory=not accelerator.current().on_cpu, **kwargs)

    def _read(self, plan: list[list[int]], seed: int) -> Iterator:
        """The batches of ``plan`` (lists of example indices), collated, in order.

        With loading processes, one loader serves every pass, and its processes stay up
        between passes (``persistent_workers``): a candidate reads its split a dozen times
        (BN batches, each recovery rung, each evaluation), and starting the processes
        again each time cost more than the batches on small models. Each example is read
        with torch's generator seeded from ``seed`` and its place in the pass, so a
        dataset's random transforms draw the same whatever the process, the number of
        loading processes or what they read before (a retried candidate reads as the
        first one did). A pass that stops early or fails lets its processes go.
        """
        from torch.utils.data import DataLoader

        if self._source is not None:  # a view (``head``): its examples are its source's first
            yield from self._source._read(plan, seed)
            return
        keyed = [[(seed + n * 100_003 + k, int(i)) for k, i in enumerate(b)] for n, b in enumerate(plan)]

        def loader(batch_sampler, persistent: bool):
            # pinned pages copy to a CUDA train device without a staging copy; the loader's
            # own generator: its seed draws leave torch's stream alone
            return DataLoader(_SeededExamples(self.dataset), batch_sampler=batch_sampler, collate_fn=self.collate,
                              num_workers=self.workers, pin_memory=not accelerator.current().on_cpu,
                              persistent_workers=persistent, generator=torch.Generator())

        if self.workers == 0 or self._active:
            # in this process (no workers), or a second pass while one is open: a loader of its own
            yield from loader(keyed, persistent=False)
            return
        if self._persistent is None:
            self._passes = _Passes()
            self._persistent = loader(self._passes, persistent=True)
        self._passes.batches = keyed
        self._active = True
        done = False
        try:
            yield from self._persistent
            done = True
        finally:
            self._active = False
            if not done:
                self._persistent = None  # its processes end with it; the next pass starts new ones

    def take(self, idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.iterable:  # no random access: the first examples, as many as asked
            x, y = self.first(len(idx))
            return x, y
        return self._pair(self.collate([self.dataset[int(i)] for i in idx]))

    def sample(self, batch_size: int, steps: int, generator: torch.Generator) -> Iterator[Batch]:
        if steps <= 0:
            return
        if self.iterable:
            done = 0
            while done < steps:
                for x, y in self.batches(batch_size):
                    yield None, x, y
                    done += 1
                    if done == steps:
                        return
            return
        plan = [torch.randint(self._len, (batch_size,), generator=generator) for _ in range(steps)]
        seed = int(torch.randint(2**31, (1,), generator=generator))
        for idx, batch in zip(plan, self._read([p.tolist() for p in plan], seed), strict=True):
            yield (idx, *self._pair(batch))

    def batches(self, batch_size: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        if self.iterable:
            left = self._len
            for batch in self._loader(batch_size=batch_size):
                x, y = self._pair(batch)
                yield x[:left], y[:left]
                left -= len(x)
                if left <= 0:
                    return
            return
        plan = [list(range(start, min(start + batch_size, self._len))) for start in range(0, self._len, batch_size)]
        for batch in self._read(plan, seed=0):
            yield self._pair(batch)

    def first(self, n: int) -> tuple[torch.Tensor, torch.Tensor]:
        if not self.iterable:
            return self.take(torch.arange(min(n, self._len)))
        return next(iter(self.head(n).batches(n)))


class _Passes:
    """The batch sampler of a loader that serves several passes: the batches of the next
    pass are set before it starts (the sampler runs in this process, not the workers)."""

    def __init__(self) -> None:
        self.batches: list[list[tuple[int, int]]] = []

    def __iter__(self):
        return iter(self.batches)

    def __len__(self) -> int:
        return len(self.batches)


class _SeededExamples(torch.utils.data.Dataset):
    """``dataset[i]`` read with torch's CPU generator seeded for that read (keys are
    ``(seed, i)``), its state put back after: in this process the caller's stream is
    left as it was."""

    def __init__(self, dataset) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, key: tuple[int, int]):
        seed, i = key
        # the CPU generator alone: torch.manual_seed also seeds every accelerator backend,
        # 170 us a call here against 1 us, which made a 40-step rung of 64 8x slower
        generator = torch.default_generator
        state = generator.get_state()
        generator.manual_seed(seed)
        try:
            return self.dataset[i]
        finally:
            generator.set_state(state)


def as_split(data, label: str) -> Split | DataSplit:
    """A task's split as given: a :class:`Split`, a ``Dataset`` or a ``DataLoader``."""
    from torch.utils.data import DataLoader, Dataset

    if isinstance(data, (Split, DataSplit)):
        return data
    if isinstance(data, (Dataset, DataLoader)):
        return DataSplit(data)
    raise TypeError(f"Task.{label} must be an autoprune.tasks.Split, a torch Dataset or a DataLoader, "
                    f"got {type(data).__name__}.")


@dataclass(frozen=True, eq=False)
class Task:
    """What the search prunes and how it scores a candidate.

    Attributes:
        name: short name, recorded with every result.
        model: the trained base model (autoprune never mutates it).
        input_shape: one example's shape without the batch dimension, e.g. (1, 28, 28).
        train: data for BN recalibration, Taylor gradients and fine-tuning: a
            :class:`Split` of tensors, or a PyTorch ``Dataset``/``DataLoader`` of
            ``(input, label)`` examples, read batch by batch (:class:`DataSplit`).
        val: data for the metric, the same kinds; the first examples are the
            search's fixed validation subset, so shuffle it once when building it.
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
        distill: for a model with several outputs (a tuple, list or dict of tensors),
            how each is distilled from the unpruned model: ``{key or position: "kl" |
            "mse" | "none"}``; unnamed outputs keep the default, KL (class scores) for
            the first and mean squared error for the others.
    """

    name: str
    model: nn.Module
    input_shape: tuple[int, ...]
    train: Split | DataSplit  # a Dataset or DataLoader given here is wrapped as a DataSplit
    val: Split | DataSplit
    ignored_layers: tuple[str, ...] = ()
    base_accuracy: float | None = None
    description: str = ""
    hflip: bool = False
    extra: dict = field(default_factory=dict)
    notes: tuple[str, ...] = ()
    metric: Any = None  # autoprune.evaluate.Metric; None: top-1 accuracy
    loss: Callable[[nn.Module, tuple[torch.Tensor, torch.Tensor]], torch.Tensor] | None = None
    distill: dict | None = None

    def __post_init__(self) -> None:
        from autoprune.evaluate import ACCURACY, Metric

        if self.metric is None:
            object.__setattr__(self, "metric", ACCURACY)
        elif not isinstance(self.metric, Metric):
            raise TypeError(f"Task.metric must be an autoprune.evaluate.Metric, got {type(self.metric).__name__}.")
        if self.distill is not None and not isinstance(self.distill, dict):
            raise TypeError(f"Task.distill must be a dict (output key or position -> 'kl', 'mse' or 'none'), "
                            f"got {type(self.distill).__name__}.")
        if self.loss is not None and not callable(self.loss):
            raise TypeError(f"Task.loss must be callable as loss(model, (x, y)), got {type(self.loss).__name__}.")
        for label in ("train", "val"):
            object.__setattr__(self, label, as_split(getattr(self, label), label))
        if not isinstance(self.model, nn.Module):
            raise TypeError(f"Task.model must be a torch.nn.Module, got {type(self.model).__name__}.")
        names = dict(self.model.named_modules())
        missing = [n for n in self.ignored_layers if n not in names]
        if missing:
            raise ValueError(f"Task.ignored_layers names modules the model lacks: {missing}.")
        for label, split in (("train", self.train), ("val", self.val)):
            x = split.x if isinstance(split, Split) else split.first(2)[0]
            if not isinstance(x, torch.Tensor):
                raise ValueError(f"the {label} split's inputs are {type(x).__name__}; they must be tensors "
                                 "(a dataset's transform should end with ToTensor()).")
            if tuple(x.shape[1:]) != tuple(self.input_shape):
                raise ValueError(
                    f"the {label} split's inputs are {tuple(x.shape[1:])} per example, but the task "
                    f"declares input_shape {tuple(self.input_shape)} (every candidate is timed at that shape); "
                    "make them agree."
                )
            if not x.is_floating_point():
                raise ValueError(
                    f"the {label} split's inputs are {split.x.dtype}; the model takes floats. Convert them "
                    "when building the task, e.g. x.float() / 255 and the model's normalisation."
                )

    def loss_of(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """The task's training loss on one batch (cross-entropy by default)."""
        if self.loss is None:
            return default_loss(model, x, y)
        return self.loss(model, (x, y))

    def example_input(self, batch_size: int = 1) -> torch.Tensor:
        """A deterministic batch of real validation inputs (repeated if needed)."""
        x, _ = self.val.first(batch_size)
        return x[torch.arange(batch_size) % len(x)].clone()
