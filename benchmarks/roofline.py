"""How close do the measured models come to this machine's float32 GEMM peak?

The peak is numpy's float32 matrix multiply (OpenBLAS) at a few square sizes, with the
BLAS pool limited to 1 and to 2 threads by threadpoolctl; the best of several runs,
as GFLOP/s = 2 n^3 / seconds. A model's achieved rate is 2 x MACs / latency, its
latency measured with the x86-ort profile (ONNX Runtime, 1 thread, 3 timing processes),
so it is compared with the 1-thread peak. Models: the reference task (fashion-mnist)
unpruned and cut uniformly by L1 (round_to 8, no recovery: weights do not change dense
latency), the front of a compare run if its CSV is given, and torchvision ResNet-18 at
1x3x224x224 (random weights).

Run: ``.venv/bin/python benchmarks/roofline.py [--out FILE] [--compare-csv results/benchmarks/compare.csv] [--quick]``.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).parent))
import _measure
from _machine import LoadMonitor, add_load_arguments, facts, load_summary, write_report


def gemm_peak(sizes: tuple[int, ...], threads: int, seconds: float) -> list[dict]:
    """Best float32 GEMM rate per size with the BLAS pool limited to ``threads``."""
    from threadpoolctl import threadpool_limits

    rows = []
    rng = np.random.default_rng(0)
    with threadpool_limits(limits=threads, user_api="blas"):
        for n in sizes:
            a = rng.standard_normal((n, n), dtype=np.float32)
            b = rng.standard_normal((n, n), dtype=np.float32)
            a @ b  # warm-up: page in, spin up the pool
            times = []
            end = time.perf_counter() + seconds
            while time.perf_counter() < end or len(times) < 3:
                t = time.perf_counter()
                a @ b
                times.append(time.perf_counter() - t)
            flops = 2.0 * n**3
            rows.append(
                {
                    "threads": threads,
                    "n": n,
                    "runs": len(times),
                    "best GFLOP/s": flops / min(times) / 1e9,
                    "median GFLOP/s": flops / float(np.median(times)) / 1e9,
                }
            )
    return rows


def model_rows(quick: bool, skip_resnet18: bool, loads: list[float]) -> list[dict]:
    from autoprune.tasks import load_task

    prof = _measure.profile("x86-ort", quick=quick)
    tasks = [
        (
            load_task("digits" if quick else "fashion-mnist"),
            (0.0, 0.5) if quick else (0.0, 0.3, 0.5, 0.7),
        )
    ]
    if not skip_resnet18 and not quick:
        from stage_times import resnet18_task

        tasks.append((resnet18_task(), (0.0, 0.5)))
    rows = []
    with tempfile.TemporaryDirectory(prefix="roofline-") as tmp:
        for task, ratios in tasks:
            ctx = _measure.context(task, prof)
            for r in ratios:
                onnx = _measure.export(
                    ctx, _measure.uniform_plan(ctx, r, 8), Path(tmp) / task.name, f"r{r}"
                )
                m = _measure.time_onnx(onnx.path, prof, Path(tmp) / task.name)
                loads.append(os.getloadavg()[0])
                rows.append(
                    {
                        "model": task.name,
                        "candidate": "unpruned" if r == 0 else f"uniform l1 {r:g}",
                        "MMACs": onnx.macs / 1e6,
                        "latency_ms": m.median_ms,
                        "noisy": m.noisy,
                    }
                )
                print(rows[-1], file=sys.stderr, flush=True)
    return rows


def compare_rows(csv: Path) -> list[dict]:
    """The autoprune arm's 2-D front from a compare run (latencies as measured there)."""
    sys.path.insert(0, str(Path(__file__).parent))
    from compare import pareto_2d

    df = pd.read_csv(csv)
    f = pareto_2d(df[df["arm"] == "autoprune"])
    return [
        {
            "model": "fashion-mnist",
            "candidate": f"compare front #{int(r.trial)} ({r.accuracy:.2f}%)",
            "MMACs": r.macs / 1e6,
            "latency_ms": r.latency_ms,
            "noisy": r.latency_noisy,
        }
        for r in f.itertuples()
    ]


