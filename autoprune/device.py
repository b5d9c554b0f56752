"""A device: a profile, the backend that builds for it, the runner that times on it.

Everything that measures goes through :meth:`Device.measure`: the search's trials, the
further devices of a multi-device search, ``finalize``'s paired re-timing, the budget
check, the benchmarks and ``autoprune devices check``. What is built is the backend's
business and where it runs is the runner's; a Device only pairs them, so no code
outside :mod:`autoprune.backends` and :mod:`autoprune.runners` needs to know which
ones it holds.

Example:
    >>> from autoprune.device import Device
    >>> device = Device.open("x86-ort")
    >>> device.measure(onnx_artifact, work_dir).measurement.median_ms
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from autoprune.measure import Measurement, MeasurementCache
from autoprune.runners import ResultKind
from autoprune.trials import FailStage, TrialFailure

if TYPE_CHECKING:
    import numpy as np

    from autoprune.backends import Backend, BuildResult
    from autoprune.export import OnnxArtifact
    from autoprune.profiles import DeviceProfile
    from autoprune.runners import Runner

Stage = Callable[[str], AbstractContextManager[Any]]


@dataclass(frozen=True)
class DeviceMeasurement:
    """One candidate's latency on a device, and what building it took."""

    measurement: Measurement
    cached: bool  # taken from the measurement cache, not timed now
    build_info: dict[str, Any] = field(default_factory=dict)  # BuildResult.info; empty when cached
    build_s: float = 0.0


@dataclass(frozen=True)
class Device:
    """A device profile with its backend and runner (``budget_ms``: this device's budget, if any)."""

    profile: DeviceProfile
    backend: Backend
    runner: Runner
    budget_ms: float | None = None

    @classmethod
    def open(cls, name_or_path: str | Path, budget_ms: float | None = None, *, check: bool = True,
             fresh: bool = False, final: bool = False) -> Device:
        """Load a profile and create its backend and runner.

        Args:
            check: run the backend's and runner's set-up checks (installed runtime,
                reachable tracker) now.
            fresh: never use the measurement cache (re-timing is the point).
            final: build as ``finalize`` does (TVM: tuned harder, see
                :meth:`DeviceProfile.for_finalize`).

        Raises:
            AutopruneError: unknown profile, missing runtime, unreachable device.
        """
        from autoprune.profiles import load_profile

        profile = load_profile(name_or_path)
        if fresh:
            profile = dataclasses.replace(profile, measurement=dataclasses.replace(profile.measurement, cache=False))
        if final:
            profile = profile.for_finalize()
        device = cls.of(profile, budget_ms)
        if check:
            device.check_available()
        return device

    @classmethod
    def of(cls, profile: DeviceProfile, budget_ms: float | None = None) -> Device:
        """The device of a loaded (or modified) profile, with the backend and runner it names."""
        from autoprune import backends, runners

        return cls(profile, backends.create(profile.backend), runners.create(profile.runner), budget_ms)

    @property
    def name(self) -> str:
        return self.profile.name

    def check_available(self) -> None:
        self.backend.check_available(self.profile, on_host=self.runner.on_host)
        self.runner.check_available(self.profile)

    def cache_key(self, onnx: OnnxArtifact) -> str:
        return MeasurementCache.key(onnx.arch_hash, self.backend.name, self.profile.hash)

    def build(self, onnx: OnnxArtifact, out_dir: Path) -> BuildResult:
        Path(out_dir).mkdir(parents=True, exist_ok=True)
        return self.backend.build(onnx, self.profile, Path(out_dir), on_host=self.runner.on_host)

    def measure(self, onnx: OnnxArtifact, work_dir: Path, *, cache: MeasurementCache | None = None,
                tag: str = "", stage: Stage | None = None) -> DeviceMeasurement:
        """Build and time an exported model, or take its latency from ``cache``.

        ``stage(name)`` wraps the build and the timing (the objective times and limits
        its stages with it); ``tag`` names the work for the device (``trial 3``).

        Raises:
            TrialFailure: at stage ``build`` or ``measure``, with the reason; a device
                lost during the timing says so (``device_lost``).
        """
        stage = stage or _no_stage
        key = self.cache_key(onnx)
        cached = cache.get(key) if cache is not None and self.profile.measurement.cache else None
        if cached is not None:
            return DeviceMeasurement(cached, True)
        with stage(FailStage.BUILD.value):
            built = self.build(onnx, work_dir)
            if built.error or built.artifact_path is None:
                raise TrialFailure(FailStage.BUILD, built.error or "the build produced no artifact")
        with stage(FailStage.MEASURE.value):
            result = self.runner.measure(built.artifact_path, self.profile, tag=tag)
            if not result.ok or result.measurement is None:
                raise TrialFailure(FailStage.MEASURE, result.error or "no measurement",
                                   device_lost=result.kind is ResultKind.DEVICE_LOST)
        Path(built.artifact_path).unlink(missing_ok=True)  # rebuilt on export; saves disk
        if cache is not None and self.profile.measurement.cache:
            cache.put(key, result.measurement)
        return DeviceMeasurement(result.measurement, False, dict(built.info), built.build_s)

    def describe(self) -> tuple[str, dict[str, Any]]:
        """Where the device is, in words, and what it is (asked of the device itself)."""
        return self.runner.describe(self.profile)

    def runs_here(self) -> bool:
        """Can this machine run what the backend builds for the device?"""
        return self.backend.runs_here(self.profile)

    def load(self, artifact_path: str | Path,
             runtime: dict[str, Any] | None = None) -> Callable[[np.ndarray], list[np.ndarray]]:
        """Load a built artifact to run it here (numpy in, every output out, a list)."""
        return self.backend.load(artifact_path, self.profile, runtime)


def _no_stage(name: str) -> AbstractContextManager[Any]:
    return contextlib.nullcontext()
