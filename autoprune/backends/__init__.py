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

from autoprune._registry import Registry
from autoprune.backends._base import Backend, BuildResult

__all__ = ["Backend", "BuildResult", "available", "create", "register"]

_registry: Registry[Backend] = Registry("backend", Backend, {
    "onnxruntime": "autoprune.backends.onnxruntime:OrtBackend",
    "tvm": "autoprune.backends.tvm:TvmBackend",
})
register = _registry.register
available = _registry.available
create = _registry.create
