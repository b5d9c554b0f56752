"""Device profiles: where and how a candidate is timed, loaded from device_profiles/*.yaml.

A profile names a backend (what artifact is built) and a runner (where it is timed),
the input batch size, backend settings and the measurement protocol. Its ``hash``
covers everything that can change a latency figure, so it keys the measurement cache.

Example:
    >>> from autoprune.profiles import load_profile
    >>> load_profile("x86-ort").backend
    'onnxruntime'
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from autoprune._config import load_named, repo_dir, stable_hash

PROFILES_ENV = "AUTOPRUNE_PROFILES_DIR"


@dataclass(frozen=True)
class MeasureConfig:
    """The measurement protocol (see ``measure.py``).

    Timing runs in batches of ``min_repeats`` until the 95% confidence interval of the
    median is within ``target_ci`` of it, or ``max_repeats`` / ``max_seconds`` is hit.
    A result whose CV exceeds ``max_cv`` or misses the CI target is measured again, up
    to ``noise_retries`` times, before it is recorded as noisy. The whole protocol runs
    in ``sessions`` separate processes and the median of their medians is recorded; a
    spread between them above ``max_spread`` also marks the result noisy.
    ``timeout_s`` and ``memory_limit_mb`` limit each process.
    """

    warmup: int = 10
    min_repeats: int = 50
    max_repeats: int = 2000
    target_ci: float = 0.02
    max_seconds: float = 3.0
    max_cv: float = 0.15
    noise_retries: int = 2
    timeout_s: float = 120.0
    sessions: int = 3
    max_spread: float = 0.15
    memory_limit_mb: int | None = 4096  # address-space cap of a timing process; null = none
    cache: bool = True  # reuse a latency for an architecture already timed in the study


    def __post_init__(self) -> None:
        if self.warmup < 0:
            raise ValueError(f"`warmup >= 0` must hold, but got warmup={self.warmup}.")
        if not 5 <= self.min_repeats <= self.max_repeats:
            raise ValueError(
                "`5 <= min_repeats <= max_repeats` must hold, but got "
                f"(min_repeats={self.min_repeats}, max_repeats={self.max_repeats})."
            )
        for name in ("target_ci", "max_seconds", "max_cv", "timeout_s"):
            if getattr(self, name) <= 0:
                raise ValueError(f"`{name} > 0` must hold, but got {getattr(self, name)}.")
        if self.sessions < 1 or self.max_spread <= 0:
            raise ValueError(
                f"`sessions >= 1` and `max_spread > 0` must hold, but got "
                f"(sessions={self.sessions}, max_spread={self.max_spread})."
            )
        if self.memory_limit_mb is not None and self.memory_limit_mb < 256:
            raise ValueError(f"`memory_limit_mb >= 256` must hold, but got {self.memory_limit_mb}.")
        if self.noise_retries < 0:
            raise ValueError(f"`noise_retries >= 0` must hold, but got {self.noise_retries}.")


@dataclass(frozen=True)
class OrtSettings:
    """ONNX Runtime session settings used both to build and to time a model."""

    providers: tuple[str, ...] = ("CPUExecutionProvider",)
    intra_op_threads: int = 1
    inter_op_threads: int = 1
    graph_optimization_level: Literal["disable", "basic", "extended", "all"] = "all"

    def __post_init__(self) -> None:
        if not self.providers:
            raise ValueError("`providers` must name at least one execution provider.")
        if self.intra_op_threads < 0 or self.inter_op_threads < 0:
            raise ValueError("thread counts must be >= 0 (0 lets ONNX Runtime choose).")


@dataclass(frozen=True)
class DeviceProfile:
    """One measurement target. Load with :func:`load_profile`."""

    name: str
    description: str
    backend: Literal["onnxruntime"]
    runner: Literal["local"] = "local"
    batch_size: int = 1
    onnxruntime: OrtSettings = field(default_factory=OrtSettings)
    measurement: MeasureConfig = field(default_factory=MeasureConfig)
    version: int = 1

    def __post_init__(self) -> None:
        if self.batch_size < 1:
            raise ValueError(f"`batch_size >= 1` must hold, but got {self.batch_size}.")
        if self.version != 1:
            raise ValueError(f"unsupported profile version {self.version}; this autoprune reads 1.")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @property
    def hash(self) -> str:
        """sha256 of everything that can change a latency figure (not the description)."""
        data = self.to_dict()
        data.pop("description")
        return stable_hash(data)


def profiles_dir() -> Path:
    return repo_dir("device_profiles", PROFILES_ENV)


def available_profiles() -> dict[str, Path]:
    """Profile name -> file, for every YAML file in the profiles folder."""
    folder = profiles_dir()
    return {p.stem: p for p in sorted(folder.glob("*.yaml"))} if folder.is_dir() else {}


def load_profile(name_or_path: str | Path) -> DeviceProfile:
    """Load a profile by name (``x86-ort``) or by the path of a YAML file.

    Raises:
        ConfigError: unknown name (the known ones are listed) or a malformed file.
    """
    return load_named(
        DeviceProfile, name_or_path, available_profiles(), "device profile",
        " List them with `autoprune devices`.",
    )
