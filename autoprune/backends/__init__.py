"""Backends know *what* a candidate's artifact is: how to build it and how to time it.

A backend builds an artifact from an exported ONNX model for a device profile (on the
host), loads one to run it, and times a loaded one (on the device). Where the timing
happens is a runner's business (:mod:`autoprune.runners`); a
:class:`~autoprune.device.Device` pairs the two.

Backends are registered by name, as the ``backend:`` key of a device profile names
them. Implementations are imported only when created, so ``import autoprune.backends``
pulls in neither ONNX Runtime nor TVM.

Example:
    >>> from autoprune import backends
    >>> backends.available()
    ['onnxruntime', 'tvm']
    >>> backend = backends.create("onnxruntime")
"""

from __future__ import annotations

import importlib

from autoprune.backends._base import Backend, BuildResult
from autoprune.errors import ConfigError

__all__ = ["Backend", "BuildResult", "available", "create", "register"]

# name -> "module:Class"; a string so that registering costs no import
_REGISTRY: dict[str, str] = {
    "onnxruntime": "autoprune.backends.onnxruntime:OrtBackend",
    "tvm": "autoprune.backends.tvm:TvmBackend",
}


def register(name: str, target: str) -> None:
    """Register a backend class, given as ``"package.module:Class"``, under ``name``."""
    if ":" not in target:
        raise ConfigError(f"backend {name!r}: give the class as 'package.module:Class', got {target!r}.")
    _REGISTRY[name] = target


def available() -> list[str]:
    return sorted(_REGISTRY)


def create(name: str) -> Backend:
    """A new backend of the registered ``name``.

    Raises:
        ConfigError: no backend of that name.
    """
    if name not in _REGISTRY:
        raise ConfigError(f"unknown backend {name!r}; available: {', '.join(available())}.")
    module, _, cls = _REGISTRY[name].partition(":")
    backend = getattr(importlib.import_module(module), cls)()
    if not isinstance(backend, Backend):
        raise ConfigError(f"backend {name!r} ({_REGISTRY[name]}) is not an autoprune Backend.")
    return backend
