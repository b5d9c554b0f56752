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

from autoprune._registry import Registry
from autoprune.runners._base import Runner
from autoprune.runners._protocol import ResultKind, RunnerResult

__all__ = ["ResultKind", "Runner", "RunnerResult", "available", "create", "register"]

_registry: Registry[Runner] = Registry("runner", Runner, {
    "local": "autoprune.runners.local:LocalRunner",
    "rpc": "autoprune.runners.rpc:RpcRunner",
})
register = _registry.register
available = _registry.available
create = _registry.create
