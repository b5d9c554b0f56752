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
        return BUILTIN_TASKS[spec][0](data_path)
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
    return task
