"""Typed errors for problems found at set-up time.

Errors raised here are user-facing: the CLI prints their message (no traceback) and
exits with code 2. Problems inside the search loop are *not* raised as these; they
become failed trials with a stage and a reason (see ``objective.py``).
"""

from __future__ import annotations


class AutopruneError(Exception):
    """Base class: a problem the user can fix. The message says what and how."""


class ConfigError(AutopruneError):
    """A profile, search-space or command-line value is malformed or unknown."""


class TaskError(AutopruneError):
    """A task cannot be built: unknown name, bad factory, missing data."""


class DataError(TaskError):
    """A dataset is missing or unreadable."""


class MetricError(TaskError):
    """A task's metric returned something other than one finite number."""


class SetupError(TaskError):
    """The model cannot be traced for pruning: Torch-Pruning failed, or took more time
    or memory than set-up is allowed."""


class StudyError(AutopruneError):
    """A results directory or storage holds something other than what was asked for."""


class BudgetError(AutopruneError):
    """The latency budget cannot be met by any candidate of the search space."""


class ExportError(AutopruneError):
    """A trial cannot be exported as a deploy package."""


class PackageError(AutopruneError):
    """A deploy package is incomplete or was tampered with."""


class BackendError(AutopruneError):
    """A backend or its runtime provider is not available on this machine."""


def first_line(exc: BaseException) -> str:
    """The first line of an exception's message ("" if it has none): library messages
    can run to pages (a traced graph, a stack), and a user-facing line quotes one."""
    lines = str(exc).strip().splitlines()
    return lines[0] if lines else ""


def did_you_mean(name: str, known: list[str]) -> str:
    """Return ' Known: a, b, c.' plus a close match if there is one."""
    import difflib

    close = difflib.get_close_matches(name, known, n=1)
    hint = f" Did you mean {close[0]!r}?" if close else ""
    return f"{hint} Known: {', '.join(sorted(known)) or '(none)'}."


class DeviceError(AutopruneError):
    """A remote device (or its RPC tracker) cannot be reached, or answers wrongly."""
