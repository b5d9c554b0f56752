"""The Pareto front of a study and picking a model from it.

The front is Optuna's own (``study.best_trials``): among *feasible* trials (latency
within the budget) those no other trial beats on accuracy, latency and size at once.
"""

from __future__ import annotations

import pandas as pd


def front_numbers(study) -> list[int]:
    """Trial numbers on the feasible Pareto front, fastest first."""
    best = sorted(study.best_trials, key=lambda t: t.values[1])
    return [t.number for t in best]


def pick(front: pd.DataFrame, max_accuracy_drop: float | None = None) -> pd.Series | None:
    """The fastest front member whose accuracy drop vs the baseline is at most the given points."""
    rows = front
    if max_accuracy_drop is not None:
        rows = rows[rows["accuracy_drop"] <= max_accuracy_drop]
    if rows.empty:
        return None
    return rows.sort_values("latency_ms").iloc[0]
