"""Latency measurement: the protocol, its statistics, and the measurement cache.

Latency decides which model a user ships, so a figure is only recorded when it is
trustworthy: warm-up, then batches of timed runs until the 95% confidence interval of
the median is within ``target_ci`` of it (or a cap is hit); a run that stays noisy is
measured again, and recorded as ``noisy`` only if every attempt was.

This module imports only the standard library: it runs inside the timing process.
"""

from __future__ import annotations

import json
import math
import os
import statistics
import time
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

SCHEMA = "autoprune.measurement-cache/1"

# A timing this much (relative) slower than an earlier figure of the same architecture
# is taken again, and the fastest round counts (finalize's paired timing, a trained
# plan against its screen figure): on a shared 2-core machine, slow spells lasting
# seconds to tens of seconds timed small INT8 models 1.5-1.7x slower (4 of 13 finalized
# members in the 2026-12-06 compare and demo; results/benchmarks/process_modes-intel.md),
# and a slow spell only ever adds time.
RETIME_OFF = 0.15
RETIMES = 2  # rounds after the first, at most
RETIME_PAUSE_S = 5.0  # between rounds: a spell lasts seconds


def slower(got_ms: float, expected_ms: float | None) -> bool:
    """Whether ``got_ms`` is more than ``RETIME_OFF`` slower than ``expected_ms``, an
    earlier figure of the same architecture (None: there is none)."""
    return expected_ms is not None and expected_ms > 0 and got_ms > expected_ms * (1 + RETIME_OFF)


@dataclass(frozen=True)
class Measurement:
    """One candidate's measured latency on one device (times in milliseconds)."""

    median_ms: float
    p90_ms: float
    mean_ms: float
    min_ms: float
    cv: float  # robust: interquartile range / 1.349 / median (robust_cv)
    ci_low_ms: float
    ci_high_ms: float
    runs: int
    attempts: int
    noisy: bool
    threads: int
    load_avg: float
    wall_s: float
    sessions: int = 1
    session_spread: float = 0.0  # (max - min) / median of the per-process medians

    @property
    def ci_rel(self) -> float:
        return (self.ci_high_ms - self.ci_low_ms) / 2 / self.median_ms if self.median_ms else math.inf

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Measurement:
        return cls(**data)


def median_ci(sorted_times: list[float], z: float = 1.96) -> tuple[float, float]:
    """Distribution-free 95% CI of the median from order statistics (binomial approx.)."""
    n = len(sorted_times)
    half = z * math.sqrt(n) / 2
    lo = max(0, int(math.floor(n / 2 - half)) - 1)
    hi = min(n - 1, int(math.ceil(n / 2 + half)))
    return sorted_times[lo], sorted_times[hi]


def robust_cv(sorted_times: list[float]) -> float:
    """The spread of the runs relative to their median: the interquartile range over
    1.349 (the standard deviation, for normally spread runs) over the median.

    Not the standard deviation over the mean: the figure recorded is a median, which a
    few outliers (a page fault, a timer interrupt) do not move, but they made the
    classic CV of a 0.03 ms model 0.25-0.6 where its median was known within 1%, and
    every such measurement was flagged noisy and taken three times with pauses between.
    """
    if len(sorted_times) < 2:
        return 0.0
    q1, _, q3 = statistics.quantiles(sorted_times, n=4)
    med = statistics.median(sorted_times)
    return (q3 - q1) / 1.349 / med if med > 0 else 0.0


def _stats(times: list[float]) -> dict[str, float]:
    s = sorted(times)
    med = statistics.median(s)
    mean = statistics.fmean(s)
    lo, hi = median_ci(s)
    return {
        "median": med,
        "p90": s[min(len(s) - 1, int(math.ceil(0.9 * len(s))) - 1)],
        "mean": mean,
        "min": s[0],
        "cv": robust_cv(s),
        "ci_low": lo,
        "ci_high": hi,
        "ci_rel": (hi - lo) / 2 / med if med > 0 else math.inf,
    }


