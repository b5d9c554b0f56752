"""One model, many timing processes, and one process over time: where does a latency's
second mode come from?

The full protocol times a candidate in ``measurement.sessions`` separate processes and
records the median of their medians; the screen times each plan in one process. On this
2-core host a small INT8 U-Net timed 0.157 ms in some processes and 0.27 ms in others
(2026-12-06), so the screen can see a plan much faster than its trial will. This
benchmark times each ONNX file named in ``--processes`` separate processes, each with the
screen's one-process protocol on the device, and reports every process's median, the
spread, and how many processes fall within 10% of the fastest. With ``--trace SECONDS``
it also runs each model without a pause for that long in one ONNX Runtime session (the
device profile's settings) and reports the medians of its ``--window-ms`` windows: if
the slow mode belongs to a process, a trace stays in one mode; if it comes from outside
(another tenant of the host), one session moves between the modes over time.

Run: ``.venv/bin/python benchmarks/process_modes.py MODEL.onnx [TRIAL_DIR ...] [--processes 12]
[--trace 20]`` (a trial folder stands for its ``model.onnx``).
"""

from __future__ import annotations

import argparse
import itertools
import statistics
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd

sys.path.insert(0, str(Path(__file__).parent))
from _machine import LoadMonitor, add_load_arguments, facts, write_report  # noqa: E402


def medians(path: Path, device, n: int) -> list[float]:
    """``path`` timed in ``n`` separate processes: each process's median latency (ms)."""
    from autoprune.export import OnnxArtifact, file_facts

    art = OnnxArtifact(**file_facts(path, path.read_bytes()), macs=0, params=0, nonzero_params=0,
                       max_abs_diff=0.0, input_shape=(), output_shape=())
    out = []
    for _ in range(n):
        # a build of its own each time, as a trial's; the build writes into the folder, the file stays as it is
        with tempfile.TemporaryDirectory() as tmp:
            out.append(device.measure(art, Path(tmp)).measurement.median_ms)
    return out


def trace(path: Path, profile, seconds: float, window_ms: float) -> list[float]:
    """``path`` run back to back for ``seconds`` in one session: each window's median (ms)."""
    from autoprune.backends.onnxruntime import timing_session

    session, feeds = timing_session(path, profile)  # as the device's timing process builds them
    for _ in range(profile.measurement.warmup):
        session.run(None, feeds)
    windows: dict[int, list[float]] = {}
    start = time.perf_counter()
    while (now := time.perf_counter()) - start < seconds:
        session.run(None, feeds)
        windows.setdefault(int((now - start) * 1e3 // window_ms), []).append((time.perf_counter() - now) * 1e3)
    return [statistics.median(v) for _, v in sorted(windows.items())]


def trace_row(path: Path, medians: list[float], seconds: float, window_ms: float) -> dict:
    """How one trace's windows split between the fast mode (within 10% of the fastest window) and the rest."""
    fastest = min(medians)
    fast = [m <= 1.1 * fastest for m in medians]
    switches = sum(a != b for a, b in itertools.pairwise(fast))
    slow_runs = [len(list(g)) for is_fast, g in itertools.groupby(fast) if not is_fast]
    return {"model": str(path), "seconds": seconds, "windows": len(medians),
            "min_ms": fastest, "median_ms": statistics.median(medians), "max_ms": max(medians),
            "windows_within_10pct_of_min": sum(fast), "mode_switches": switches,
            "longest_slow_ms": max(slow_runs, default=0) * window_ms}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("models", nargs="+", type=Path, help="ONNX files or trial folders (their model.onnx)")
    parser.add_argument("--processes", type=int, default=12)
    parser.add_argument("--device", default="x86-ort")
    parser.add_argument("--trace", type=float, default=0.0, metavar="SECONDS",
                        help="also run each model this long in one session and report its windows (0: do not)")
    parser.add_argument("--window-ms", type=float, default=50.0, help="a trace's window (default 50 ms)")
    parser.add_argument("--out", type=Path, default=Path("results/benchmarks/process_modes.md"))
    add_load_arguments(parser)
    args = parser.parse_args()
    files = [m / "model.onnx" if m.is_dir() else m for m in args.models]
    if missing := [str(f) for f in files if not f.is_file()]:
        parser.error(f"no ONNX file at {', '.join(missing)}")
    if args.processes < 2:
        parser.error("--processes must be at least 2: the point is to compare processes")
    if args.trace < 0 or args.window_ms <= 0 or (args.trace and args.trace * 1e3 < 2 * args.window_ms):
        parser.error("--trace must be 0 or at least two --window-ms windows long, and --window-ms positive")

    from autoprune.device import Device
    from autoprune.profiles import load_profile

    monitor = LoadMonitor()
    profile = load_profile(args.device)
    if args.trace and (profile.backend != "onnxruntime" or profile.runner != "local"):
        # the trace runs in this process: a board's or TVM's figures would be this host's ONNX Runtime's
        parser.error(f"--trace runs ONNX Runtime sessions on this machine; profile {args.device!r} times with "
                     f"{profile.backend} through its {profile.runner} runner. Trace a local ONNX Runtime profile "
                     "(x86-ort) or leave --trace out.")
    device = Device.of(profile.for_screen())  # one process a measurement
    rows, traces = [], []
    for f in files:
        ms = medians(f, device, args.processes)
        fastest = min(ms)
        rows.append({"model": str(f), "processes": len(ms), "min_ms": fastest, "median_ms": statistics.median(ms),
                     "max_ms": max(ms), "max_over_min": max(ms) / fastest,
                     "within_10pct_of_min": sum(m <= 1.1 * fastest for m in ms),
                     "per_process_ms": " ".join(f"{m:.3f}" for m in sorted(ms))})
        print(rows[-1], file=sys.stderr, flush=True)
        if args.trace:
            traces.append(trace_row(f, trace(f, profile, args.trace, args.window_ms), args.trace, args.window_ms))
            print(traces[-1], file=sys.stderr, flush=True)
    text = ("# Latency by timing process\n\n" + facts()
            + f"- Device `{args.device}` with the screen's protocol: each figure is one process's median.\n\n"
            + pd.DataFrame(rows).to_markdown(index=False, floatfmt=".3f") + "\n")
    if traces:
        text += (f"\n## One session over time\n\nEach model run back to back for {args.trace:g} s in one ONNX Runtime "
                 "session of this process (the profile's settings), right after that model's processes; the "
                 f"figures are the medians of its {args.window_ms:g} ms windows. `mode_switches`: how often a "
                 "window and the next fall on different sides of 1.1 x the fastest window.\n\n"
                 + pd.DataFrame(traces).to_markdown(index=False, floatfmt=".3f") + "\n")
    write_report(args.out, text, monitor, args.allow_noisy)
    print(text)


if __name__ == "__main__":
    main()
