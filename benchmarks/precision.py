"""Does measuring the same candidates twice rank them the same way?

Twenty candidates of varied shape are each timed in three independent passes, every
timing the x86-ort profile's full protocol (build, 3 separate timing processes, median
of their medians) with no measurement cache:

- pass A and pass B back to back, per candidate (A1 B1 A2 B2 ...): the repeatability a
  search sees between neighbouring trials;
- pass C after all of A and B, minutes apart from both: what drift adds.

Reported: Spearman rank correlation of the latencies between passes and the median
relative difference |x - y| / mean(x, y). Candidates are ONNX files found under
``--onnx-dir`` (e.g. a compare run's results) or, by default, built here: fashion-mnist
with per-group L1 ratios drawn at random (0-0.7, round_to 1 or 8; no recovery, since
weights do not change dense latency).

Run: ``.venv/bin/python benchmarks/precision.py [--n 20] [--onnx-dir results/compare] [--out FILE] [--quick]``.
"""

from __future__ import annotations

import argparse
import os
import random
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).parent))
import _measure
from _machine import LoadMonitor, add_load_arguments, facts, load_summary, write_report


def built_candidates(task_name: str, n: int, prof, work: Path, seed: int) -> list[dict]:
    from autoprune.pruning import GroupChoice, PruningPlan
    from autoprune.tasks import load_task

    ctx = _measure.context(load_task(task_name), prof)
    rng = random.Random(seed)
    out = []
    for i in range(n):
        if i == 0:
            plan, label = PruningPlan(), "unpruned"
        else:
            hi = 0.7 * i / (n - 1)  # spread: later candidates may cut more
            plan = PruningPlan(
                {
                    g.info.name: GroupChoice("l1", round(rng.uniform(0, hi), 2))
                    for g in ctx.space.groups
                },
                round_to=rng.choice((1, 8)),
            )
            label = f"random cuts <= {hi:.2f}, round_to {plan.round_to}"
        onnx = _measure.export(ctx, plan, work, f"c{i}")
        out.append({"candidate": i, "label": label, "onnx": onnx.path, "MMACs": onnx.macs / 1e6})
    return out


def found_candidates(folder: Path, n: int) -> list[dict]:
    """n files spread evenly over the size range, one per distinct file size."""
    files = {}
    for p in sorted(folder.rglob("model.onnx")):
        files.setdefault(p.stat().st_size, p)
    sizes = sorted(files)
    if len(sizes) > n:
        sizes = [sizes[round(i * (len(sizes) - 1) / (n - 1))] for i in range(n)]
    return [
        {
            "candidate": i,
            "label": str(files[s].relative_to(folder).parent),
            "onnx": str(files[s]),
            "MMACs": None,
        }
        for i, s in enumerate(sizes)
    ]


def spearman(x: pd.Series, y: pd.Series) -> float:
    try:
        from scipy.stats import spearmanr

        return float(spearmanr(x, y).statistic)
    except ImportError:
        return float(x.corr(y, method="spearman"))


def rel_diff(x: pd.Series, y: pd.Series) -> pd.Series:
    return (x - y).abs() / ((x + y) / 2)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", type=Path, default=Path("results/benchmarks/precision.md"))
    parser.add_argument("--n", type=int, default=20, help="candidates")
    parser.add_argument(
        "--onnx-dir", type=Path, default=None, help="time model.onnx files found here instead"
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--note", default="", help="a line for the report, e.g. what else ran beside it")
    parser.add_argument(
        "--quick", action="store_true", help="smoke run: 4 digits candidates, short timing"
    )
    add_load_arguments(parser)
    args = parser.parse_args()
    monitor = LoadMonitor()
    prof = _measure.profile("x86-ort", quick=args.quick)
    loads = [os.getloadavg()[0]]
    with tempfile.TemporaryDirectory(prefix="precision-") as tmp:
        work = Path(tmp)
        if args.onnx_dir:
            cands = found_candidates(args.onnx_dir, args.n)
            source = f"ONNX files under `{args.onnx_dir}` ({len(cands)} of distinct size, spread over the size range)"
        else:
            task = "digits" if args.quick else "fashion-mnist"
            cands = built_candidates(task, 4 if args.quick else args.n, prof, work, args.seed)
            source = (
                f"{task}: the unpruned model and {len(cands) - 1} plans with per-group L1 ratios drawn "
                f"uniformly from [0, h] (h rising from 0.04 to 0.7), round_to 1 or 8, seed {args.seed}"
            )
        t0 = time.time()
        lat: dict[str, list[float]] = {"A": [], "B": [], "C": []}
        when: dict[str, list[float]] = {"A": [], "B": [], "C": []}
        order = [(c, p) for c in range(len(cands)) for p in "AB"] + [
            (c, "C") for c in range(len(cands))
        ]
        for c, p in order:
            m = _measure.time_onnx(cands[c]["onnx"], prof, work / f"build{c}{p}")
            lat[p].append(m.median_ms)
            when[p].append((time.time() - t0) / 60)
            loads.append(os.getloadavg()[0])
            print(
                f"{p}{c}: {m.median_ms:.3f} ms (noisy {m.noisy}), load {loads[-1]:.2f}",
                file=sys.stderr,
                flush=True,
            )
    df = pd.DataFrame(cands).drop(columns=["onnx"])
    for p in "ABC":
        df[f"{p} ms"] = lat[p]
    df["A-B rel diff"] = rel_diff(df["A ms"], df["B ms"])
    df["A-C rel diff"] = rel_diff(df["A ms"], df["C ms"])
    gap = float(np.median(np.array(when["C"]) - np.array(when["A"])))
    pairs = [
        ("A vs B", "back to back (same candidate, consecutive)", "A ms", "B ms"),
        ("A vs C", f"apart in time (median gap {gap:.1f} min)", "A ms", "C ms"),
        ("B vs C", "apart in time", "B ms", "C ms"),
    ]
    summary = pd.DataFrame(
        [
            {
                "passes": name,
                "timing": how,
                "Spearman rho": spearman(df[x], df[y]),
                "median rel. diff": float(rel_diff(df[x], df[y]).median()),
                "90th pct rel. diff": float(rel_diff(df[x], df[y]).quantile(0.9)),
                "max rel. diff": float(rel_diff(df[x], df[y]).max()),
            }
            for name, how, x, y in pairs
        ]
    )
    text = f"""# Measurement precision: three independent passes over {len(cands)} candidates

{facts()}- {load_summary(loads)}
- Wall time of the three passes: {(time.time() - t0) / 60:.1f} min.
- Profile x86-ort{" (quick: 1 process, short timing)" if args.quick else ""}: ONNX Runtime CPU, 1 thread,
  batch 1; every timing is the full protocol (build, {prof.measurement.sessions} separate
  timing processes, median of their medians), measurement cache off.
- Candidates: {source}.
{f"- Note: {args.note}" + chr(10) if args.note else ""}- Order: A1 B1 A2 B2 ... (A and B back to back per candidate), then C1 C2 ... (pass C
  minutes after A and B).

Relative difference = |x - y| / mean(x, y). Spearman via {"scipy.stats.spearmanr"}.

## Summary

{summary.to_markdown(index=False, floatfmt=".3f")}

## Per candidate

{df.to_markdown(index=False, floatfmt=".3f")}
"""
    args.out.parent.mkdir(parents=True, exist_ok=True)
    write_report(args.out, text, monitor, args.allow_noisy or getattr(args, "quick", False))
    print(text)


if __name__ == "__main__":
    main()
