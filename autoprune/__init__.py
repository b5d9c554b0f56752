"""autoprune: find the pruned network that runs fastest on a device, by measuring it.

Example:
    >>> import autoprune
    >>> result = autoprune.search(task="digits", device="x86-ort",
    ...                           latency_budget_ms=0.05, n_trials=8)
    >>> result.front
    >>> autoprune.export_trial(result, trial=int(result.front.iloc[0]["trial"]), out="deploy/")

Imports are lazy so that ``import autoprune`` (and the timing subprocess) stays fast.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from autoprune._version import __version__  # noqa: F401 - the package's version, read as autoprune.__version__

__all__ = [
    "AutopruneError", "Device", "Metric", "SearchResult", "Split", "Task", "TrialRecord", "export_trial", "join",
    "load_profile", "load_space", "load_task", "run_package", "search", "write_report",
]

_LAZY = {
    "search": ("autoprune.search_loop", "search"),
    "join": ("autoprune.search_loop", "join"),
    "Device": ("autoprune.device", "Device"),
    "TrialRecord": ("autoprune.trials", "TrialRecord"),
    "export_trial": ("autoprune.deploy", "export_trial"),
    "SearchResult": ("autoprune.results", "SearchResult"),
    "load_profile": ("autoprune.profiles", "load_profile"),
    "load_space": ("autoprune.space", "load_space"),
    "load_task": ("autoprune.tasks", "load_task"),
    "run_package": ("autoprune.deploy", "run_package"),
    "AutopruneError": ("autoprune.errors", "AutopruneError"),
    "Task": ("autoprune.tasks", "Task"),
    "Split": ("autoprune.tasks", "Split"),
    "Metric": ("autoprune.evaluate", "Metric"),
    "write_report": ("autoprune.report", "write_report"),
}

if TYPE_CHECKING:
    from autoprune.deploy import export_trial, run_package
    from autoprune.device import Device
    from autoprune.errors import AutopruneError
    from autoprune.evaluate import Metric
    from autoprune.report import write_report
    from autoprune.profiles import load_profile
    from autoprune.results import SearchResult
    from autoprune.search_loop import join, search
    from autoprune.space import load_space
    from autoprune.tasks import Split, Task, load_task
    from autoprune.trials import TrialRecord


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        module, attr = _LAZY[name]
        return getattr(importlib.import_module(module), attr)
    raise AttributeError(f"module 'autoprune' has no attribute {name!r}")
