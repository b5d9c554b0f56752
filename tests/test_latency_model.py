"""The latency model is fitted on measured trials and judged on trials it has not seen."""

from __future__ import annotations

import numpy as np

from autoprune.latency_model import features, fit, online_errors


def test_online_prediction_of_a_real_study(digits_study):
    df = features(digits_study.study)
    assert len(df) >= 5 and any(c.startswith("keep:") for c in df)
    assert df.loc[df["macs"].idxmax(), "macs_ratio"] == 1.0
    err = online_errors(df, warmup=3)
    assert len(err) == len(df) - 3
    assert np.isfinite(err["rel_error"]).all() and (err["predicted_ms"] != err["measured_ms"]).any()
    # a predicted latency is its own column, never the measured one
    model = fit(df)
    assert model.coef_.shape[0] > 2
