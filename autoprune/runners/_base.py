from __future__ import annotations

import abc
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from autoprune.profiles import DeviceProfile
    from autoprune.runners._protocol import RunnerResult


class Runner(abc.ABC):
    """Times a built artifact on a device and says what that device is.

    A runner never raises for a bad candidate or a lost device: it returns a
    :class:`~autoprune.runners.RunnerResult` whose kind says what happened.
    """

    name: str
    # Does the artifact run on this machine? A backend may then build for this CPU
    # alone (ONNX Runtime's NCHWc layouts) and check the build's output here.
    on_host: bool = True

    def check_available(self, profile: DeviceProfile) -> None:  # noqa: B027 - optional hook
        """Raise DeviceError (what is missing and how to fix it) at set-up."""

    @abc.abstractmethod
    def measure(self, artifact_path: str, profile: DeviceProfile, *, tag: str = "") -> RunnerResult:
        """Time the artifact under ``profile.measurement``; ``tag`` names the work (``trial 3``)."""

    @abc.abstractmethod
    def describe(self, profile: DeviceProfile) -> tuple[str, dict[str, Any]]:
        """Where the device is, in words, and what it is (CPU, ISA, cores, runtime versions).

        Raises:
            DeviceError: the device cannot be reached.
        """
