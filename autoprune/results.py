"""Results of a study under ``results/<study>/``: tables, plots, and the result object.

Files (all written atomically, so a kill never leaves a truncated one):
``trials.csv`` one row per trial; ``pareto.csv`` the front; ``pareto.png`` and
``pareto.html`` accuracy against latency with the budget and baseline marked.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from autoprune._config import atomic_write_text
from autoprune.errors import StudyError

FRONT_COLUMNS = [
    "trial", "accuracy", "accuracy_drop", "latency_ms", "latency_p90_ms", "speedup",
    "size_mb", "macs_ratio", "params", "sparsity", "round_to", "methods",
]


def trials_frame(study) -> pd.DataFrame:
    """One row per trial: parameters, metrics, latency statistics, state, failure reason."""
    identity = study.user_attrs.get("autoprune", {})
    budget = identity.get("latency_budget_ms", math.inf)
    rows = []
    for t in study.get_trials(deepcopy=False):
        a = t.user_attrs
        row: dict[str, Any] = {
            "trial": t.number,
            "state": t.state.name,
            "baseline": bool(a.get("baseline", False)),
            "warm_start": a.get("warm_start"),
            "accuracy": a.get("accuracy"),
            "latency_ms": a.get("latency_ms"),
            "latency_p90_ms": a.get("latency_p90_ms"),
            "latency_ci_low_ms": a.get("latency_ci_low_ms"),
            "latency_ci_high_ms": a.get("latency_ci_high_ms"),
            "latency_cv": a.get("latency_cv"),
            "latency_runs": a.get("latency_runs"),
            "latency_noisy": a.get("latency_noisy"),
            "latency_sessions": a.get("latency_sessions"),
            "latency_session_spread": a.get("latency_session_spread"),
            "latency_cached": a.get("latency_cached"),
            "size_mb": a.get("size_mb"),
            "macs": a.get("macs"),
            "params": a.get("params"),
            "nonzero_params": a.get("nonzero_params"),
            "onnx_bytes": a.get("onnx_bytes"),
            "gzip_bytes": a.get("gzip_bytes"),
            "methods": _method_counts(a.get("plan")),
            "evaluation": a.get("evaluation"),
            "zero_shot_accuracy": a.get("zero_shot_accuracy"),
            "dropped_blocks": " ".join(a.get("plan", {}).get("drop_blocks", [])),
            "parity_max_abs_diff": a.get("parity_max_abs_diff"),
            "round_to": a.get("plan", {}).get("round_to"),
            "fail_stage": a.get("fail_stage"),
            "fail_reason": a.get("fail_reason"),
            "duration_s": t.duration.total_seconds() if t.duration else None,
            "load_avg": a.get("load_avg"),
        }
        for key, value in a.items():  # what the backend reported (TVM tuning, reuse, compile time)
            if key.startswith("build_") or "@" in key:  # ...and each other device's latency
                row[key] = value
        for stage, secs in (a.get("stage_s") or {}).items():
            row[f"{stage}_s"] = secs
        for name, value in t.params.items():
            if name != "round_to":
                row[f"param:{name}"] = value
        rows.append(row)
    df = pd.DataFrame(rows)
    if df.empty:
        return df
    # zero weights count for size (they compress) but never for dense-kernel latency
    df["sparsity"] = 1 - pd.to_numeric(df["nonzero_params"]) / pd.to_numeric(df["params"])
    base = df[(df["baseline"]) & (df["state"] == "COMPLETE")]
    if not base.empty:
        b = base.iloc[0]
        df["accuracy_drop"] = b["accuracy"] - df["accuracy"]
        df["speedup"] = b["latency_ms"] / df["latency_ms"]
        df["macs_ratio"] = df["macs"] / b["macs"]
    else:
        df["accuracy_drop"] = df["speedup"] = df["macs_ratio"] = float("nan")
    df["feasible"] = (df["state"] == "COMPLETE") & (df["latency_ms"] <= budget)
    for name, _, other_budget, *_ in identity.get("also", []):
        column = f"latency_ms@{name}"
        if column not in df:
            df[column] = float("nan")
        if not base.empty:
            df[f"speedup@{name}"] = base.iloc[0][column] / df[column]
        if other_budget is not None:
            df["feasible"] &= df[column] <= other_budget
    return df


def device_columns(df: pd.DataFrame) -> list[str]:
    """The other devices' latency columns (``latency_ms@<profile>``), in study order."""
    return [c for c in df.columns if c.startswith("latency_ms@")]


