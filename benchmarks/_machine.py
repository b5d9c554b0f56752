"""Machine facts every benchmark report states (CPU, cores, load average, date, command),
and the rows files long benchmarks resume from."""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import shlex
import statistics
import sys
import threading
from pathlib import Path


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def command() -> str:
    return ".venv/bin/python " + " ".join(shlex.quote(a) for a in sys.argv)


def facts(load_note: str = "") -> str:
    """A markdown paragraph: command, date, CPU, cores, load average (now), plus a note."""
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    now = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    return (
        f"- Command: `{command()}`\n"
        f"- Date: {now}\n"
        f"- Machine: {cpu_model()}, {os.cpu_count()} logical CPUs ({platform.machine()}, "
        f"Python {platform.python_version()}); shared with other work\n"
        f"- Load average (1/5/15 min) when the report was written: {load}"
        + (f"; {load_note}" if load_note else "")
        + "\n"
    )


def load_summary(samples: list[float]) -> str:
    if not samples:
        return "no load samples"
    s = sorted(samples)
    return (
        f"1-min load average during the run: min {s[0]:.2f}, median {s[len(s) // 2]:.2f}, "
        f"max {s[-1]:.2f} over {len(s)} samples"
    )


class LoadMonitor:
    """The 1-minute load average before, during (sampled every ``every_s`` in a background
    thread) and after a benchmark run: timings taken above one runnable task per core
    measure the machine, not the model."""

    def __init__(self, every_s: float = 5.0) -> None:
        self.before = os.getloadavg()[0]
        self.samples = [self.before]
        self.after: float | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, args=(every_s,), daemon=True)
        self._thread.start()

    def _sample(self, every_s: float) -> None:
        while not self._stop.wait(every_s):
            self.samples.append(os.getloadavg()[0])

    def stop(self) -> None:
        if self.after is None:
            self._stop.set()
            self._thread.join()
            self.after = os.getloadavg()[0]
            self.samples.append(self.after)

    @property
    def median(self) -> float:
        return statistics.median(self.samples)

    def summary(self) -> str:
        self.stop()
        return (f"1-min load average: before {self.before:.2f}, during the run median {self.median:.2f} "
                f"(max {max(self.samples):.2f}, {len(self.samples)} samples), after {self.after:.2f}; "
                f"{os.cpu_count()} cores")


def add_load_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--allow-noisy", action="store_true",
                        help="write the report even if the machine was busy (stamped as noisy)")


def write_report(path: Path, text: str, monitor: LoadMonitor, allow_noisy: bool) -> None:
    """Write ``text`` with the load record; refuse when the median load exceeded the cores.

    Raises:
        SystemExit: the run was noisy and ``allow_noisy`` is false (nothing is written).
    """
    monitor.stop()
    cores = os.cpu_count() or 1
    noisy = monitor.median > cores
    if noisy and not allow_noisy:
        raise SystemExit(
            f"benchmark: not writing {path}: the median 1-minute load during the run was {monitor.median:.2f} on "
            f"{cores} cores (above one per core), so its timings are the machine's. Re-run it alone, or pass "
            "--allow-noisy to write it stamped as noisy."
        )
    if noisy:
        text = (f"> **Timed on a busy machine** (`--allow-noisy`): the median 1-minute load during the run was "
                f"{monitor.median:.2f} on {cores} cores, so these are not figures of the models alone.\n\n" + text)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text.rstrip("\n") + f"\n\n- {monitor.summary()}\n")


def read_rows(path: Path) -> list[dict]:
    """The rows a run wrote to the JSON-lines file ``path`` so far (none: an empty list)."""
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.is_file() else []


def write_rows(path: Path, rows: list[dict]) -> None:
    """Write the JSON-lines file ``path`` again whole, atomically (rows marked since they
    were appended: a reader never sees it half written)."""
    from autoprune._config import atomic_write_text

    atomic_write_text(path, "".join(json.dumps(r, default=float) + "\n" for r in rows))


def append_row(path: Path, row: dict) -> None:
    """Add ``row`` to the JSON-lines file ``path`` (its folder made): one line a finished
    unit, so a run cut short keeps everything it finished."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as f:
        f.write(json.dumps(row, default=float) + "\n")
