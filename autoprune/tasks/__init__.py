"""Tasks: a model, an example input, train/validation data and a metric.

``load_task(spec)`` accepts a built-in name (``fashion-mnist``, ``digits``) or a user
factory ``package.module:factory`` that returns a :class:`Task`.

Example:
    >>> from autoprune.tasks import load_task
    >>> task = load_task("digits")
    >>> task.input_shape
    (1, 8, 8)
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__all__ = ["BUILTIN_TASKS", "Split", "Task", "load_task"]

if TYPE_CHECKING:
    from autoprune.tasks._base import Split, Task
    from autoprune.tasks._loader import BUILTIN_TASKS, load_task


def __getattr__(name: str) -> Any:
    # Lazy: checking a task name must not cost the multi-second torch import.
    if name in ("Split", "Task"):
        from autoprune.tasks import _base

        return getattr(_base, name)
    if name in ("BUILTIN_TASKS", "load_task"):
        from autoprune.tasks import _loader

        return getattr(_loader, name)
    raise AttributeError(f"module 'autoprune.tasks' has no attribute {name!r}")
