"""How much of a MACs cut shows up as measured speed, with round_to 1 against round_to 8?

Every prunable group is cut by L1 at the same ratio, once keeping any channel count
(round_to 1) and once keeping multiples of 8 (round_to 8), at the same ratios. Models:
the reference task (fashion-mnist ResNet-14) and torchvision ResNet-18 at 1x3x224x224
(random weights). Only latency matters, so there is no recovery. Each candidate is
timed with the x86-ort profile's full protocol (3 processes, no cache); the two
round_to variants of one ratio run back to back, and the baseline is measured at the
start and the end of each model (their mean is the reference), so drift hits both alike.

Realization ratio of a candidate: (1 - latency ratio) / (1 - MACs ratio), the share of
the MACs saving that shows up as latency saving (1 = latency falls as fast as MACs,
0 = no speed-up at all). Also reported: the least-squares slope of latency ratio on
MACs ratio.

Run: ``.venv/bin/python benchmarks/realization.py [--out FILE] [--skip-resnet18] [--quick]``.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).parent))
import _measure
from _machine import LoadMonitor, add_load_arguments, facts, load_summary, write_report

RATIOS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7)
ROUND_TO = (1, 8)


def run_model(task, ratios, prof, tmp: Path, loads: list[float]) -> pd.DataFrame:
    ctx = _measure.context(task, prof)
    work = tmp / task.name
    jobs = [("baseline (start)", 0.0, 1)] + [
        (f"l1 {r:g}", r, rt) for r in ratios for rt in ROUND_TO
    ]
    jobs.append(("baseline (end)", 0.0, 1))
    rows = []
    for i, (label, ratio, rt) in enumerate(jobs):
        row = {"model": task.name, "candidate": label, "ratio": ratio, "round_to": rt}
        try:
            onnx = _measure.export(ctx, _measure.uniform_plan(ctx, ratio, rt), work, f"c{i}")
            m = _measure.time_onnx(onnx.path, prof, work)
        except Exception as exc:  # noqa: BLE001 - one failed candidate is a row, not the end
            row["failed"] = f"{type(exc).__name__}: {exc}"[:200]
            rows.append(row)
            continue
        loads.append(os.getloadavg()[0])
        row.update(
            {
                "MMACs": onnx.macs / 1e6,
                "latency_ms": m.median_ms,
                "noisy": m.noisy,
                "spread": m.session_spread,
                "load1": loads[-1],
            }
        )
        rows.append(row)
        print(row, file=sys.stderr, flush=True)
    df = pd.DataFrame(rows)
    base = df[df["ratio"] == 0]
    df["macs_ratio"] = df["MMACs"] / base["MMACs"].mean()
    df["latency_ratio"] = df["latency_ms"] / base["latency_ms"].mean()
    df["speedup"] = 1 / df["latency_ratio"]
    cut = 1 - df["macs_ratio"]
    df["realization"] = np.where(
        cut > 0.02, (1 - df["latency_ratio"]) / cut.where(cut > 0.02), np.nan
    )
    return df


def summarise(df: pd.DataFrame) -> pd.DataFrame:
    rows = []
    for (model, rt), g in (
        df[df["ratio"] > 0].dropna(subset=["latency_ms"]).groupby(["model", "round_to"])
    ):
        slope = np.polyfit(g["macs_ratio"], g["latency_ratio"], 1)[0] if len(g) > 1 else np.nan
        rows.append(
            {
                "model": model,
                "round_to": rt,
                "candidates": len(g),
                "median realization": g["realization"].median(),
                "slope (latency ratio on MACs ratio)": slope,
                "best speedup": g["speedup"].max(),
                "at MACs ratio": g.loc[g["speedup"].idxmax(), "macs_ratio"],
            }
        )
    return pd.DataFrame(rows)


def plot(df: pd.DataFrame, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    models = list(dict.fromkeys(df["model"]))
    fig, axes = plt.subplots(1, len(models), figsize=(5.5 * len(models), 4.5), squeeze=False)
    for ax, model in zip(axes[0], models):
        g = df[(df["model"] == model) & (df["ratio"] > 0)].dropna(subset=["latency_ms"])
        for rt, marker, color in ((1, "o", "tab:red"), (8, "s", "tab:blue")):
            s = g[g["round_to"] == rt]
            ax.scatter(
                s["macs_ratio"],
                s["latency_ratio"],
                marker=marker,
                color=color,
                label=f"round_to {rt}",
            )
            for r in s.itertuples():
                ax.annotate(
                    f"{r.ratio:g}",
                    (r.macs_ratio, r.latency_ratio),
                    fontsize=7,
                    xytext=(3, 3),
                    textcoords="offset points",
                    color=color,
                )
        ax.plot([0, 1], [0, 1], "k--", lw=0.8, label="latency falls as MACs (realization 1)")
        ax.axhline(1, color="grey", lw=0.6)
        ax.set_xlim(0, 1.05)
        ax.set_ylim(0, max(1.2, float(g["latency_ratio"].max()) + 0.05) if len(g) else 1.2)
        ax.set_xlabel("MACs / baseline MACs")
        ax.set_ylabel("latency / baseline latency")
        ax.set_title(f"{model} (labels: L1 ratio)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8, loc="upper left")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", type=Path, default=Path("results/benchmarks/realization.md"))
    parser.add_argument("--skip-resnet18", action="store_true")
    parser.add_argument(
        "--ratios",
        type=float,
        nargs="+",
        default=list(RATIOS),
        help="L1 ratios to cut every group by",
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="smoke run: the digits model, ratio 0.5 only, a 1-process short timing",
    )
    add_load_arguments(parser)
    args = parser.parse_args()
    monitor = LoadMonitor()
    from autoprune.tasks import load_task

    prof = _measure.profile("x86-ort", quick=args.quick)
    loads = [os.getloadavg()[0]]
    if args.quick:
        tasks = [(load_task("digits"), (0.5,))]
    else:
        tasks = [(load_task("fashion-mnist"), tuple(args.ratios))]
        if not args.skip_resnet18:
            from stage_times import resnet18_task

            tasks.append((resnet18_task(), tuple(args.ratios)))
    with tempfile.TemporaryDirectory(prefix="realization-") as tmp:
        df = pd.concat(
            [run_model(t, r, prof, Path(tmp), loads) for t, r in tasks], ignore_index=True
        )
    summary = summarise(df)
    png = args.out.with_suffix(".png")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    plot(df, png)
    cols = [
        c
        for c in [
            "model",
            "candidate",
            "round_to",
            "MMACs",
            "macs_ratio",
            "latency_ms",
            "latency_ratio",
            "speedup",
            "realization",
            "noisy",
            "spread",
            "load1",
            "failed",
        ]
        if c in df
    ]
    text = f"""# Realization: measured speed-up against MACs reduction, round_to 1 vs 8

{facts()}- {load_summary(loads)}
- Profile x86-ort{" (quick: 1 process, short timing)" if args.quick else ""}: ONNX Runtime CPU, 1 thread,
  batch 1, median of 3 timing processes, no measurement cache. Every group cut by L1 at the
  ratio shown, no recovery. The two round_to variants of each ratio run back to back; the
  baseline is measured at the start and the end of each model and their mean is the
  reference for both ratios.

**Realization ratio** (per candidate) = (1 - latency/baseline latency) / (1 - MACs/baseline MACs):
the share of the MACs saving that appears as latency saving; 1 means latency falls as fast as
MACs, 0 no speed-up, above 1 faster than MACs predict. Candidates that cut less than 2% of MACs
get none. The **slope** is the least-squares fit of latency ratio on MACs ratio over a model's
candidates (1 = proportional).

## Summary

{summary.to_markdown(index=False, floatfmt=".3f")}

![latency ratio vs MACs ratio](./{png.name})

## All candidates

{df[cols].to_markdown(index=False, floatfmt=".3f")}
"""
    write_report(args.out, text, monitor, args.allow_noisy or getattr(args, "quick", False))
    print(text)


if __name__ == "__main__":
    main()
