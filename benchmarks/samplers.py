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
from autoprune.report import hypervolume_2d

SAMPLERS = ("tpe", "nsga2", "gp", "random")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--trials", type=int, default=16, help="trials per arm, baseline included")
    parser.add_argument("--budget-ms", type=float, default=0.8)
    parser.add_argument("--task", default="fashion-mnist")
    parser.add_argument("--out", type=Path, default=Path("results/benchmarks/samplers.md"))
    parser.add_argument("--keep", type=Path, help="keep the studies here (default: a temporary folder)")
    args = parser.parse_args()
    root = args.keep or Path(tempfile.mkdtemp(prefix="autoprune-samplers-"))
    start = time.perf_counter()
    for n in range(1, args.trials + 1):
        order = SAMPLERS[n % len(SAMPLERS):] + SAMPLERS[: n % len(SAMPLERS)]
        for sampler in order:
            autoprune.search(task=args.task, device="x86-ort", latency_budget_ms=args.budget_ms, n_trials=n,
                             study_name=f"{args.task}-{sampler}", results_dir=root, sampler=sampler,
                             progress=False)
        print(f"round {n}/{args.trials} done after {time.perf_counter() - start:.0f} s", file=sys.stderr, flush=True)
    rows = []
    for sampler in SAMPLERS:
        result = autoprune.SearchResult.load(root / f"{args.task}-{sampler}")
        df, base = result.trials, result.baseline
        done = df[(df["state"] == "COMPLETE") & (df["latency_ms"] <= args.budget_ms)]
        ok = done[done["accuracy"] >= base["accuracy"] - 1.0]
        ref = float(base["latency_ms"])
        rows.append({
            "sampler": sampler,
            "trials": len(df),
            "feasible": len(done),
            "baseline_ms": ref,
            "hypervolume": hypervolume_2d(done, ref) / (ref * 100),
            "best_speedup_within_1pt": ref / ok["latency_ms"].min() if not ok.empty else None,
            "best_accuracy_in_budget": done["accuracy"].max() if not done.empty else None,
            "failed": int((df["state"] == "FAIL").sum()),
        })
    table = pd.DataFrame(rows)
    text = (f"# Samplers at equal trial budget ({args.trials} trials each, {args.task}, x86-ort, "
            f"budget {args.budget_ms:g} ms)\n\nMachine: {platform.machine()}, {os.cpu_count()} CPUs, load "
            f"average {os.getloadavg()[0]:.2f} at the end, {time.perf_counter() - start:.0f} s in all. "
            f"Hypervolume is the share of the box [0, baseline latency] x [0, 100%] dominated by the "
            f"feasible trials.\nCommand: `.venv/bin/python benchmarks/samplers.py --trials {args.trials}`.\n\n"
            + table.to_markdown(index=False, floatfmt=".3f") + "\n")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)
    print(text)


if __name__ == "__main__":
    main()
