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
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from autoprune._config import data_dir, load_named, stable_hash

# the numeric precisions a candidate can have (autoprune.quantize makes all but float32);
# here, with the profiles that say which a device runs, so config never imports a stage
PRECISIONS = ("float32", "int8", "int8-dynamic", "float16")

PROFILES_ENV = "AUTOPRUNE_PROFILES_DIR"


@dataclass(frozen=True)
class MeasureConfig:
    """The measurement protocol (see ``measure.py``).

    Timing runs in batches of ``min_repeats`` until the 95% confidence interval of the
    median is within ``target_ci`` of it, or ``max_repeats`` / ``max_seconds`` is hit.
    A result whose CV (robust: the interquartile range over 1.349, over the median;
    ``autoprune.measure.robust_cv``) exceeds ``max_cv`` or misses the CI target is measured again, up
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
    # bind the input on the provider's device once and leave outputs there, so a GPU's
    # host-device copies are not timed (CPU: no difference)
    io_binding: bool = False

    def __post_init__(self) -> None:
        if not self.providers:
            raise ValueError("`providers` must name at least one execution provider.")
        if self.intra_op_threads < 0 or self.inter_op_threads < 0:
            raise ValueError("thread counts must be >= 0 (0 lets ONNX Runtime choose).")

    @property
    def threads(self) -> int:
        return max(1, self.intra_op_threads)


@dataclass(frozen=True)
class TuningSettings:
    """MetaSchedule tuning done while building each candidate (TVM on a CPU).

    Records go to a database shared by every candidate (and every study) built for the
    same resolved target, so a layer shape tuned once is not tuned again: candidates of
    one search share most shapes when ``round_to`` keeps channel counts to a small set.
    A task counts as tuned once the database holds ``trials_per_task`` measured
    schedules of it; a candidate tops up its untuned tasks, the largest first, with at
    most ``max_trials`` trials in all (MetaSchedule's gradient task scheduler shares
    them out); tasks the budget does not reach keep TVM's default schedule.
    ``max_trials: 0`` turns tuning off: whatever the database holds is still applied.
    ``finalize`` tunes each front member harder: every task up to
    ``final_trials_per_task`` (at most ``final_max_trials`` trials a member), so the
    deployed library is the well-tuned one. On a board (the ``rpc`` runner) the
    schedules are cross-compiled here and measured on the board through the tracker.
    """

    max_trials: int = 64
    trials_per_task: int = 8
    final_trials_per_task: int = 32
    final_max_trials: int = 2048
    # "evolutionary": MetaSchedule's evolutionary search with its XGBoost cost model
    strategy: Literal["evolutionary", "replay-trace"] = "evolutionary"
    # candidates the cost model ranks per round (the search samples them on every core);
    # at 8 trials a task 512 against 64 took 2.4x the tuning time for 1-25% lower
    # latency, varying between runs (results/benchmarks/tvm_vs_ort.md)
    population: int = 512
    # weights stored in the blocked layout the tuned kernel reads, rewritten once at
    # build time (MetaSchedule's RewriteLayout + Relax's SplitLayoutRewritePreproc)
    prepack_weights: bool = True
    round_to: int = 1  # channel multiple this device's candidates keep (fewer shapes: more reuse)
    database: str | None = None  # a folder; null = $AUTOPRUNE_CACHE/tvm-tuning/<target key>
    builder_timeout_s: float = 120.0
    runner_timeout_s: float = 60.0  # one schedule's measurement (on a board: its RPC session)

    def __post_init__(self) -> None:
        if self.max_trials < 0 or self.trials_per_task < 1 or self.final_trials_per_task < 1 \
                or self.final_max_trials < 0:
            raise ValueError(
                f"`max_trials >= 0`, `final_max_trials >= 0`, `trials_per_task >= 1` and "
                f"`final_trials_per_task >= 1` must hold, but got (max_trials={self.max_trials}, "
                f"trials_per_task={self.trials_per_task}, final_max_trials={self.final_max_trials}, "
                f"final_trials_per_task={self.final_trials_per_task})."
            )
        if self.population < 8:
            raise ValueError(f"`population >= 8` must hold, but got {self.population}.")
        if self.round_to < 1:
            raise ValueError(f"`round_to >= 1` must hold, but got {self.round_to}.")

    def for_finalize(self) -> TuningSettings:
        """The budget a finalized front member (and its paired baseline) is tuned with."""
        return dataclasses.replace(self, trials_per_task=max(self.trials_per_task, self.final_trials_per_task),
                                   max_trials=self.final_max_trials if self.max_trials else 0)


@dataclass(frozen=True)
class TvmSettings:
    """How Apache TVM builds a candidate: target, threads, cross compiler, tuning.

    ``target`` is a TVM target as a mapping (TVM 0.27 refuses ``"llvm -mcpu=..."``
    strings); ``mcpu: host`` is replaced by this machine's CPU when building.
    ``num-cores`` is set to ``num_threads`` unless given, since MetaSchedule needs it and
    the tuned schedules should use the threads the timing uses.
    """

    target: dict[str, Any] = field(default_factory=lambda: {"kind": "llvm", "mcpu": "host"})
    num_threads: int = 1
    cross_compiler: str | None = None  # e.g. aarch64-linux-gnu-gcc; null = the host's compiler
    gpu_schedule: Literal["dlight"] = "dlight"  # GPU kernels: dlight's default GPU rules
    # CPU convolutions in channels-last: MetaSchedule vectorises over channels (multiples
    # of 16 with round_to) instead of rows of 7-28 pixels; half the latency of NCHW at the
    # same budget on the reference model (results/benchmarks/tvm_vs_ort.md). Transposes
    # are added only at the model's edges.
    layout: Literal["NHWC", "NCHW"] = "NHWC"
    tuning: TuningSettings = field(default_factory=TuningSettings)
    parity_atol: float = 1e-3  # max |TVM - ONNX Runtime| (plus parity_rtol x max |ORT|)
    parity_rtol: float = 1e-3

    def __post_init__(self) -> None:
        if not isinstance(self.target, dict) or not isinstance(self.target.get("kind"), str):
            raise ValueError("`target` must be a mapping with a `kind` (llvm, cuda, ...).")
        if self.num_threads < 1:
            raise ValueError(f"`num_threads >= 1` must hold, but got {self.num_threads}.")
        if self.parity_atol < 0 or self.parity_rtol < 0:
            raise ValueError("`parity_atol` and `parity_rtol` must be >= 0.")

    @property
    def threads(self) -> int:
        return self.num_threads


@dataclass(frozen=True)
class RpcSettings:
    """Where the ``rpc`` runner finds the device: a TVM RPC tracker and a device key.

    Boards register with the tracker under ``key`` (``autoprune device-server``); the
    runner asks the tracker for a free one, so several boards of one kind share a queue.
    ``$AUTOPRUNE_TRACKER`` (HOST:PORT) and ``$AUTOPRUNE_DEVICE_KEY`` override the file, so
    one profile serves every farm. Neither is part of the profile's hash: where the board
    is does not change what it measures.
    """

    key: str
    tracker: str = "127.0.0.1:9190"
    queue_timeout_s: float = 300.0  # wait this long for a free device before failing the trial
    retries: int = 3  # a tracker or device that cannot be reached is tried again this often...
    backoff_s: float = 5.0  # ...after 5, 10, 20 s

    def __post_init__(self) -> None:
        if not self.key:
            raise ValueError("`key` must name the device key the boards register under.")
        self.address(self.tracker)
        if self.queue_timeout_s <= 0 or self.retries < 0 or self.backoff_s < 0:
            raise ValueError("`queue_timeout_s > 0`, `retries >= 0` and `backoff_s >= 0` must hold.")

    @staticmethod
    def address(text: str) -> tuple[str, int]:
        host, sep, port = text.rpartition(":")
        if not sep or not host or not port.isdigit():
            raise ValueError(f"tracker address {text!r} must be HOST:PORT, e.g. 127.0.0.1:9190.")
        return host, int(port)

    def resolved(self) -> tuple[str, int, str]:
        """(tracker host, tracker port, key) after the environment overrides."""

        tracker = os.environ.get("AUTOPRUNE_TRACKER") or self.tracker
        return (*self.address(tracker), os.environ.get("AUTOPRUNE_DEVICE_KEY") or self.key)


@dataclass(frozen=True)
class Int8Settings:
    """How this device's INT8 candidates are quantized: ONNX Runtime's QDQ format,
    ``activation_type`` / ``weight_type`` as its kernels run fastest here (on x86 with
    VNNI, uint8 activations with int8 weights; int8 x int8 was slower than float32 in
    ``results/benchmarks/int8.md``), per-channel weight scales. ``round_to``: the channel
    multiple INT8 candidates keep (the space's choice is raised to a multiple of it)."""

    activation_type: Literal["uint8", "int8"] = "uint8"
    weight_type: Literal["int8", "uint8"] = "int8"
    per_channel: bool = True
    round_to: int = 1

    def __post_init__(self) -> None:
        if self.round_to < 1:
            raise ValueError(f"`round_to >= 1` must hold, but got {self.round_to}.")


@dataclass(frozen=True)
class PrecisionSettings:
    """Which numeric precisions this device runs well (``supported``); a search offers
    the space's choices that are among them."""

    supported: tuple[str, ...] = ("float32",)
    int8: Int8Settings = field(default_factory=Int8Settings)

    def __post_init__(self) -> None:
        unknown = [p for p in self.supported if p not in PRECISIONS]
        if unknown or not self.supported:
            raise ValueError(f"`supported` must list precisions among {', '.join(PRECISIONS)}, "
                             f"but got {list(self.supported)}.")

    def round_to(self, precision: str) -> int:
        """The channel multiple candidates of ``precision`` keep on this device (1: any)."""
        return self.int8.round_to if precision == "int8" else 1  # int8-dynamic leaves convolutions float


# The sections a backend or runner of the same name reads its settings from, and what
# a profile must give when that section has no usable default.
SECTIONS = {
    "onnxruntime": "",  # every key has a default
    "tvm": "a `tvm:` section (at least `target`)",
    "rpc": "an `rpc:` section (at least `key`)",
}


@dataclass(frozen=True)
class DeviceProfile:
    """One measurement target. Load with :func:`load_profile`."""

    name: str
    description: str
    backend: Literal["onnxruntime", "tvm"]
    runner: Literal["local", "rpc"] = "local"
    batch_size: int = 1
    onnxruntime: OrtSettings = field(default_factory=OrtSettings)
    tvm: TvmSettings | None = None  # required when backend is tvm
    measurement: MeasureConfig = field(default_factory=MeasureConfig)
    rpc: RpcSettings | None = None  # required by the rpc runner
    precision: PrecisionSettings = field(default_factory=PrecisionSettings)
    version: int = 1

    def __post_init__(self) -> None:
        if self.batch_size < 1:
            raise ValueError(f"`batch_size >= 1` must hold, but got {self.batch_size}.")
        if self.version != 1:
            raise ValueError(f"unsupported profile version {self.version}; this autoprune reads 1.")
        # A backend's or runner's own settings live in the section named after it
        # (``tvm:``, ``rpc:``); one that has a section cannot work without it.
        for kind, name in (("backend", self.backend), ("runner", self.runner)):
            if SECTIONS.get(name) and getattr(self, name) is None:
                raise ValueError(f"{kind} `{name}` needs {SECTIONS[name]}.")

    @property
    def settings(self) -> Any:
        """The backend's own section (``onnxruntime:`` or ``tvm:``)."""
        return getattr(self, self.backend)

    @property
    def threads(self) -> int:
        """Threads the timed runtime uses (set in the timing process's environment)."""
        return self.settings.threads

    def round_to(self, precision: str) -> int:
        """The channel multiple candidates of ``precision`` keep on this device (1: any):
        what its INT8 kernels need, and what the TVM tuning database reuses best."""
        need = self.precision.round_to(precision)
        if self.tvm is not None and self.tvm.tuning.round_to > 1:
            need = math.lcm(need, self.tvm.tuning.round_to)
        return need

    def for_finalize(self) -> DeviceProfile:
        """This profile as ``finalize`` builds with it: TVM tuned harder (the rest as is)."""
        if self.tvm is None:
            return self
        tvm = dataclasses.replace(self.tvm, tuning=self.tvm.tuning.for_finalize())
        return dataclasses.replace(self, tvm=tvm)

    def for_screen(self) -> DeviceProfile:
        """This profile with the screen's short timing protocol: one process, at most half
        a second of timing, a 5% confidence target, no retries; TVM builds untuned (a
        screen is seconds a plan, tuning is minutes). Its hash differs, so a screen's
        figure never stands in a cache for a full measurement."""
        m = self.measurement
        short = dataclasses.replace(m, sessions=1, max_seconds=min(m.max_seconds, 0.5), noise_retries=0,
                                    target_ci=max(m.target_ci, 0.05), min_repeats=min(m.min_repeats, 20),
                                    max_repeats=max(min(m.max_repeats, 500), min(m.min_repeats, 20)))
        tvm = self.tvm and dataclasses.replace(self.tvm, tuning=dataclasses.replace(self.tvm.tuning, max_trials=0))
        return dataclasses.replace(self, measurement=short, tvm=tvm)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @property
    def hash(self) -> str:
        """sha256 of everything that can change a latency figure (not the description)."""
        data = self.to_dict()
        data.pop("description")
        # Keys added later are left out at their default, so profiles (and the studies
        # keyed by their hash) written before them keep their hash.
        if data["tvm"] is None:
            data.pop("tvm")
        else:
            if data["tvm"]["layout"] == "NHWC":
                data["tvm"].pop("layout")
            defaults = dataclasses.asdict(TuningSettings())
            for key in ("final_trials_per_task", "final_max_trials", "prepack_weights", "round_to",
                        "runner_timeout_s"):
                if data["tvm"]["tuning"][key] == defaults[key]:
                    data["tvm"]["tuning"].pop(key)
        if data["rpc"] is None:
            data.pop("rpc")
        else:
            data["rpc"] = {"key": data["rpc"]["key"]}
        if not data["onnxruntime"]["io_binding"]:
            data["onnxruntime"].pop("io_binding")
        if self.precision == PrecisionSettings():
            data.pop("precision")
        return stable_hash(data)


def profiles_dir() -> Path:
    """The folder of the named profiles: ``$AUTOPRUNE_PROFILES_DIR``, else the shipped ones."""
    return data_dir("device_profiles", PROFILES_ENV)


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