def _method_counts(plan: dict | None) -> str | None:
    """e.g. 'l1:4 sparse_magnitude:2 drop_block:1': what a trial's plan used, in one cell."""
    if not plan:
        return None
    counts: dict[str, int] = {}
    for choice in plan.get("groups", {}).values():
        if choice["method"] != "none" and choice["ratio"] > 0:
            counts[choice["method"]] = counts.get(choice["method"], 0) + 1
    if plan.get("drop_blocks"):
        counts["drop_block"] = len(plan["drop_blocks"])
    return " ".join(f"{m}:{n}" for m, n in sorted(counts.items())) or "none"


def _atomic_frame(df: pd.DataFrame, path: Path) -> None:
    atomic_write_text(path, df.to_csv(index=False))


def write_trials(study, study_dir: Path) -> pd.DataFrame:
    df = trials_frame(study)
    _atomic_frame(df, Path(study_dir) / "trials.csv")
    return df


@dataclass
class SearchResult:
    """A finished (or interrupted) study: its tables, and export of any trial.

    Example:
        >>> result = SearchResult.load("results/fashion-mnist-x86-ort")
        >>> result.front[["trial", "accuracy", "latency_ms"]]
        >>> result.export(trial=7, out="deploy/")
    """

    study_dir: Path
    study: Any
    identity: dict[str, Any]
    trials: pd.DataFrame
    front: pd.DataFrame

    @classmethod
    def load(cls, study_dir: str | Path, storage: str | None = None) -> SearchResult:
        import optuna

        from autoprune.pareto import front_numbers
        from autoprune.study import default_storage

        study_dir = Path(study_dir)
        cfg = study_dir / "config.json"
        if not cfg.is_file():
            raise StudyError(
                f"{study_dir} is not an autoprune results directory (no config.json). "
                "Pass the folder a search wrote, e.g. results/fashion-mnist-x86-ort."
            )
        try:
            identity = json.loads(cfg.read_text())
            identity["study"], identity["latency_budget_ms"]  # noqa: B018 - required keys
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise StudyError(f"{cfg} is damaged ({type(exc).__name__}: {exc}); it cannot be read.") from None
        url = storage or identity.get("storage") or default_storage(study_dir)
        optuna.logging.set_verbosity(optuna.logging.WARNING)
        try:
            study = optuna.load_study(study_name=identity["study"], storage=url)
        except KeyError:
            raise StudyError(f"storage {url!r} has no study {identity['study']!r}.") from None
        trials = trials_frame(study)
        numbers = front_numbers(study) if not trials.empty else []
        front = trials.set_index("trial").loc[numbers].reset_index() if numbers else trials.iloc[0:0]
        return cls(study_dir, study, identity, trials, front)

    @property
    def baseline(self) -> pd.Series | None:
        rows = self.trials[(self.trials["baseline"]) & (self.trials["state"] == "COMPLETE")] if not self.trials.empty else self.trials
        return None if rows.empty else rows.iloc[0]

    @property
    def budget_ms(self) -> float:
        return float(self.identity["latency_budget_ms"])

    def write_all(self) -> None:
        _atomic_frame(self.trials, self.study_dir / "trials.csv")
        _atomic_frame(self.front, self.study_dir / "pareto.csv")
        if not self.trials.empty:
            from autoprune.plots import pareto_plots

            pareto_plots(self)

    def export(self, trial: int, out: str | Path) -> Path:
        """Write a deploy package for ``trial`` into ``out``; see :mod:`autoprune.deploy`."""
        from autoprune.deploy import export_trial

        return export_trial(self, trial, Path(out))
