"""Machine facts every benchmark report states: CPU, cores, load average, date, command."""

from __future__ import annotations

import datetime
import os
import platform
import shlex
import sys
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