def verdict(models: pd.DataFrame, peak1: float) -> str:
    if models.empty:
        return "No model was timed (--gemm-only)."
    hi = models.loc[models["GFLOP/s"].idxmax()]
    lo = models.loc[models["GFLOP/s"].idxmin()]
    return (
        f"Highest achieved rate: {hi['model']} {hi['candidate']}, {hi['GFLOP/s']:.1f} GFLOP/s "
        f"({hi['% of 1-thread peak']:.0f}% of the 1-thread GEMM peak); lowest: {lo['model']} "
        f"{lo['candidate']}, {lo['GFLOP/s']:.1f} GFLOP/s ({lo['% of 1-thread peak']:.0f}%). A rate "
        "far below the others for the same model family points at a slow kernel choice (odd "
        "channel counts) or at a timing that caught the machine busy, not at the work itself."
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", type=Path, default=Path("results/benchmarks/roofline.md"))
    parser.add_argument(
        "--compare-csv",
        type=Path,
        default=None,
        help="add the autoprune front of a compare run (its CSV)",
    )
    parser.add_argument("--skip-resnet18", action="store_true")
    parser.add_argument(
        "--gemm-only", action="store_true", help="the GEMM peak only, no model timing"
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="smoke run: small GEMMs, the digits model, a 1-process short timing",
    )
    add_load_arguments(parser)
    args = parser.parse_args()
    monitor = LoadMonitor()
    sizes = (128, 256) if args.quick else (256, 512, 1024, 2048)
    seconds = 0.05 if args.quick else 1.0
    loads = [os.getloadavg()[0]]
    gemm = []
    for threads in (1, 2):
        gemm += gemm_peak(sizes, threads, seconds)
        loads.append(os.getloadavg()[0])
    gemm_df = pd.DataFrame(gemm)
    peak1 = gemm_df[gemm_df["threads"] == 1]["best GFLOP/s"].max()
    peak2 = gemm_df[gemm_df["threads"] == 2]["best GFLOP/s"].max()

    rows = [] if args.gemm_only else model_rows(args.quick, args.skip_resnet18, loads)
    if args.compare_csv and args.compare_csv.is_file():
        rows += compare_rows(args.compare_csv)
    models = pd.DataFrame(rows, columns=["model", "candidate", "MMACs", "latency_ms", "noisy"])
    models["GFLOP/s"] = 2 * models["MMACs"] * 1e6 / (models["latency_ms"] / 1e3) / 1e9
    models["% of 1-thread peak"] = 100 * models["GFLOP/s"] / peak1

    from threadpoolctl import threadpool_info

    blas = ", ".join(
        f"{i.get('internal_api')} {i.get('version')} ({i.get('architecture')})"
        for i in threadpool_info()
        if i.get("user_api") == "blas"
    )
    text = f"""# Roofline: float32 GEMM peak against achieved GFLOP/s

{facts()}- {load_summary(loads)}
- BLAS: {blas}; thread count set with `threadpoolctl.threadpool_limits(limits=N, user_api="blas")`;
  `OPENBLAS_CORETYPE` {os.environ.get("OPENBLAS_CORETYPE", "unset")} (a forced older core type, e.g. Haswell on an
  AVX-512 CPU, halves numpy's peak: run with `env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE` for the CPU's own kernel)
  (1 and 2 threads; the machine has {os.cpu_count()} logical CPUs and is shared, so
  the 2-thread figure is what was available, not the hardware's).

## GEMM peak (numpy float32, square n x n @ n x n, {seconds:g} s per size)

{gemm_df.astype({"threads": str, "n": str, "runs": str}).to_markdown(index=False, floatfmt=".1f")}

Peak used below: **{peak1:.1f} GFLOP/s on 1 thread**, {peak2:.1f} GFLOP/s on 2 threads
(best single run over all sizes).

## Achieved by the models (x86-ort: ONNX Runtime, 1 thread, batch 1)

GFLOP/s = 2 x MACs / measured median latency; MACs as counted by Torch-Pruning
(convolutions and linear layers; BN, ReLU and adds are not counted but do take time).

{models.to_markdown(index=False, floatfmt=".3f")}

{verdict(models, peak1)}

The GEMM "peak" is the best single run (the medians show how much a loaded machine takes
away); with both vCPUs busy with other work, the 2-thread pool mostly waits for a core
(OpenBLAS threads spin), so its figure says more about the load than the hardware.
"""
    args.out.parent.mkdir(parents=True, exist_ok=True)
    write_report(args.out, text, monitor, args.allow_noisy or getattr(args, "quick", False))
    print(text)


if __name__ == "__main__":
    main()
