"""Fault injection: make a chosen stage of a chosen trial fail for real.

Set ``AUTOPRUNE_FAULT`` to a comma-separated list of ``KIND@STAGE#TRIAL`` items, e.g.
``kill@recover#3`` (the search process SIGKILLs itself when trial 3 starts recovery)
or ``segv@device#2`` (trial 2's timing process dies of a real segmentation fault).

Kinds: ``kill`` (SIGKILL), ``segv`` (a NULL dereference), ``hang`` (sleeps forever),
``oom`` (allocates until the memory limit stops it), ``raise`` (RuntimeError).
Stages: prune, recover, evaluate, export, build, measure and results in the search
process; ``device`` in the timing process. Unset, this costs one dictionary lookup.
"""

from __future__ import annotations

import os

FAULT_ENV = "AUTOPRUNE_FAULT"
TRIAL_ENV = "AUTOPRUNE_FAULT_TRIAL"  # the trial a timing process works for
_current_trial = -1


def set_trial(number: int) -> None:
    """Record the trial being evaluated (the runner passes it to the timing process)."""
    global _current_trial
    _current_trial = number


def child_env() -> dict[str, str]:
    return {TRIAL_ENV: str(_current_trial)} if os.environ.get(FAULT_ENV) else {}


def inject(stage: str, trial: int | None = None) -> None:
    spec = os.environ.get(FAULT_ENV)
    if not spec:
        return
    if trial is None:
        trial = int(os.environ.get(TRIAL_ENV, _current_trial))
    for item in spec.split(","):
        kind, _, rest = item.strip().partition("@")
        where, _, number = rest.partition("#")
        if where == stage and (not number or int(number) == trial):
            _act(kind)


def _act(kind: str) -> None:
    import signal
    import time

    if kind == "kill":
        os.kill(os.getpid(), signal.SIGKILL)
    elif kind == "segv":
        import ctypes

        ctypes.string_at(0)  # reads address 0: a real SIGSEGV
    elif kind == "hang":
        time.sleep(10**6)
    elif kind == "oom":
        hog = []
        while True:
            hog.append(bytearray(256 << 20))
    elif kind == "raise":
        raise RuntimeError("injected fault")
    else:
        raise ValueError(f"unknown fault kind {kind!r}")
