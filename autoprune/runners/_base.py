from __future__ import annotations

import abc
from dataclasses import dataclass
from typing import TYPE_CHECKING

from autoprune.errors import ConfigError

if TYPE_CHECKING:
    from autoprune.backends import BuildResult
    from autoprune.measure import Measurement
    from autoprune.profiles import DeviceProfile


@dataclass(frozen=True)
class RunnerResult:
    measurement: Measurement | None
    error: str | None = None


class Runner(abc.ABC):
    def check_available(self, profile: DeviceProfile) -> None:  # noqa: B027 - optional hook
        """Raise DeviceError (what is missing and how to fix it) at set-up."""

    @abc.abstractmethod
    def measure(self, build: BuildResult, profile: DeviceProfile) -> RunnerResult:
        """Time the built artifact on the device; a dead or hung run is an error, not a raise."""


def create(name: str) -> Runner:
    if name == "local":
        from autoprune.runners.local import LocalRunner

        return LocalRunner()
    if name == "rpc":
        from autoprune.runners.rpc import RpcRunner

        return RpcRunner()
    raise ConfigError(f"unknown runner {name!r}; available: local, rpc.")
