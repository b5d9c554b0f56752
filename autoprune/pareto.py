"""Every front and hypervolume of autoprune, in one place.

- :func:`front_numbers`: the study's Pareto front, Optuna's own (``study.best_trials``):
  among *feasible* trials (every latency budget met) those no other trial beats on all
  objectives at once (accuracy, latency, size, and each further device's latency).
- :func:`two_d_front`: the accuracy/latency front of a table (what ``finalize`` re-times
  and the benchmarks compare).
- :func:`hypervolume_2d`: the area of the accuracy/latency plane a set of trials dominates.
- :func:`pick`: the fastest front member within an accuracy drop.
"""

from __future__ import annotations

import pandas as pd


def front_numbers(study) -> list[int]:
    """Trial numbers on the feasible Pareto front, fastest first."""
    best = sorted(study.best_trials, key=lambda t: t.values[1])
    return [t.number for t in best]


def two_d_front(rows: pd.DataFrame, sign: float = 1.0) -> pd.DataFrame:
    """The rows not beaten on both the metric (``accuracy``; higher is better where
    ``sign`` is +1, lower where -1) and latency by another row, fastest first."""
    rows = rows.assign(_good=sign * rows["accuracy"]).sort_values(["latency_ms", "_good"], ascending=[True, False])
    keep, best = [], -float("inf")
    for i, r in rows.iterrows():
        if r["_good"] > best:
            keep.append(i)
            best = r["_good"]
    return rows.loc[keep].drop(columns="_good")


def hypervolume_2d(points: pd.DataFrame, ref_latency_ms: float, sign: float = 1.0) -> float:
    """Area of the (latency, metric) plane that ``points`` dominate, up to a reference.

    A point (l, a) dominates the box [l, ref_latency_ms] x [0, a]. The area of the
    union of these boxes is the integral over latency x of the best metric reached
    at a latency <= x: sort by latency, take the running maximum of the metric and
    multiply by the width to the next point (or to the reference). For a metric where
    lower is better (``sign`` -1) the boxes reach up from the worst value of ``points``.
    """
    good = sign * points["accuracy"]
    if sign < 0:
        good = good - good.min()
    p = points.assign(_good=good)
    p = p[(p["latency_ms"] < ref_latency_ms) & (p["_good"] > 0)].sort_values("latency_ms")
    if p.empty:
        return 0.0
    widths = p["latency_ms"].shift(-1, fill_value=ref_latency_ms) - p["latency_ms"]
    return float((p["_good"].cummax() * widths).sum())


def pick(front: pd.DataFrame, max_accuracy_drop: float | None = None) -> pd.Series | None:
    """The fastest front member whose accuracy drop vs the baseline is at most the given points."""
    rows = front
    if max_accuracy_drop is not None:
        rows = rows[rows["accuracy_drop"] <= max_accuracy_drop]
    if rows.empty:
        return None
    return rows.sort_values("latency_ms").iloc[0]
