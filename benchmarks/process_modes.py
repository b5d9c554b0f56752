"""One model, many timing processes: does its latency depend on the process it lands in?

The full protocol times a candidate in ``measurement.sessions`` separate processes and
records the median of their medians; the screen times each plan in one process. Where a
model's latency differs from process to process (on this 2-core host a small INT8 U-Net
timed 0.157 ms in some processes and 0.27 ms in others, 2026-12-06), the screen can see
a plan much faster than its trial will. This benchmark times each ONNX file named in
``--processes`` separate processes, each with the screen's one-process protocol on the
device, and reports every process's median, the spread, and how many processes fall
within 10% of the fastest.

Run: ``.venv/bin/python benchmarks/process_modes.py MODEL.onnx [TRIAL_DIR ...] [--processes 12]``
(a trial folder stands for its ``model.onnx``).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("models", nargs="+", type=Path, help="ONNX files or trial folders (their model.onnx)")
    parser.add_argument("--processes", type=int, default=12)
    parser.add_argument("--device", default="x86-ort")
    parser.add_argument("--out", type=Path, default=Path("results/benchmarks/process_modes.md"))
    add_load_arguments(parser)
    args = parser.parse_args()
    files = [m / "model.onnx" if m.is_dir() else m for m in args.models]
    if missing := [str(f) for f in files if not f.is_file()]:
        parser.error(f"no ONNX file at {', '.join(missing)}")
    if args.processes < 2:
        parser.error("--processes must be at least 2: the point is to compare processes")

    from autoprune.device import Device
    from autoprune.profiles import load_profile

    monitor = LoadMonitor()
    device = Device.of(load_profile(args.device).for_screen())  # one process a measurement
    rows = []
    for f in files:
        ms = medians(f, device, args.processes)
        fastest = min(ms)
        rows.append({"model": str(f), "processes": len(ms), "min_ms": fastest, "median_ms": statistics.median(ms),
                     "max_ms": max(ms), "max_over_min": max(ms) / fastest,
                     "within_10pct_of_min": sum(m <= 1.1 * fastest for m in ms),
                     "per_process_ms": " ".join(f"{m:.3f}" for m in sorted(ms))})
        print(rows[-1], file=sys.stderr, flush=True)
    table = pd.DataFrame(rows)
    text = ("# Latency by timing process\n\n" + facts()
            + f"- Device `{args.device}` with the screen's protocol: each figure is one process's median.\n\n"
            + table.to_markdown(index=False, floatfmt=".3f") + "\n")
    write_report(args.out, text, monitor, args.allow_noisy)
    print(text)


if __name__ == "__main__":
    main()
