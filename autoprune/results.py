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

from autoprune import storage as storage_mod
from autoprune._config import atomic_write_text
from autoprune.errors import StudyError
from autoprune.plots import pareto_plots
from autoprune.storage import default_url
from autoprune.trials import TrialRecord

FRONT_COLUMNS = [
    "trial", "accuracy", "accuracy_drop", "latency_ms", "latency_p90_ms", "speedup",
    "size_mb", "macs_ratio", "params", "sparsity", "round_to", "methods",
]


def trials_frame(study, records: list[TrialRecord] | None = None) -> pd.DataFrame:
    """One row per trial: parameters, metrics, latency statistics, state, failure reason."""
    identity = storage_mod.identity(study) or {}
    budget = identity.get("latency_budget_ms", math.inf)
    rows = [_row(r) for r in (records if records is not None else storage_mod.records(study))]
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


def _row(r: TrialRecord) -> dict[str, Any]:
    plan = r.plan or {}
    row: dict[str, Any] = {
        "trial": r.number,
        "state": r.state,
        "baseline": r.baseline,
        "warm_start": r.warm_start,
        "accuracy": r.accuracy,
        "latency_ms": r.latency_ms,
        "latency_p90_ms": r.latency_p90_ms,
        "latency_ci_low_ms": r.latency_ci_low_ms,
        "latency_ci_high_ms": r.latency_ci_high_ms,
        "latency_cv": r.latency_cv,
        "latency_runs": r.latency_runs,
        "latency_noisy": r.latency_noisy,
        "latency_sessions": r.latency_sessions,
        "latency_session_spread": r.latency_session_spread,
        "latency_cached": r.latency_cached,
        "size_mb": r.size_mb,
        "macs": r.macs,
        "params": r.params_count,
        "nonzero_params": r.nonzero_params,
        "onnx_bytes": r.onnx_bytes,
        "gzip_bytes": r.gzip_bytes,
        "methods": _method_counts(r.plan),
        "evaluation": r.evaluation,
        "zero_shot_accuracy": r.zero_shot_accuracy,
        "dropped_blocks": " ".join(plan.get("drop_blocks", [])),
        "parity_max_abs_diff": r.parity_max_abs_diff,
        "round_to": plan.get("round_to"),
        "fail_stage": r.fail_stage.value if r.fail_stage else None,
        "fail_reason": r.fail_reason,
        "duration_s": r.duration_s,
        "load_avg": r.load_avg,
    }
    # what the backend reported (TVM tuning, reuse, compile time), each other device's latency
    row.update({f"build_{k}": v for k, v in r.build.items()})
    row.update({f"{key}@{device}": v for device, figures in r.devices.items() for key, v in figures.items()})
    for stage, secs in (r.stage_s or {}).items():
        row[f"{stage}_s"] = secs
    for name, value in r.params.items():
        if name != "round_to":
            row[f"param:{name}"] = value
    return row


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
    """A finished (or interrupted) study: its trial records and tables.

    Example:
        >>> result = SearchResult.load("results/fashion-mnist-x86-ort")
        >>> result.front[["trial", "accuracy", "latency_ms"]]
    """

    study_dir: Path
    study: Any
    identity: dict[str, Any]
    records: list[TrialRecord]
    trials: pd.DataFrame
    front: pd.DataFrame

    @classmethod
    def load(cls, study_dir: str | Path, storage: str | None = None) -> SearchResult:
        import optuna

        from autoprune.pareto import front_numbers

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
        url = storage or identity.get("storage") or default_url(study_dir)
        optuna.logging.set_verbosity(optuna.logging.WARNING)
        study = storage_mod.load(storage_mod.open_storage(url), identity["study"])
        if study is None:
            raise StudyError(f"storage {storage_mod.without_password(url)!r} has no study {identity['study']!r}.")
        records = storage_mod.records(study)
        trials = trials_frame(study, records)
        numbers = front_numbers(study) if not trials.empty else []
        front = trials.set_index("trial").loc[numbers].reset_index() if numbers else trials.iloc[0:0]
        return cls(study_dir, study, identity, records, trials, front)

    @property
    def baseline(self) -> pd.Series | None:
        rows = self.trials[(self.trials["baseline"]) & (self.trials["state"] == "COMPLETE")] if not self.trials.empty else self.trials
        return None if rows.empty else rows.iloc[0]

    @property
    def budget_ms(self) -> float:
        return float(self.identity["latency_budget_ms"])

    def record(self, trial: int) -> TrialRecord | None:
        return next((r for r in self.records if r.number == trial), None)

    def write_all(self) -> None:
        _atomic_frame(self.trials, self.study_dir / "trials.csv")
        _atomic_frame(self.front, self.study_dir / "pareto.csv")
        if not self.trials.empty:
            pareto_plots(self.trials, self.front, self.baseline, self.budget_ms, self.identity["device"],
                         self.identity["study"], self.study_dir)
