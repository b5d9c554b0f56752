"""A per-device latency predictor fitted on a study's measured candidates.

In the spirit of HALP's latency lookup table, but fitted rather than tabulated: the
features are each group's kept channel fraction (and its square: a conv's cost goes
with the product of its input and output widths), the number of removed blocks and the
MACs ratio; a ridge regression maps them to the measured median latency. Its error is
judged *online*: each trial is predicted from the trials before it only, as it would
be during a search.

Predicted latencies are never reported as measured ones. autoprune measures every
candidate (about 1.6 s of a ~12 s trial on the reference task) and stages recovery on
that measurement, so the model is for analysis and for steering studies by hand; see
``benchmarks/latency_model.py`` for its error on a study.
"""

from __future__ import annotations

import numpy as np
import pandas as pd


def features(study) -> pd.DataFrame:
    """One row per completed trial: the model's inputs and the measured latency."""
    import optuna

    from autoprune.trials import TrialRecord

    rows = []
    for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,)):
        r = TrialRecord.of(t)
        if r.latency_ms is None or r.macs is None:
            continue
        row = {"trial": r.number, "latency_ms": r.latency_ms, "macs": r.macs,
               "dropped": len((r.plan or {}).get("drop_blocks", []))}
        for group, (before, after) in (r.widths or {}).items():
            row[f"keep:{group}"] = after / before
        rows.append(row)
    df = pd.DataFrame(rows)
    if df.empty:
        return df
    keep = [c for c in df if c.startswith("keep:")]
    df[keep] = df[keep].fillna(1.0)
    base = df.loc[df["macs"].idxmax(), "macs"]
    df["macs_ratio"] = df["macs"] / base
    return df.sort_values("trial").reset_index(drop=True)


def _design(df: pd.DataFrame) -> np.ndarray:
    keep = df[[c for c in df if c.startswith("keep:")]].to_numpy()
    return np.column_stack([keep, keep**2, df["dropped"].to_numpy(), df["macs_ratio"].to_numpy()])


def fit(df: pd.DataFrame, alpha: float = 1e-2):
    """A ridge regression of latency on the features (scikit-learn)."""
    from sklearn.linear_model import Ridge

    return Ridge(alpha=alpha).fit(_design(df), df["latency_ms"].to_numpy())


def online_errors(df: pd.DataFrame, warmup: int = 8) -> pd.DataFrame:
    """Predict each trial from the earlier ones only; relative error per trial."""
    out = []
    for i in range(warmup, len(df)):
        model = fit(df.iloc[:i])
        pred = float(model.predict(_design(df.iloc[i : i + 1]))[0])
        meas = float(df["latency_ms"].iloc[i])
        out.append({"trial": int(df["trial"].iloc[i]), "measured_ms": meas, "predicted_ms": pred,
                    "rel_error": (pred - meas) / meas})
    return pd.DataFrame(out)
