from __future__ import annotations

import abc
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from autoprune.errors import ConfigError

if TYPE_CHECKING:
    from autoprune.export import OnnxArtifact
    from autoprune.measure import Measurement
    from autoprune.profiles import DeviceProfile


@dataclass(frozen=True)
class BuildResult:
    """The built artifact (passed to the runner by path) or the reason there is none."""

    artifact_path: str | None
    error: str | None = None
    build_s: float = 0.0
    # what the build did, flat and JSON-friendly (TVM: tasks, reused, tuned, seconds);
    # recorded on the trial as ``build_<key>`` attributes
    info: dict[str, Any] = field(default_factory=dict)


class Backend(abc.ABC):
    """Builds an artifact from ONNX on the host, and times a loaded artifact on a device."""

    name: str

    def check_available(self, profile: DeviceProfile) -> None:  # noqa: B027 - optional hook
        """Raise BackendError (what was asked, what is available, how to fix) at set-up."""

    @abc.abstractmethod
    def build(self, onnx: OnnxArtifact, profile: DeviceProfile, out_dir: Path) -> BuildResult:
        """Build the deployable artifact into ``out_dir``; never raises for a bad candidate."""

    @abc.abstractmethod
    def time(self, artifact_path: str, profile: DeviceProfile) -> Measurement:
        """Load the artifact and time it under ``profile.measurement`` (device side)."""


def create(name: str) -> Backend:
    if name == "onnxruntime":
        from autoprune.backends.onnxruntime import OrtBackend

        return OrtBackend()
    if name == "tvm":
        from autoprune.backends.tvm import TvmBackend

        return TvmBackend()
    raise ConfigError(f"unknown backend {name!r}; available: onnxruntime, tvm.")
