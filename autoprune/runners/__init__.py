"""Runners know *where* timing happens: ``local`` (an isolated subprocess on this
machine) or ``rpc`` (a board reached through a TVM RPC tracker).

A runner takes a built artifact (by path) and returns a typed
:class:`~autoprune.runners.RunnerResult` whose kind says what happened: measured, the
candidate failed, the timing timed out, the device was lost or could not be reached.
Runners are registered by name, as the ``runner:`` key of a device profile names them;
implementations are imported only when created.

Example:
    >>> from autoprune import runners
    >>> runners.available()
    ['local', 'rpc']
    >>> runner = runners.create("local")
"""

from __future__ import annotations

import importlib

from autoprune.errors import ConfigError
from autoprune.runners._base import Runner
from autoprune.runners._protocol import ResultKind, RunnerResult

__all__ = ["ResultKind", "Runner", "RunnerResult", "available", "create", "register"]

# name -> "module:Class"; a string so that registering costs no import
_REGISTRY: dict[str, str] = {
    "local": "autoprune.runners.local:LocalRunner",
    "rpc": "autoprune.runners.rpc:RpcRunner",
}


def register(name: str, target: str) -> None:
    """Register a runner class, given as ``"package.module:Class"``, under ``name``."""
    if ":" not in target:
        raise ConfigError(f"runner {name!r}: give the class as 'package.module:Class', got {target!r}.")
    _REGISTRY[name] = target


def available() -> list[str]:
    return sorted(_REGISTRY)


def create(name: str) -> Runner:
    """A new runner of the registered ``name``.

    Raises:
        ConfigError: no runner of that name.
    """
    if name not in _REGISTRY:
        raise ConfigError(f"unknown runner {name!r}; available: {', '.join(available())}.")
    module, _, cls = _REGISTRY[name].partition(":")
    runner = getattr(importlib.import_module(module), cls)()
    if not isinstance(runner, Runner):
        raise ConfigError(f"runner {name!r} ({_REGISTRY[name]}) is not an autoprune Runner.")
    return runner
