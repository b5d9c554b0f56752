from __future__ import annotations

import importlib
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from autoprune.errors import TaskError, did_you_mean

if TYPE_CHECKING:
    from autoprune.tasks._base import Task


def _fashion(data_dir: Path | None) -> Task:
    from autoprune.tasks.builtin import fashion_mnist

    return fashion_mnist(data_dir)


def _digits(data_dir: Path | None) -> Task:
    from autoprune.tasks.builtin import digits

    return digits()


BUILTIN_TASKS: dict[str, tuple[Callable[[Path | None], Task], str]] = {
    "fashion-mnist": (_fashion, "reference task: ResNet-14 (32/64/128) on Fashion-MNIST, 1x28x28"),
    "digits": (_digits, "scikit-learn digits with a tiny CNN, 1x8x8: for fast tests"),
}


def check_task_spec(spec: str) -> None:
    """Refuse a task name that is neither built in nor ``package.module:factory`` (cheap)."""
    if spec not in BUILTIN_TASKS and (":" not in spec or not all(spec.partition(":")[::2])):
        raise TaskError(
            f"unknown task {spec!r}."
            + did_you_mean(spec, list(BUILTIN_TASKS))
            + " Or give your own as package.module:factory."
        )


def load_task(spec: str, data_dir: str | Path | None = None) -> Task:
    """Build a task from a built-in name or ``package.module:factory``.

    Raises:
        TaskError: unknown name, a factory that cannot be imported or does not return
            a Task, or (DataError) missing data.
    """
    data_path = Path(data_dir) if data_dir is not None else None
    check_task_spec(spec)
    if spec in BUILTIN_TASKS:
        return without_aux_heads(BUILTIN_TASKS[spec][0](data_path))
    module_name, _, attr = spec.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise TaskError(
            f"cannot import {module_name!r} for task {spec!r}: {exc}. "
            "Is the package installed, or its folder on PYTHONPATH?"
        ) from None
    factory = getattr(module, attr, None)
    if not callable(factory):
        raise TaskError(f"{module_name!r} has no callable {attr!r} for task {spec!r}.")
    try:
        task = factory()
    except (ValueError, TypeError) as exc:
        raise TaskError(f"task factory {spec!r} failed: {exc}") from None
    from autoprune.tasks._base import Task

    if not isinstance(task, Task):
        raise TaskError(
            f"task factory {spec!r} returned {type(task).__name__}; it must return "
            "autoprune.tasks.Task."
        )
    return without_aux_heads(task)


# torchvision classifiers whose training-mode forward also runs auxiliary heads:
# (class, the flag that returns them, the head attributes)
AUX_HEADS = {
    ("torchvision.models.googlenet", "GoogLeNet"): ("aux_logits", ("aux1", "aux2")),
    ("torchvision.models.inception", "Inception3"): ("aux_logits", ("AuxLogits",)),
}


def without_aux_heads(task: Task) -> Task:
    """The task with a copy of its model whose auxiliary heads are removed, if it has any.

    The heads run only in training mode, so tracing (in eval mode) never sees them:
    pruning the layers that feed them would leave them with stale input widths, and
    the fine-tune would fail on a channel mismatch. The exported model never runs them,
    so dropping them for the search loses nothing at deployment.
    """
    import copy
    import dataclasses

    key = (type(task.model).__module__, type(task.model).__name__)
    if key not in AUX_HEADS:
        return task
    flag, attrs = AUX_HEADS[key]
    present = [a for a in attrs if getattr(task.model, a, None) is not None]
    if not present:
        return task
    model = copy.deepcopy(task.model)
    setattr(model, flag, False)
    for a in present:
        setattr(model, a, None)
    ignored = tuple(n for n in task.ignored_layers if not any(n == a or n.startswith(a + ".") for a in present))
    note = (f"{key[1]}'s auxiliary heads ({', '.join(present)}) are dropped for the search: they run only in "
            "training, and the exported model never has them")
    return dataclasses.replace(task, model=model, ignored_layers=ignored, notes=(*task.notes, note))
