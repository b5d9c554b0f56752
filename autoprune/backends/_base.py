from __future__ import annotations

import abc
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import numpy as np

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
    """Builds an artifact from ONNX on the host, loads it to run, and times it on a device.

    ``on_host`` tells a backend whether the artifact will run on this machine (the
    ``local`` runner) or on another one (``rpc``): a build for this machine may use
    its CPU's own layouts and check its output here; one for a board may not.
    """

    name: str

    def check_available(self, profile: DeviceProfile, *, on_host: bool = True) -> None:  # noqa: B027
        """Raise BackendError (what was asked, what is available, how to fix) at set-up."""

    @abc.abstractmethod
    def build(self, onnx: OnnxArtifact, profile: DeviceProfile, out_dir: Path, *,
              on_host: bool = True) -> BuildResult:
        """Build the deployable artifact into ``out_dir``; never raises for a bad candidate."""

    @abc.abstractmethod
    def time(self, artifact_path: str, profile: DeviceProfile) -> Measurement:
        """Load the artifact and time it under ``profile.measurement`` (device side)."""

    @abc.abstractmethod
    def load(self, artifact_path: str | Path, profile: DeviceProfile,
             runtime: Mapping[str, Any] | None = None) -> Callable[[np.ndarray], list[np.ndarray]]:
        """Load the artifact to run it here: numpy input in, every output out (a list, in
        the ONNX file's order).

        ``runtime`` is what :meth:`runtime_info` recorded when it was built (a deploy
        package's manifest), if known.

        Raises:
            BackendError: the artifact cannot run on this machine (the message says where it can).
        """

    def runs_here(self, profile: DeviceProfile) -> bool:
        """Can this machine load what :meth:`build` makes for ``profile``?"""
        return True

    def runtime_info(self, built: BuildResult, profile: DeviceProfile) -> dict[str, Any]:
        """What a deploy manifest records about the artifact beyond its file (JSON-friendly)."""
        return {}