def timed_loop(run_once: Callable[[], object], config: Any, threads: int) -> Measurement:
    """Time ``run_once`` under the protocol in ``config`` (a profiles.MeasureConfig)."""
    start_wall = time.perf_counter()
    load = os.getloadavg()[0]
    best: tuple[bool, float, dict[str, float], int] | None = None
    attempts = 0
    for attempt in range(1 + config.noise_retries):
        attempts = attempt + 1
        for _ in range(config.warmup):
            run_once()
        times: list[float] = []
        began = time.perf_counter()
        while True:
            for _ in range(config.min_repeats):
                t0 = time.perf_counter()
                run_once()
                times.append(time.perf_counter() - t0)
            st = _stats(times)
            if st["ci_rel"] <= config.target_ci:
                break
            if len(times) >= config.max_repeats or time.perf_counter() - began > config.max_seconds:
                break
        noisy = st["ci_rel"] > config.target_ci or st["cv"] > config.max_cv
        candidate = (noisy, st["ci_rel"], st, len(times))
        if best is None or candidate[:2] < best[:2]:
            best = candidate
        if not noisy:
            break
        time.sleep(0.2 * attempts)  # let a burst of load from elsewhere pass
    assert best is not None
    noisy, _, st, runs = best
    return Measurement(
        median_ms=st["median"] * 1e3,
        p90_ms=st["p90"] * 1e3,
        mean_ms=st["mean"] * 1e3,
        min_ms=st["min"] * 1e3,
        cv=st["cv"],
        ci_low_ms=st["ci_low"] * 1e3,
        ci_high_ms=st["ci_high"] * 1e3,
        runs=runs,
        attempts=attempts,
        noisy=noisy,
        threads=threads,
        load_avg=load,
        wall_s=time.perf_counter() - start_wall,
    )


def combine(parts: list[Measurement], max_spread: float) -> Measurement:
    """Merge timings taken in separate processes into one figure.

    On this machine kind the median of one process differed from the next by up to
    30% although each process's own CI was within 2%: something outside the process
    (most likely the host's other tenant) slows one session for spells of up to about
    a second (``benchmarks/process_modes.py --trace``), and a short timing lands in
    one spell or the other. The spread *between* processes is the error that matters,
    so the figure is the median of per-process medians, the CI spans all of theirs, and a spread
    above ``max_spread`` marks the result noisy.
    """
    if len(parts) == 1:
        return parts[0]
    medians = sorted(p.median_ms for p in parts)
    mid = statistics.median(medians)
    spread = (medians[-1] - medians[0]) / mid if mid > 0 else 0.0
    return Measurement(
        median_ms=mid,
        p90_ms=statistics.median(p.p90_ms for p in parts),
        mean_ms=statistics.fmean(p.mean_ms for p in parts),
        min_ms=min(p.min_ms for p in parts),
        cv=max(p.cv for p in parts),
        ci_low_ms=min(min(p.ci_low_ms for p in parts), mid),
        ci_high_ms=max(max(p.ci_high_ms for p in parts), mid),
        runs=sum(p.runs for p in parts),
        attempts=sum(p.attempts for p in parts),
        noisy=any(p.noisy for p in parts) or spread > max_spread,
        threads=parts[0].threads,
        load_avg=max(p.load_avg for p in parts),
        wall_s=sum(p.wall_s for p in parts),
        sessions=len(parts),
        session_spread=spread,
    )


class MeasurementCache:
    """Measured latencies keyed by (architecture hash, backend, profile hash).

    Stored as one JSON file written atomically. A file that cannot be read is moved
    aside (``*.corrupt``) with a warning and the cache starts empty: a cache can always
    be rebuilt by measuring again, a wrong figure cannot be taken back.
    Noisy measurements are not cached, so they are measured again next time.
    """

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._entries: dict[str, dict[str, Any]] = {}
        if self.path.exists():
            try:
                data = json.loads(self.path.read_text())
                if data.get("schema") != SCHEMA:
                    raise ValueError(f"unexpected schema {data.get('schema')!r}")
                self._entries = {k: Measurement.from_dict(v).to_dict() for k, v in data["entries"].items()}
            except (ValueError, KeyError, TypeError, AttributeError) as exc:
                aside = self.path.with_suffix(".corrupt")
                os.replace(self.path, aside)
                warnings.warn(f"measurement cache {self.path} was unreadable ({exc}); moved to {aside}, starting empty")
                self._entries = {}

    @staticmethod
    def key(arch_hash: str, backend: str, profile_hash: str) -> str:
        return f"{arch_hash}:{backend}:{profile_hash}"

    def get(self, key: str) -> Measurement | None:
        entry = self._entries.get(key)
        return Measurement.from_dict(entry) if entry else None

    def put(self, key: str, measurement: Measurement) -> None:
        if measurement.noisy:
            return
        self._entries[key] = measurement.to_dict()
        self.flush()

    def flush(self) -> None:
        from autoprune._config import atomic_write_text

        atomic_write_text(self.path, json.dumps({"schema": SCHEMA, "entries": self._entries}, indent=1))

    def __len__(self) -> int:
        return len(self._entries)
