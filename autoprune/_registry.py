"""A registry of plug-in classes by name (backends, runners), imported only when created."""

from __future__ import annotations

import importlib
from typing import Generic, TypeVar

from autoprune.errors import ConfigError

T = TypeVar("T")


class Registry(Generic[T]):
    """Names to ``"package.module:Class"`` strings, so that registering costs no import."""

    def __init__(self, kind: str, base: type[T], entries: dict[str, str]) -> None:
        self.kind, self.base, self._entries = kind, base, dict(entries)

    def register(self, name: str, target: str) -> None:
        """Register a class, given as ``"package.module:Class"``, under ``name``."""
        if ":" not in target:
            raise ConfigError(f"{self.kind} {name!r}: give the class as 'package.module:Class', got {target!r}.")
        self._entries[name] = target

    def available(self) -> list[str]:
        return sorted(self._entries)

    def create(self, name: str) -> T:
        """A new instance of the class registered as ``name``.

        Raises:
            ConfigError: nothing is registered under that name, or it is not a ``base``.
        """
        if name not in self._entries:
            raise ConfigError(f"unknown {self.kind} {name!r}; available: {', '.join(self.available())}.")
        module, _, cls = self._entries[name].partition(":")
        made = getattr(importlib.import_module(module), cls)()
        if not isinstance(made, self.base):
            raise ConfigError(f"{self.kind} {name!r} ({self._entries[name]}) is not an autoprune "
                              f"{self.base.__name__}.")
        return made
