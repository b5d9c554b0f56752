"""Fault injection for tests: make a chosen stage of a chosen trial fail for real.

Production code knows nothing of faults. It announces its stages as audit events
(PEP 578), which cost nothing while no hook listens:

- ``autoprune.trial(number)``: a trial starts (``-1``: it ended);
- ``autoprune.stage(name)``: prune, recover, screen, evaluate, export, build, measure;
- ``autoprune.results(number)``: a trial's results were stored;
- ``autoprune.device(tag)``: a timing process (or a device server's session) is about
  to time an artifact for ``tag`` (``trial 3``).

:func:`install` adds a hook that acts on them when ``AUTOPRUNE_FAULT`` lists
``KIND@STAGE#TRIAL`` items, e.g. ``kill@recover#3`` (the search process SIGKILLs
itself when trial 3 starts recovery) or ``segv@device#2`` (trial 2's timing process
dies of a real segmentation fault). Kinds: ``kill`` (SIGKILL), ``segv`` (a NULL
dereference), ``hang`` (sleeps forever), ``oom`` (allocates until the memory limit
stops it), ``raise`` (RuntimeError).

Subprocesses (the timing process, the CLI run by a test, a device server a test
starts) install the hook at start-up through :data:`SITE_DIR`'s ``sitecustomize``,
when :func:`environ` put it on their ``PYTHONPATH``.

Example:
    >>> from autoprune.testing import faults
    >>> faults.install()
    >>> os.environ.update(faults.environ("segv@device#1"))
"""

from __future__ import annotations

import os
import re
import sys
from pathlib import Path

FAULT_ENV = "AUTOPRUNE_FAULT"
TRIAL_ENV = "AUTOPRUNE_FAULT_TRIAL"  # the trial the search process works on, for its children
SITE_DIR = Path(__file__).parent / "_site"
_installed = False


def environ(spec: str | None = None) -> dict[str, str]:
    """Environment variables that make subprocesses install the hook (and set ``spec``)."""
    path = os.environ.get("PYTHONPATH", "")
    env = {"PYTHONPATH": path if str(SITE_DIR) in path.split(os.pathsep) else
           os.pathsep.join(p for p in (str(SITE_DIR), path) if p)}
    if spec is not None:
        env[FAULT_ENV] = spec
    return env


def install() -> None:
    """Listen to autoprune's audit events in this process (once; cannot be removed)."""
    global _installed
    if not _installed:
        sys.addaudithook(_hook)
        _installed = True


def _hook(event: str, args: tuple) -> None:
    if not event.startswith("autoprune."):
        return
    spec = os.environ.get(FAULT_ENV)
    if event == "autoprune.trial":
        # children (timing processes) inherit the number through the environment
        os.environ[TRIAL_ENV] = str(args[0])
        return
    if not spec:
        return
    if event == "autoprune.stage":
        _maybe(spec, args[0], int(os.environ.get(TRIAL_ENV, -1)))
    elif event == "autoprune.results":
        _maybe(spec, "results", int(args[0]))
    elif event == "autoprune.device":
        found = re.fullmatch(r"trial (\d+)", str(args[0]))
        _maybe(spec, "device", int(found.group(1)) if found else int(os.environ.get(TRIAL_ENV, -1)))


def _maybe(spec: str, stage: str, trial: int) -> None:
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
