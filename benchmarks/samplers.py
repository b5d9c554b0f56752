"""Which Optuna sampler autoprune should default to: TPE, NSGA-II, GP and random
search at the same trial budget on the reference task.

Every arm is a real ``autoprune.search`` on fashion-mnist / x86-ort with the default
space and the same warm start (baseline, uniform L1 50% and 30%), so the arms differ
only in how they choose the remaining trials. The machine is shared and its latency
drifts over minutes, so the arms take turns one trial at a time (order rotating each
round). Reported per arm: the hypervolume of the feasible accuracy/latency front
(reference point: 0% accuracy and the arm's baseline latency, as in ``autoprune
report``), the best measured speedup at <= 1 accuracy point below the baseline, and the
number of feasible trials.

Run: ``.venv/bin/python benchmarks/samplers.py [--trials 16] [--budget-ms 0.8]``.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd

import autoprune
from autoprune.pareto import hypervolume_2d

sys.path.insert(0, str(Path(__file__).parent))
from _machine import LoadMonitor, add_load_arguments, write_report  # noqa: E402

SAMPLERS = ("tpe", "nsga2", "gp", "random")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--trials", type=int, default=16, help="trials per arm, baseline included")
    parser.add_argument("--budget-ms", type=float, default=0.8)
    parser.add_argument("--task", default="fashion-mnist")
    parser.add_argument("--out", type=Path, default=Path("results/benchmarks/samplers.md"))
    parser.add_argument("--keep", type=Path, help="keep the studies here (default: a temporary folder)")
    add_load_arguments(parser)
    args = parser.parse_args()
    monitor = LoadMonitor()
    root = args.keep or Path(tempfile.mkdtemp(prefix="autoprune-samplers-"))
    start = time.perf_counter()
    for n in range(1, args.trials + 1):
        order = SAMPLERS[n % len(SAMPLERS):] + SAMPLERS[: n % len(SAMPLERS)]
        for sampler in order:
            autoprune.search(task=args.task, device="x86-ort", latency_budget_ms=args.budget_ms, n_trials=n,
                             study_name=f"{args.task}-{sampler}", results_dir=root, sampler=sampler,
                             progress=False)
        print(f"round {n}/{args.trials} done after {time.perf_counter() - start:.0f} s", file=sys.stderr, flush=True)
    results = {s: autoprune.SearchResult.load(root / f"{args.task}-{s}") for s in SAMPLERS}
    # One reference for every arm: the median of the arms' own baseline measurements, so
    # an arm whose baseline happened to be timed slow does not get a larger box.
    ref = float(pd.Series([float(r.baseline["latency_ms"]) for r in results.values()]).median())
    rows = []
    for sampler, result in results.items():
        df, base = result.trials, result.baseline
        done = df[df["state"] == "COMPLETE"]
        feasible = done[done["latency_ms"] <= args.budget_ms]
        ok = done[done["accuracy"] >= base["accuracy"] - 1.0]
        rows.append({
            "sampler": sampler,
            "trials": len(df),
            "feasible": len(feasible),
            "own_baseline_ms": float(base["latency_ms"]),
            "hypervolume": hypervolume_2d(done, ref) / (ref * 100),
            "best_speedup_within_1pt": ref / ok["latency_ms"].min() if not ok.empty else None,
            "best_accuracy_in_budget": feasible["accuracy"].max() if not feasible.empty else None,
            "failed": int((df["state"] == "FAIL").sum()),
        })
    table = pd.DataFrame(rows)
    text = (f"# Samplers at equal trial budget ({args.trials} trials each, {args.task}, x86-ort, "
            f"budget {args.budget_ms:g} ms)\n\nMachine: {platform.machine()}, {os.cpu_count()} CPUs, load "
            f"average {os.getloadavg()[0]:.2f} at the end, {time.perf_counter() - start:.0f} s in all. "
            f"Hypervolume is the share of the box [0, {ref:.3f} ms] x [0, 100%] dominated by each arm's "
            f"completed trials; {ref:.3f} ms is the median of the four arms' baseline measurements, and "
            f"speed-ups are against it. Each arm's first 3 trials are the same (baseline, uniform L1 0.5 "
            f"and 0.3); TPE and GP sample at random for their next 8.\nCommand: `.venv/bin/python "
            f"benchmarks/samplers.py --trials {args.trials} --budget-ms {args.budget_ms:g}`.\n\n"
            + table.to_markdown(index=False, floatfmt=".3f") + "\n")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    write_report(args.out, text, monitor, args.allow_noisy or getattr(args, "quick", False))
    print(text)


if __name__ == "__main__":
    main()
